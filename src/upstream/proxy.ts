import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse, ClientRequest } from 'node:http';
import zlib from 'node:zlib';
import { createProxyMiddleware } from 'http-proxy-middleware';
import { ProxyError } from '../http/errors.js';

/** The upstream request, rebuilt by the pipeline from the canonical interaction. */
export interface UpstreamRequest {
  method: string;
  /** Path and query relative to the upstream base, starting with `/` (e.g. `/Observation?patient=a`). */
  path: string;
  /** Complete header set sent upstream: nothing from the client passes unless the pipeline put it here. */
  headers: Record<string, string>;
  body: Buffer | undefined;
}

export interface UpstreamResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The decoded (decompressed) body. */
  body: Buffer;
  /** Milliseconds from sending to the last byte. */
  durationMs: number;
}

export interface UpstreamProxyOptions {
  target: string;
  timeoutMs: number;
  maxResponseBytes: number;
  maxSockets: number;
  tls?: { certFile: string; keyFile: string; caFile?: string | undefined } | undefined;
}

export type ProxyCallback = (err: ProxyError | undefined, res: UpstreamResponse | undefined) => void;

interface Pending {
  upstream: UpstreamRequest;
  done: ProxyCallback;
  started: number;
  timedOut: boolean;
  settled: boolean;
}

const pending = new WeakMap<IncomingMessage, Pending>();

/**
 * Forwards requests with http-proxy-middleware over a pooled keep-alive agent (without an agent,
 * http-proxy opens a connection per request and halves throughput) and hands the whole upstream
 * answer back to the pipeline: nothing reaches the client before the response stage judged it.
 * Default plugins are ejected: their error page would bypass our OperationOutcome serializer.
 */
export function createUpstreamProxy(opts: UpstreamProxyOptions) {
  const targetUrl = new URL(opts.target);
  const isHttps = targetUrl.protocol === 'https:';
  const agent = isHttps
    ? new https.Agent({
        keepAlive: true,
        maxSockets: opts.maxSockets,
        ...(opts.tls
          ? {
              cert: readFileSync(opts.tls.certFile),
              key: readFileSync(opts.tls.keyFile),
              ...(opts.tls.caFile ? { ca: readFileSync(opts.tls.caFile) } : {}),
            }
          : {}),
      })
    : new http.Agent({ keepAlive: true, maxSockets: opts.maxSockets });

  const middleware = createProxyMiddleware<IncomingMessage, ServerResponse>({
    target: opts.target,
    agent,
    changeOrigin: true,
    selfHandleResponse: true,
    xfwd: false,
    ejectPlugins: true,
    followRedirects: false,
    plugins: [
      (server) => {
        server.on('proxyReq', (proxyReq: ClientRequest, req: IncomingMessage) => {
          const p = pending.get(req);
          if (!p) {
            proxyReq.destroy(new Error('no pending upstream request'));
            return;
          }
          // The header set is rebuilt from the decision: drop everything http-proxy copied.
          for (const name of proxyReq.getHeaderNames()) proxyReq.removeHeader(name);
          for (const [k, v] of Object.entries(p.upstream.headers)) proxyReq.setHeader(k, v);
          proxyReq.setHeader('host', targetUrl.host);
          proxyReq.setTimeout(opts.timeoutMs, () => {
            p.timedOut = true;
            proxyReq.destroy(new Error('upstream timeout'));
          });
          if (p.upstream.body && p.upstream.body.length > 0) {
            proxyReq.setHeader('content-length', String(p.upstream.body.length));
            proxyReq.end(p.upstream.body);
          } else {
            proxyReq.setHeader('content-length', '0');
            proxyReq.end();
          }
        });
        server.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage) => {
          const p = pending.get(req);
          if (!p) return;
          collect(proxyRes, opts.maxResponseBytes, (err, body) => {
            if (err) return settle(req, p, err, undefined);
            settle(req, p, undefined, {
              status: proxyRes.statusCode ?? 502,
              headers: proxyRes.headers,
              body: body!,
              durationMs: performance.now() - p.started,
            });
          });
        });
        server.on('error', (err: NodeJS.ErrnoException, req: IncomingMessage) => {
          const p = pending.get(req);
          if (!p) return;
          settle(req, p, upstreamError(err, p.timedOut), undefined);
        });
      },
    ],
  });

  function settle(req: IncomingMessage, p: Pending, err: ProxyError | undefined, res: UpstreamResponse | undefined) {
    if (p.settled) return;
    p.settled = true;
    pending.delete(req);
    p.done(err, res);
  }

  return {
    agent,
    /** Sends `upstream` for the client request `req`; `res` is only used by http-proxy's plumbing, never written here. */
    forward(req: IncomingMessage, res: ServerResponse, upstream: UpstreamRequest): Promise<UpstreamResponse> {
      return new Promise((resolve, reject) => {
        const p: Pending = {
          upstream,
          started: performance.now(),
          timedOut: false,
          settled: false,
          done: (err, r) => (err ? reject(err) : resolve(r!)),
        };
        pending.set(req, p);
        // http-proxy builds the outgoing request line from req.method/req.url: set them to the canonical form.
        req.method = upstream.method;
        req.url = upstream.path;
        void middleware(req, res, (err?: unknown) => {
          settle(req, p, upstreamError(err as NodeJS.ErrnoException, false), undefined);
        });
      });
    },
    close() {
      agent.destroy();
    },
  };
}

function upstreamError(err: NodeJS.ErrnoException | undefined, timedOut: boolean): ProxyError {
  if (timedOut || err?.code === 'ETIMEDOUT') {
    return new ProxyError('ERR_UPSTREAM_TIMEOUT', 'The FHIR server did not answer in time.', {
      expose: true,
      detail: 'upstream timeout',
    });
  }
  return new ProxyError('ERR_UPSTREAM_UNREACHABLE', 'The FHIR server could not be reached.', {
    expose: true,
    detail: `upstream error ${err?.code ?? err?.message ?? 'unknown'}`,
  });
}

/** Buffers an upstream body, decompressing gzip/deflate/br, refusing more than `max` bytes. */
function collect(res: IncomingMessage, max: number, cb: (err: ProxyError | undefined, body?: Buffer) => void): void {
  const encoding = String(res.headers['content-encoding'] ?? 'identity').toLowerCase().trim();
  let stream: NodeJS.ReadableStream = res;
  if (encoding === 'gzip' || encoding === 'x-gzip') stream = res.pipe(zlib.createGunzip());
  else if (encoding === 'deflate') stream = res.pipe(zlib.createInflate());
  else if (encoding === 'br') stream = res.pipe(zlib.createBrotliDecompress());
  else if (encoding !== 'identity' && encoding !== '') {
    res.resume();
    cb(new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server answered in an encoding caregate cannot read.', { expose: true, detail: 'unknown content-encoding' }));
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let finished = false;
  const finish = (err: ProxyError | undefined) => {
    if (finished) return;
    finished = true;
    if (err) {
      res.destroy();
      cb(err);
    } else cb(undefined, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
  };
  stream.on('data', (c: Buffer) => {
    size += c.length;
    if (size > max) {
      finish(
        new ProxyError('ERR_UPSTREAM_TOO_LARGE', 'The FHIR server answer is larger than caregate accepts.', {
          expose: true,
          detail: `upstream body over ${max} bytes`,
        }),
      );
      return;
    }
    chunks.push(c);
  });
  stream.on('end', () => finish(undefined));
  stream.on('error', () =>
    finish(new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server answer could not be read.', { expose: true, detail: 'upstream body stream error' })),
  );
  res.on('aborted', () =>
    finish(new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server closed the connection mid-answer.', { expose: true, detail: 'upstream aborted' })),
  );
}
