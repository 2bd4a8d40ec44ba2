/**
 * The refusals of request classification: the {@link ProxyError}s that `classify` and its helpers
 * (path, headers, body) throw, built in one place so that the same cause gets the same code.
 */

import { ProxyError } from '../http/errors.js';

/** 400 ERR_BAD_REQUEST: the request is malformed or ambiguous. */
export function bad(message: string): ProxyError {
  return new ProxyError('ERR_BAD_REQUEST', message, { issue: 'invalid' });
}

/** 400 ERR_BAD_REQUEST: the path is no FHIR interaction caregate accepts. */
export function notFhirPath(): ProxyError {
  return new ProxyError('ERR_BAD_REQUEST', 'The path is not a FHIR interaction caregate accepts.', { issue: 'not-supported' });
}

/** 405 ERR_METHOD_NOT_ALLOWED; the method is echoed only when it looks like one. */
export function methodNotAllowed(method: string): ProxyError {
  const safe = /^[A-Z]{1,16}$/.test(method) ? method : 'This method';
  return new ProxyError('ERR_METHOD_NOT_ALLOWED', `${safe} is not allowed here.`, { issue: 'not-supported' });
}

/** 415 ERR_UNSUPPORTED_MEDIA: a body caregate does not read. */
export function unsupportedMedia(message: string): ProxyError {
  return new ProxyError('ERR_UNSUPPORTED_MEDIA', message, { issue: 'not-supported' });
}

/** 406 ERR_NOT_ACCEPTABLE: the client asked for a format other than JSON or XML. */
export function notAcceptable(): ProxyError {
  return new ProxyError('ERR_NOT_ACCEPTABLE', 'caregate answers in FHIR JSON or XML only.', { issue: 'not-supported' });
}
