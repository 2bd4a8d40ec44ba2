import type { ErrorCode } from '../http/errors.js';
import type { Evidence } from '../relate/types.js';
import type { Answer } from '../http/send.js';
import { contractOf } from '../policy/engagement.js';
import type { RequestState } from '../state.js';
import type { AuditInput } from './audit-input.js';

/**
 * The audit record of one request, read off the request state (state.ts) whatever stage it reached:
 * who (the verified caller, or nothing when identification failed), what (the interaction), which
 * patients (those the decision named and those whose data the answer holds), the decision and its
 * evidence per patient, the outcome. The builder (build.ts) turns it into BALP AuditEvents.
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
export function isLoginFailure(s: Pick<RequestState, 'identity' | 'failure'>): boolean {
  return s.identity?.principal === undefined && s.failure !== undefined && IDENTITY_ERRORS.has(s.failure.code);
}

export interface AuditSite {
  publicBaseUrl: string;
  site: string;
}

export function auditInputOf(s: RequestState, answer: Answer, site: AuditSite): AuditInput {
  const principal = s.identity?.principal;
  const a = s.authorization;
  const interaction = a?.interaction ?? s.classified?.interaction;
  const decision = a?.decision;
  const patients = new Set<string>(decision?.patients ?? []);
  for (const p of s.shaped?.patients ?? []) patients.add(p);
  // A patient whose data her opposition kept out of the answer was still the object of the request.
  for (const p of s.shaped?.opposed?.keys() ?? []) patients.add(p);
  const careSet = a?.careSet;
  // Per-patient evidence: the care set's (a listed set), and the decision's for the one patient it
  // names (the Consent of an opposition that refused, or that a break-the-glass grant overrode).
  // Only the patients the events name are looked up: the care set itself may hold a thousand.
  let evidence: Map<string, readonly Evidence[]> | undefined;
  if (careSet?.scope === 'listed' && careSet.patients.size > 0) {
    evidence = new Map();
    for (const p of patients) {
      const e = careSet.patients.get(p);
      if (e) evidence.set(p, e);
    }
  }
  if (decision && decision.patients.length === 1 && decision.evidence.length > 0) {
    (evidence ??= new Map()).set(decision.patients[0]!, decision.evidence);
  }
  const breakGlassUse = s.shaped?.breakGlassUse ?? [];
  const engagement = a?.engagement;
  return {
    ...(isLoginFailure(s) ? { kind: 'login-failure' as const } : {}),
    requestId: s.head.id,
    recorded: s.head.receivedAt.toISOString(),
    ...(principal ? { principal } : {}),
    ...(interaction ? { interaction } : {}),
    ...(decision ? { decision } : {}),
    httpStatus: answer.status,
    ...(s.upstream ? { upstreamStatus: s.upstream.status } : {}),
    ...(s.head.clientAddress ? { clientAddress: s.head.clientAddress } : {}),
    ...(principal?.claims.clientId ? { clientId: principal.claims.clientId } : {}),
    publicBaseUrl: site.publicBaseUrl,
    site: site.site,
    rawQuery: s.head.rawQuery,
    patients: [...patients],
    ...(s.shaped?.resources.length ? { resourceRefs: s.shaped.resources } : {}),
    ...(evidence ? { evidenceByPatient: evidence } : {}),
    ...(breakGlassUse.length ? { breakGlassPatients: new Set(breakGlassUse) } : {}),
    ...(redactionsOf(s) ? { redactions: redactionsOf(s)! } : {}),
    ...(s.shaped?.opposed ? { opposedWithheld: s.shaped.opposed } : {}),
    ...(engagement ? { engagement: { id: engagement.id, contractReference: contractOf(engagement) } } : {}),
    // The rule that withheld a resource read by id is named in the trail (the caller gets a plain miss).
    ...(s.failure ? { failure: { code: s.failure.code, message: s.failure.detail?.startsWith('withheld by ') ? `${s.failure.message} (${s.failure.detail})` : s.failure.message } } : {}),
  };
}

/** What was removed from the answer: Patient links, resources minimisation withheld (by rule). */
function redactionsOf(s: RequestState): string[] | undefined {
  const out: string[] = [];
  if (s.shaped?.linksRemoved) out.push(`Patient.link: ${s.shaped.linksRemoved} link(s) to records outside the caller's rights removed`);
  for (const [rule, n] of s.shaped?.minimised ?? []) out.push(`${rule}: ${n} resource(s) withheld`);
  return out.length > 0 ? out : undefined;
}
