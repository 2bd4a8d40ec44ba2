import http from 'node:http';
import { gzipSync } from 'node:zlib';

/**
 * A fault-injecting front for a real FHIR engine: every request is relayed to `target`, except
 * reads of `Observation/fault-<kind>`, which answer the fault. Only for fault tests: the behaviour
 * under test is caregate's, the data still comes from the real engine.
 */
export async function startFaultUpstream(
  target: string,
): Promise<{
  url: string;
  close(): Promise<void>;
  failWhen(pattern: RegExp | undefined): void;
  rewriteWhen(pattern: RegExp | undefined, rewrite?: (body: string) => string): void;
  bodies: string[];
  urls: string[];
}> {
  const t = new URL(target);
  let failing: RegExp | undefined;
  let rewriting: { pattern: RegExp; rewrite: (body: string) => string } | undefined;
  const bodies: string[] = [];
  const urls: string[] = [];
  const server = http.createServer((req, res) => {
    urls.push(req.url ?? '');
    if (failing?.test(req.url ?? '')) {
      res.writeHead(500, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] }));
      return;
    }
    const m = /\/Observation\/fault-([a-z0-9-]+)$/.exec(req.url ?? '');
    if (m) {
      switch (m[1]) {
        case 'timeout':
          return; // never answers
        case 'error500':
          res.writeHead(500, { 'content-type': 'application/fhir+json' });
          res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: 'NullPointerException at Patient/secret-123' }] }));
          return;
        case 'gzip': {
          res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-encoding': 'gzip' });
          res.end(gzipSync(JSON.stringify({ resourceType: 'Observation', id: 'fault-gzip', status: 'final', code: { text: 'Gzipped' }, subject: { reference: 'Patient/pat-dupont' } })));
          return;
        }
        case 'html':
          res.writeHead(200, { 'content-type': 'text/html' });
          res.end('<html><body>Patient Jean Dupont, born 1950</body></html>');
          return;
        case 'notjson':
          res.writeHead(200, { 'content-type': 'application/fhir+json' });
          res.end('{"resourceType": "Observation", "subject": ');
          return;
        case 'dupkey':
          // Two `subject` keys: JSON.parse keeps the last (the clinician's patient), a client may read the first.
          res.writeHead(200, { 'content-type': 'application/fhir+json' });
          res.end('{"resourceType":"Observation","id":"fault-dupkey","status":"final","code":{"text":"k"},"subject":{"reference":"Patient/pat-outside"},"subject":{"reference":"Patient/pat-dupont"}}');
          return;
        case 'badutf8':
          res.writeHead(200, { 'content-type': 'application/fhir+json' });
          res.end(Buffer.concat([Buffer.from('{"resourceType":"Organization","id":"fault-badutf8","name":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]));
          return;
        case 'deep':
          res.writeHead(200, { 'content-type': 'application/fhir+json' });
          res.end(`{"resourceType":"Organization","id":"fault-deep","extension":${'['.repeat(5000)}${']'.repeat(5000)}}`);
          return;
        case 'huge': {
          res.writeHead(200, { 'content-type': 'application/fhir+json' });
          res.end(JSON.stringify({ resourceType: 'Organization', id: 'fault-huge', name: 'x'.repeat(3 * 1024 * 1024) }));
          return;
        }
      }
    }
    const rw = rewriting?.pattern.test(req.url ?? '') ? rewriting : undefined;
    const up = http.request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } },
      (r) => {
        if (!rw) {
          res.writeHead(r.statusCode ?? 502, r.headers);
          r.pipe(res);
          return;
        }
        const parts: Buffer[] = [];
        r.on('data', (c: Buffer) => parts.push(c));
        r.on('end', () => {
          const out = Buffer.from(rw.rewrite(Buffer.concat(parts).toString('utf8')));
          const headers = { ...r.headers, 'content-length': String(out.length) };
          delete headers['transfer-encoding'];
          res.writeHead(r.statusCode ?? 502, headers);
          res.end(out);
        });
      },
    );
    up.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (chunks.length) bodies.push(Buffer.concat(chunks).toString('utf8'));
      up.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}${t.pathname}`,
    /** Request bodies relayed, in order (for tests that check what caregate sent). */
    bodies,
    /** Request paths and queries received, in order. */
    urls,
    /** Answers of requests whose path matches are passed through `rewrite` (text in, text out) until called again with undefined. */
    rewriteWhen(pattern: RegExp | undefined, rewrite?: (body: string) => string) {
      rewriting = pattern && rewrite ? { pattern, rewrite } : undefined;
    },
    /** Requests whose path matches answer 500 until called again with undefined. */
    failWhen(pattern) {
      failing = pattern;
    },
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
