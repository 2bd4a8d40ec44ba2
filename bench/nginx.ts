import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

/**
 * An nginx passthrough of the upstream, "nginx in front of HAPI", to compare caregate with what a
 * hospital would otherwise deploy: one worker (the proxies being compared each have one thread
 * for requests), upstream keep-alive, no logging, no buffering to disk. Only for the benchmark:
 * undefined, and the measure skipped, when `nginx` is not installed (`apt-get install nginx-light`).
 */
export interface BenchNginx {
  url: string;
  /** The master process; its worker is its child (`cpuSeconds` counts both). */
  child: ChildProcess;
  version: string;
  stop(): void;
}

function nginxBinary(): { bin: string; version: string } | undefined {
  for (const bin of ['nginx', '/usr/sbin/nginx']) {
    const r = spawnSync(bin, ['-v'], { encoding: 'utf8' });
    if (r.status === 0) return { bin, version: (r.stderr || r.stdout).trim().replace(/^nginx version: /, '') };
  }
  return undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

export async function startBenchNginx(upstreamUrl: string, dir: string): Promise<BenchNginx | undefined> {
  const found = nginxBinary();
  if (!found) return undefined;
  const up = new URL(upstreamUrl);
  const port = await freePort();
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'logs/error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${join(dir, 'body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  upstream fhir { server ${up.host}; keepalive 128; }
  server {
    listen 127.0.0.1:${port};
    location /fhir/ {
      proxy_pass http://fhir;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffers 64 16k;
      proxy_max_temp_file_size 0;
    }
  }
}
`,
  );
  const child = spawn(found.bin, ['-p', dir, '-c', conf], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}${up.pathname.replace(/\/+$/, '')}`;
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await fetch(`${url}/metadata`);
      await r.arrayBuffer();
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (attempt > 100 || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`nginx did not start (see ${join(dir, 'logs/error.log')})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, child, version: found.version, stop: () => child.kill('SIGQUIT') };
}
