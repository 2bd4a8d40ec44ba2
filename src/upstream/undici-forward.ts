import { readFileSync } from 'node:fs';
import zlib from 'node:zlib';
import { Pool, errors as undiciErrors } from 'undici';
import type { Dispatcher } from 'undici';
import { ProxyError } from '../http/errors.js';
import type { UpstreamProxyOptions, UpstreamRequest, UpstreamResponse } from './proxy.js';

/**
 * Forwards the rebuilt upstream request over an undici connection pool and hands the whole answer
 * back to the pipeline (nothing reaches the client before the response stage judged it).
 *
 * Why undici rather than http-proxy-middleware on this path: caregate never streams an upstream
 * answer to the client (every body is parsed and judged), so what a proxy library adds (piping,
 * header copying, its own error pages) is work to undo; undici's pool costs less CPU per request
 * than node:http's agent with http-proxy on top (measured in docs/BENCHMARKS.md, "upstream
 * client"). `upstream.client: http-proxy` keeps the http-proxy-middleware path.
 */
export function createUndiciForwarder(opts: UpstreamProxyOptions) {
  const target = new URL(opts.target);
  const basePath = target.pathname.replace(/\/+$/, '');
  const pool = new Pool(target.origin, {
    connections: opts.maxSockets,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: opts.timeoutMs,
    bodyTimeout: opts.timeoutMs,
    ...(opts.tls
      ? {
          connect: {
            cert: readFileSync(opts.tls.certFile),
            key: readFileSync(opts.tls.keyFile),
            ...(opts.tls.caFile ? { ca: readFileSync(opts.tls.caFile) } : {}),
          },
        }
      : {}),
  });

  return {
    async forward(upstream: UpstreamRequest): Promise<UpstreamResponse> {
      const started = performance.now();
      let res: Dispatcher.ResponseData;
      try {
        res = await pool.request({
          method: upstream.method as Dispatcher.HttpMethod,
          path: basePath + upstream.path,
          headers: { ...upstream.headers, host: target.host },
          body: upstream.body && upstream.body.length > 0 ? upstream.body : null,
        });
      } catch (err) {
        throw upstreamError(err);
      }
      const body = await readAll(res, opts.maxResponseBytes);
      return { status: res.statusCode, headers: res.headers as UpstreamResponse['headers'], body, durationMs: performance.now() - started };
    },
    async close(): Promise<void> {
      await pool.close();
    },
  };
}

/** The whole body, decompressed (gzip, deflate, br), refusing more than `max` bytes. */
function readAll(res: Dispatcher.ResponseData, max: number): Promise<Buffer> {
  const encoding = String(res.headers['content-encoding'] ?? 'identity').toLowerCase().trim();
  let stream: NodeJS.ReadableStream = res.body;
  if (encoding === 'gzip' || encoding === 'x-gzip') stream = res.body.pipe(zlib.createGunzip());
  else if (encoding === 'deflate') stream = res.body.pipe(zlib.createInflate());
  else if (encoding === 'br') stream = res.body.pipe(zlib.createBrotliDecompress());
  else if (encoding !== 'identity' && encoding !== '') {
    res.body.destroy();
    return Promise.reject(
      new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server answered in an encoding caregate cannot read.', { expose: true, detail: 'unknown content-encoding' }),
    );
  }
  // Plain data events: the async iterator of a stream costs more per answer than the copy itself.
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const fail = (err: ProxyError) => {
      if (done) return;
      done = true;
      res.body.destroy();
      reject(err);
    };
    stream.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > max) {
        fail(new ProxyError('ERR_UPSTREAM_TOO_LARGE', 'The FHIR server answer is larger than caregate accepts.', { expose: true, detail: `upstream body over ${max} bytes` }));
        return;
      }
      chunks.push(c);
    });
    stream.on('end', () => {
      if (done) return;
      done = true;
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    });
    // pipe() does not pass the source's errors on: a body that fails under a decompressor fails here too.
    if (stream !== res.body) res.body.on('error', () => fail(new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server answer could not be read.', { expose: true, detail: 'upstream body stream error' })));
    stream.on('error', (err: unknown) =>
      fail(
        err instanceof undiciErrors.BodyTimeoutError
          ? timeout()
          : new ProxyError('ERR_UPSTREAM_BAD_RESPONSE', 'The FHIR server answer could not be read.', { expose: true, detail: 'upstream body stream error' }),
      ),
    );
  });
}

function timeout(): ProxyError {
  return new ProxyError('ERR_UPSTREAM_TIMEOUT', 'The FHIR server did not answer in time.', { expose: true, detail: 'upstream timeout' });
}

function upstreamError(err: unknown): ProxyError {
  if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError || err instanceof undiciErrors.ConnectTimeoutError) return timeout();
  const code = (err as { code?: string })?.code ?? (err as Error)?.name ?? 'unknown';
  return new ProxyError('ERR_UPSTREAM_UNREACHABLE', 'The FHIR server could not be reached.', { expose: true, detail: `upstream error ${code}` });
}
