import type { IncomingMessage } from 'node:http';
import { ProxyError } from './errors.js';

/**
 * Reads a request body into memory up to `max` bytes. The pipeline needs the whole body: it is
 * parsed once (strictly), judged, and the upstream body is rebuilt from what was judged.
 */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) {
    req.resume();
    return Promise.reject(tooLarge(max));
  }
  if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'DELETE') {
    if (declared === undefined && req.headers['transfer-encoding'] === undefined) return Promise.resolve(undefined);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > max) {
        failed = true;
        req.resume();
        reject(tooLarge(max));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!failed) resolve(size === 0 ? undefined : Buffer.concat(chunks, size));
    });
    req.on('error', (err) => {
      if (!failed) reject(new ProxyError('ERR_BAD_REQUEST', 'The request body could not be read.', { cause: err }));
    });
  });
}

function tooLarge(max: number): ProxyError {
  return new ProxyError('ERR_REQUEST_TOO_LARGE', `The request body is larger than the ${max} bytes caregate accepts.`, {
    issue: 'too-costly',
  });
}
