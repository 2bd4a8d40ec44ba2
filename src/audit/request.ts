import type { ErrorCode } from '../http/errors.js';
import type { Decision } from '../policy/decision.js';
import type { Evidence } from '../relate/types.js';

/*
 * What the HTTP layer tells the builder about one request: which kind of event it is, and which
 * evidence goes with which patient.
 */

/** Errors of the identify stage: the event is a failed login (DCM 110114/110122), not an access. */
const IDENTITY_ERRORS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'ERR_NO_CREDENTIAL',
  'ERR_TOKEN_INVALID',
  'ERR_TOKEN_EXPIRED',
  'ERR_CLAIM_TYPE',
  'ERR_CERT_INVALID',
  'ERR_CERT_BINDING',
  'ERR_UNKNOWN_PRACTITIONER',
  'ERR_AMBIGUOUS_PRACTITIONER',
  'ERR_FHIRUSER_MISMATCH',
  'ERR_TWO_CREDENTIALS',
  'ERR_TOKEN_IN_QUERY',
]);

/** Identification failed: no verified caller, and the error is one the identify stage gives. */
export function isLoginFailure(ctx: { principal?: unknown; error?: { code: ErrorCode } | undefined }): boolean {
  return ctx.principal === undefined && ctx.error !== undefined && IDENTITY_ERRORS.has(ctx.error.code);
}

/**
 * Evidence per patient for the per-patient events of searches and operations. The decision's
 * evidence is the care-set evidence of the patients it names, concatenated; it can be attributed
 * only when it names one patient. Otherwise the builder puts the decision's evidence on every event.
 */
export function evidenceByPatient(decision: Decision | undefined): ReadonlyMap<string, readonly Evidence[]> | undefined {
  if (!decision || decision.patients.length !== 1 || decision.evidence.length === 0) return undefined;
  return new Map([[decision.patients[0]!, decision.evidence]]);
}
