import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local webhook receiver: records every POSTed JSON body (with its headers), and answers 500 to
 * the first `failFirst` deliveries (to exercise retries). `waitFor` polls what arrived, with a
 * deadline, never a fixed sleep.
 */
export interface WebhookReceiver {
  url: string;
  received: { body: Record<string, unknown>; headers: http.IncomingHttpHeaders }[];
  /** Answers 500 to the next `n` deliveries. */
  fail(n: number): void;
  waitFor<T = Record<string, unknown>>(pred: (body: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<T>;
  close(): Promise<void>;
}

export async function startWebhookReceiver(port = 0): Promise<WebhookReceiver> {
  const received: WebhookReceiver['received'] = [];
  let failing = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (failing > 0) {
        failing--;
        res.writeHead(500).end();
        return;
      }
      received.push({ body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>, headers: req.headers });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/alerts`;
  return {
    url,
    received,
    fail(n) {
      failing = n;
    },
    async waitFor<T>(pred: (body: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = received.find((r) => pred(r.body));
        if (hit) return hit.body as T;
        if (Date.now() > deadline) throw new Error(`no matching alert within ${timeoutMs} ms; received: ${JSON.stringify(received.map((r) => r.body.rule))}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
