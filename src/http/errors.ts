/**
 * The one error family for request failures. Every refusal or failure the proxy produces is a
 * `ProxyError`; `http/outcome.ts` is the only place that turns one into an HTTP answer.
 *
 * `expose=false` errors reach the client as a generic message: their details go to logs
 * (without PHI) and to the AuditEvent only.
 */
export const ErrorCodes = {
  // request shape
  ERR_BAD_REQUEST: 400,
  ERR_UNSUPPORTED: 400,
  ERR_DUPLICATE_KEYS: 400,
  ERR_TWO_CREDENTIALS: 400,
  ERR_TOKEN_IN_QUERY: 400,
  ERR_NOT_ACCEPTABLE: 406,
  ERR_UNSUPPORTED_MEDIA: 415,
  ERR_METHOD_NOT_ALLOWED: 405,
  ERR_REQUEST_TOO_LARGE: 413,
  // identity
  ERR_NO_CREDENTIAL: 401,
  ERR_TOKEN_INVALID: 401,
  ERR_TOKEN_EXPIRED: 401,
  ERR_CLAIM_TYPE: 401,
  ERR_CERT_INVALID: 401,
  ERR_CERT_BINDING: 401,
  ERR_UNKNOWN_PRACTITIONER: 403,
  ERR_AMBIGUOUS_PRACTITIONER: 403,
  ERR_FHIRUSER_MISMATCH: 403,
  ERR_CARD_REQUIRED: 403,
  // authorisation
  ERR_FORBIDDEN: 403,
  ERR_NOT_FOUND: 404,
  ERR_SCOPE: 403,
  ERR_PAGE_LINK: 403,
  // upstream and internal
  ERR_UPSTREAM_UNREACHABLE: 502,
  ERR_UPSTREAM_BAD_RESPONSE: 502,
  ERR_UPSTREAM_TOO_LARGE: 502,
  ERR_UPSTREAM_TIMEOUT: 504,
  ERR_LOOKUP_FAILED: 503,
  ERR_AUDIT_UNAVAILABLE: 503,
  /** The state several instances share (state.mode: redis) is needed and unreachable. */
  ERR_SHARED_STATE_UNAVAILABLE: 503,
  ERR_INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** FHIR `OperationOutcome.issue.code` values we emit. */
export type IssueType =
  | 'invalid'
  | 'structure'
  | 'required'
  | 'value'
  | 'security'
  | 'login'
  | 'unknown'
  | 'expired'
  | 'forbidden'
  | 'suppressed'
  | 'processing'
  | 'not-supported'
  | 'duplicate'
  | 'not-found'
  | 'too-costly'
  | 'business-rule'
  | 'conflict'
  | 'transient'
  | 'timeout'
  | 'exception'
  | 'throttled';

export interface ProxyErrorOptions {
  /** FHIR issue type; defaults from the status. */
  issue?: IssueType;
  /** Whether `message` may be shown to the client. Defaults to `status < 500`. */
  expose?: boolean;
  /** Extra response headers (e.g. `WWW-Authenticate`). */
  headers?: Record<string, string>;
  /** Detail for logs only. Must not contain PHI. */
  detail?: string;
  /** Optional diagnostics (shown only if exposed). Must not contain PHI. */
  diagnostics?: string;
  cause?: unknown;
}

export class ProxyError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly issue: IssueType;
  readonly expose: boolean;
  readonly headers: Record<string, string>;
  readonly detail: string | undefined;
  readonly diagnostics: string | undefined;

  constructor(code: ErrorCode, message: string, opts: ProxyErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ProxyError';
    this.code = code;
    this.status = ErrorCodes[code];
    this.issue = opts.issue ?? defaultIssue(this.status);
    this.expose = opts.expose ?? this.status < 500;
    this.headers = opts.headers ?? {};
    this.detail = opts.detail;
    this.diagnostics = opts.diagnostics;
  }
}

function defaultIssue(status: number): IssueType {
  switch (status) {
    case 400:
      return 'invalid';
    case 401:
      return 'login';
    case 403:
      return 'forbidden';
    case 404:
      return 'not-found';
    case 405:
    case 406:
    case 415:
      return 'not-supported';
    case 413:
      return 'too-costly';
    case 503:
      return 'transient';
    case 504:
      return 'timeout';
    default:
      return 'exception';
  }
}

/**
 * The one answer for a resource that is missing, withheld, or refused as if missing: every such
 * answer must be identical, whatever the reason (threats.md, "Existence oracles"). `detail` goes
 * to logs and the AuditEvent only.
 */
export function notFound(detail?: string): ProxyError {
  return new ProxyError('ERR_NOT_FOUND', 'Resource not found.', detail === undefined ? {} : { detail });
}
