import http from 'node:http';
import express from 'express';
import { createProxyMiddleware } from 'http-proxy-middleware';

/**
 * The bare passthrough caregate is measured against: express + http-proxy-middleware with the same
 * pooled keep-alive agent, no identity, no policy, no filtering. What caregate costs is the
 * difference between the two.
 */
export function startPassthrough(target: string, port = 0): Promise<{ url: string; close(): Promise<void> }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
  const app = express();
  app.disable('x-powered-by');
  app.use('/fhir', createProxyMiddleware({ target, agent, changeOrigin: true }));
  return new Promise((resolve) => {
    const server = app.listen(port, '127.0.0.1', () => {
      const addr = server.address() as { port: number };
      resolve({
        url: `http://127.0.0.1:${addr.port}/fhir`,
        close: () =>
          new Promise((r) => {
            agent.destroy();
            server.close(() => r());
            server.closeAllConnections();
          }),
      });
    });
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const target = process.argv[2];
  const port = Number(process.argv[3] ?? 0);
  if (!target) {
    console.error('usage: passthrough.js <upstream base url> [port]');
    process.exit(2);
  }
  const s = await startPassthrough(target, port);
  console.log(JSON.stringify({ ready: true, url: s.url }));
}
