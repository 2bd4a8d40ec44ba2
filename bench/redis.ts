import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { Redis } from 'ioredis';

/**
 * A redis-server for the `state: redis` caregate of the benchmark, on a free local port, without
 * persistence; undefined when `redis-server` is not installed (that measure is then skipped).
 */
export interface BenchRedis {
  url: string;
  child: ChildProcess;
  /** Commands Redis has processed so far (INFO stats): what the measured requests cost it. */
  commands(): Promise<number>;
  stop(): void;
}

export async function startBenchRedis(): Promise<BenchRedis | undefined> {
  if (spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status !== 0) return undefined;
  const port = await new Promise<number>((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' });
  let client: Redis | undefined;
  for (let attempt = 0; !client; attempt++) {
    // The server is stopped with the others before the audit measure: no reconnection afterwards.
    const c = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    c.on('error', () => undefined);
    try {
      await c.connect();
      await c.ping();
      client = c;
    } catch (err) {
      c.disconnect();
      if (attempt > 200) {
        child.kill('SIGKILL');
        throw err;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const ready = client;
  return {
    url: `redis://127.0.0.1:${port}`,
    child,
    async commands() {
      const info = await ready.info('stats');
      return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? NaN);
    },
    stop() {
      ready.disconnect();
      child.kill('SIGTERM');
    },
  };
}
