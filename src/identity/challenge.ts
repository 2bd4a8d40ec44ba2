import { ProxyError, type ErrorCode } from '../http/errors.js';

/**
 * Identity failures and their `WWW-Authenticate` challenges (RFC 6750 §3). Messages say what is
 * wrong with a credential (expired, wrong audience, ...) and never quote the credential itself.
 */

/** A quoted-string for an auth-param: printable ASCII only, `"` and `\` escaped. */
export function quoteParam(value: string): string {
  const printable = value.replace(/[^\x20-\x7e]/g, '?');
  return `"${printable.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** `Bearer realm="…"`, optionally with an RFC 6750 error and description. */
export function bearerChallenge(realm: string, error?: 'invalid_token' | 'invalid_request', description?: string): string {
  const parts = [`realm=${quoteParam(realm)}`];
  if (error) parts.push(`error=${quoteParam(error)}`);
  if (description) parts.push(`error_description=${quoteParam(description)}`);
  return `Bearer ${parts.join(', ')}`;
}

/** 401 for a token (or token-derived claim) that cannot be accepted. */
export function invalidToken(
  realm: string,
  message: string,
  opts: { code?: Extract<ErrorCode, 'ERR_TOKEN_INVALID' | 'ERR_TOKEN_EXPIRED' | 'ERR_CLAIM_TYPE' | 'ERR_CERT_BINDING'>; detail?: string; cause?: unknown } = {},
): ProxyError {
  return new ProxyError(opts.code ?? 'ERR_TOKEN_INVALID', message, {
    headers: { 'WWW-Authenticate': bearerChallenge(realm, 'invalid_token', message) },
    detail: opts.detail,
    cause: opts.cause,
  });
}

/** 401 when the request carries no credential at all. */
export function noCredential(realm: string): ProxyError {
  return new ProxyError('ERR_NO_CREDENTIAL', 'Authentication required: present a Bearer token or a CPS card certificate.', {
    headers: { 'WWW-Authenticate': bearerChallenge(realm) },
  });
}

/** 401 for a client certificate that cannot be accepted. */
export function invalidCertificate(realm: string, message: string, detail?: string): ProxyError {
  return new ProxyError('ERR_CERT_INVALID', message, {
    headers: { 'WWW-Authenticate': bearerChallenge(realm) },
    detail,
  });
}
