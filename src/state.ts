import type { IncomingHttpHeaders } from 'node:http';
import type { FhirInteraction } from './fhir/interaction.js';
import type { ProxyError } from './http/errors.js';
import type { TlsInfo } from './identity/mtls.js';
import type { Principal } from './identity/principal.js';
import type { Authorization } from './policy/authorize.js';
import type { Plan } from './shape/plan.js';
import type { Shaped } from './shape/response.js';

/**
 * The state of one request as it moves down the pipeline (pipeline.ts). It only grows: each stage
 * reads what the stages before it produced and adds its own output under its own name; nothing is
 * replaced, nothing is kept on the side. The audit record is built from it (audit/record.ts),
 * whatever stage the request stopped at.
 *
 *   head          what arrived (method, path, headers, client address, TLS facts)
 *   body          the request body, read whole (bounded)
 *   identity      the verified caller, or none for the public endpoints
 *   classified    the canonical FhirInteraction, and whether it came through a signed paging link
 *   authorization role, care set, the decision (and each batch entry's), a break-the-glass grant
 *   plan          the upstream request rebuilt from the decision, or a local answer
 *   upstream      the upstream's status and time
 *   shaped        the judged answer, and which patients and resources it holds
 *   failure       the error that ended the request, when one did
 */
export interface RequestHead {
  readonly id: string;
  readonly receivedAt: Date;
  /** `performance.now()` at arrival. */
  readonly started: number;
  readonly method: string;
  /** Path and query as received (identify refuses tokens in the query). */
  readonly url: string;
  /** Path after the FHIR base path, still encoded. */
  readonly rawPath: string;
  readonly rawQuery: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly clientAddress: string | undefined;
  /** TLS facts of the connection (a client certificate), absent on plain HTTP. */
  readonly tls: TlsInfo | undefined;
}

export interface Identity {
  /** Undefined only for the public endpoints (capabilities, SMART configuration). */
  readonly principal: Principal | undefined;
}

export interface Classified {
  readonly interaction: FhirInteraction;
  /** The request follows a signed paging link: its query was judged when the link was issued. */
  readonly paging: boolean;
  /** The paging link was taken out of caregate's narrowing: the search is narrowed again now. */
  readonly renarrow?: boolean;
}

export interface UpstreamOutcome {
  readonly status: number;
  readonly durationMs: number;
}

export interface RequestState {
  readonly head: RequestHead;
  readonly body?: Buffer | undefined;
  readonly identity?: Identity;
  readonly classified?: Classified;
  readonly authorization?: Authorization;
  readonly plan?: Plan;
  readonly upstream?: UpstreamOutcome;
  readonly shaped?: Shaped;
  readonly failure?: ProxyError;
}

/** The state once each stage has run: what the next stage may rely on. */
export type Received = RequestState & { readonly body: Buffer | undefined };
export type Identified = Received & { readonly identity: Identity };
export type ClassifiedState = Identified & { readonly classified: Classified };
export type Authorized = ClassifiedState & { readonly authorization: Authorization };
export type Planned = Authorized & { readonly plan: Plan };
export type Answered = Planned & { readonly shaped: Shaped };
