import type { ServerResponse } from 'node:http';
import zlib from 'node:zlib';
import { promisify } from 'node:util';

const gzip = promisify(zlib.gzip);
/** Below this size compression costs more than it saves. */
const COMPRESS_MIN_BYTES = 1024;

export interface Answer {
  status: number;
  headers: Record<string, string>;
  /**
   * Serialized body (JSON or XML text), or undefined for bodyless answers. Text is written to the
   * socket as is, with the headers, without a Buffer copy of it.
   */
  body: Buffer | string | undefined;
  contentType: string | undefined;
}

/**
 * Writes an answer. Bodies are compressed with gzip when the client accepts it (the upstream is
 * always asked for identity encoding, so compression is ours to decide).
 */
export async function sendAnswer(
  res: ServerResponse,
  answer: Answer,
  opts: { acceptEncoding: string | undefined; compress: boolean; head: boolean },
): Promise<void> {
  if (res.headersSent || res.destroyed) return;
  res.statusCode = answer.status;
  for (const [k, v] of Object.entries(answer.headers)) res.setHeader(k, v);
  res.setHeader('cache-control', 'no-store');
  res.setHeader('x-content-type-options', 'nosniff');
  let body = answer.body;
  let length = body === undefined ? 0 : typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.length;
  if (body && answer.contentType) {
    res.setHeader('content-type', answer.contentType);
    if (opts.compress && length >= COMPRESS_MIN_BYTES && acceptsGzip(opts.acceptEncoding)) {
      body = await gzip(body, { level: 5 });
      length = body.length;
      res.setHeader('content-encoding', 'gzip');
    }
    res.setHeader('vary', 'Accept, Accept-Encoding');
  }
  res.setHeader('content-length', String(length));
  if (opts.head || !body || answer.status === 204 || answer.status === 304) res.end();
  else res.end(body);
}

function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  for (const part of header.split(',')) {
    const [coding, ...params] = part.trim().split(';');
    if (coding?.trim().toLowerCase() !== 'gzip' && coding?.trim() !== '*') continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    if (q && Number(q.slice(2)) === 0) return false;
    return true;
  }
  return false;
}
