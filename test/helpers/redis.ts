import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A real `redis-server` for the tests that need one (Debian package `redis-server`; `.ci/run`
 * installs it), on a free port of 127.0.0.1, without persistence: never the machine's own Redis.
 */
export interface RedisServer {
  port: number;
  url: string;
  /** `kill -9`: the connections drop at once, as when the machine dies. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: no persistence). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** Whether `redis-server` can be run here; the suites that need it skip otherwise (CI requires it). */
export function redisServerInstalled(): boolean {
  const r = spawnSync('redis-server', ['--version'], { stdio: 'ignore' });
  if (r.error === undefined && r.status === 0) return true;
  if (process.env.CAREGATE_REQUIRE_REDIS === '1') throw new Error('redis-server is required (CAREGATE_REQUIRE_REDIS=1): apt-get install -y redis-server');
  return false;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once the server answers PING, polling every 20 ms (10 s at most). */
async function answers(port: number, password?: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      let out = '';
      sock.setTimeout(500, () => sock.destroy());
      sock.on('connect', () => sock.write(password ? `AUTH ${password}\r\nPING\r\n` : 'PING\r\n'));
      sock.on('data', (d) => {
        out += d.toString();
        if (out.includes('+PONG')) {
          sock.end();
          resolve(true);
        }
      });
      sock.on('error', () => resolve(false));
      sock.on('close', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server did not answer on port ${port}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function startRedis(opts: { password?: string } = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'caregate-redis-'));
  let child: ChildProcess | undefined;
  const launch = async () => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning'];
    if (opts.password) args.push('--requirepass', opts.password);
    child = spawn('redis-server', args, { stdio: 'ignore' });
    await answers(port, opts.password);
  };
  const kill = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  };
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    restart: launch,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `probe` every 25 ms until it returns true; fails after `ms` (the bound the behaviour promises). */
export async function within(ms: number, probe: () => Promise<boolean>, what: string): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await probe()) return Date.now() - start;
    if (Date.now() - start > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
