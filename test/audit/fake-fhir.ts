import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';

/**
 * A tiny FHIR endpoint for fault injection: it accepts transaction Bundles of `PUT AuditEvent/<id>`
 * entries and stores them by id (as a FHIR server does with update-as-create).
 */
export interface FakeAuditServer {
  baseUrl: string;
  /** Stored events by id. */
  store: Map<string, AuditEvent>;
  /** PUTs received per id (more than 1 means a retry rewrote it). */
  puts: Map<string, number>;
  transactions: number;
  /**
   * ok: store and answer; down: answer 503 without storing; drop: store, then cut the connection
   * (the answer is lost); reject: 400 without storing.
   */
  mode: 'ok' | 'down' | 'drop' | 'reject';
  /** Rejects (400) transactions with more entries than this, like medplum's 50-update limit. */
  maxEntries: number;
  /** Transactions rejected for their size. */
  tooLarge: number;
  headersSeen: Record<string, string | string[] | undefined>[];
  close(): Promise<void>;
}

export async function startFakeAuditServer(): Promise<FakeAuditServer> {
  const state: Omit<FakeAuditServer, 'baseUrl' | 'close'> = {
    store: new Map(),
    puts: new Map(),
    transactions: 0,
    mode: 'ok',
    maxEntries: Infinity,
    tooLarge: 0,
    headersSeen: [],
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      state.headersSeen.push(req.headers);
      if (req.method !== 'POST' || req.url !== '/fhir/') {
        res.writeHead(404).end();
        return;
      }
      if (state.mode === 'down') {
        res.writeHead(503, { 'content-type': 'application/fhir+json' }).end('{"resourceType":"OperationOutcome"}');
        return;
      }
      if (state.mode === 'reject') {
        res.writeHead(400, { 'content-type': 'application/fhir+json' }).end('{"resourceType":"OperationOutcome"}');
        return;
      }
      const bundle = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Bundle;
      if (bundle.type !== 'transaction') {
        res.writeHead(400).end();
        return;
      }
      if ((bundle.entry?.length ?? 0) > state.maxEntries) {
        state.tooLarge++;
        res.writeHead(400, { 'content-type': 'application/fhir+json' }).end('{"resourceType":"OperationOutcome"}');
        return;
      }
      state.transactions++;
      const response: Bundle = { resourceType: 'Bundle', type: 'transaction-response', entry: [] };
      for (const e of bundle.entry ?? []) {
        const id = /^AuditEvent\/([^/]+)$/.exec(e.request?.url ?? '')?.[1];
        if (e.request?.method !== 'PUT' || !id || e.resource?.id !== id) {
          res.writeHead(400).end();
          return;
        }
        const existed = state.store.has(id);
        state.store.set(id, e.resource as AuditEvent);
        state.puts.set(id, (state.puts.get(id) ?? 0) + 1);
        response.entry!.push({ response: { status: existed ? '200 OK' : '201 Created', location: `AuditEvent/${id}/_history/1` } });
      }
      if (state.mode === 'drop') {
        res.socket?.destroy();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/fhir+json' }).end(JSON.stringify(response));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    baseUrl: `http://127.0.0.1:${port}/fhir`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  }) as FakeAuditServer;
}
