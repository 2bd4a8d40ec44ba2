import { readFileSync } from 'node:fs';
import type { AuditEvent, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { buildAuditEvents } from './audit/build.js';
import { reduceForPatients } from './audit/patient-view.js';
import { auditInputOf } from './audit/record.js';
import { configPath, type LoadedConfig } from './config/load.js';
import { classify } from './fhir/classify.js';
import { patientsOf } from './fhir/patients.js';
import { ProxyError } from './http/errors.js';
import { createIdentifier, type Identifier } from './identity/identify.js';
import { principalKey } from './identity/principal.js';
import type { Stages } from './pipeline.js';
import { createAuthorizer } from './policy/authorize.js';
import type { LoadedPolicy } from './policy/load.js';
import type { Opening } from './notify/messages.js';
import { isRelationshipType } from './policy/relationships.js';
import { matchRoles } from './policy/roles.js';
import type { ShadowPolicy } from './policy/shadow.js';
import { createBreakGlassStore } from './relate/breakglass.js';
import { createCareSetResolver, type CareSetResolver } from './relate/careset.js';
import { invalidateAfterWrite } from './relate/invalidate.js';
import { mandatedPatients } from './relate/mandate.js';
import { createOppositionStore, type OppositionStore } from './relate/oppositions.js';
import { createCareSets, type CareSets } from './relate/profiles.js';
import { createStaySets } from './relate/stays.js';
import { createPageLinks, PAGE_PATH } from './shape/paging.js';
import { createPlanner } from './shape/plan.js';
import { createPseudonyms } from './shape/pseudonyms.js';
import { createRequestShaper } from './shape/request.js';
import { createResponseShaper } from './shape/response.js';
import { createBaseRewriter } from './shape/rewrite.js';
import { createFhirClient, type FhirClient } from './upstream/client.js';
import { serviceCredential, upstreamDispatcher } from './upstream/credential.js';

/**
 * The one wiring root: every stage of the pipeline, built from the configuration. The server, the
 * `explain` and `test-policy` tools and the tests all build their stages here, so that they cannot
 * disagree. What differs between them is passed in: where AuditEvents go (the durable spool, or a
 * recorder for `explain`), the active policy (reloadable), the clock.
 */
export interface StageEnv {
  loaded: LoadedConfig;
  /** The upstream base URL (the configuration's, or the embedded demo engine's). */
  upstreamUrl: string;
  /** The base URL clients use, written into every link. */
  publicBaseUrl: string;
  logger: Logger;
  /** The active policy, read at each request (a reload replaces it). */
  policy: () => LoadedPolicy;
  /** Where AuditEvents go; resolves once they are durable, rejects when they cannot be. */
  audit(events: AuditEvent[]): Promise<void>;
  shadow?: ShadowPolicy;
  /** Secret contractor pseudonyms derive from (stable across restarts); random per process without it. */
  pseudonymSecret?: Buffer;
  now?: () => number;
  /** Counts care-relationship lookups (metrics). */
  onLookup?: (kind: 'careteam' | 'encounter', ok: boolean) => void;
  /**
   * A break-the-glass grant was opened and its start event is durable: the patient and her
   * attending physician are to be told (notify/breakglass.ts). Not awaited: the emergency access
   * never waits for the notification.
   */
  onBreakGlassOpened?: (opening: Opening) => void;
}


export interface BuiltStages {
  stages: Stages;
  client: FhirClient;
  identifier: Identifier;
  careSets: CareSetResolver;
  /** The care sets of every profile (the patient's access history page resolves a mandate with them). */
  profiles: CareSets;
  /** The patients' oppositions, cached per patient (`invalidatePatients` after a Consent write). */
  oppositions: OppositionStore;
  /** Drops what a policy reload may change: cached care sets and stays. */
  onPolicyReload(): void;
  close(): Promise<void>;
}

/** Paths answered without a credential (a client discovers the server before it logs in). */
const PUBLIC_PATHS = new Set(['/metadata', '/.well-known/smart-configuration']);

export function buildStages(env: StageEnv): BuiltStages {
  const { config } = env.loaded;
  const now = env.now ?? Date.now;
  const policy = () => env.policy().policy;
  const serviceHeaders = serviceCredential(env.loaded);
  const dispatcher = upstreamDispatcher(env.loaded);
  const client = createFhirClient({
    baseUrl: env.upstreamUrl,
    headers: serviceHeaders,
    timeoutMs: config.upstream.lookupTimeoutMs,
    ...(dispatcher ? { dispatcher } : {}),
  });
  const identifier = createIdentifier({
    config: config.identity,
    client,
    logger: env.logger,
    mapRoles: (claims, ctx) => matchRoles(policy(), { kind: ctx.kind, claims, roleCodes: ctx.roleCodes, cardPresented: ctx.cardPresented }).map((r) => r.id),
    readFile: (p) => readFileSync(configPath(env.loaded, p)),
    now,
  });

  const rewriter = createBaseRewriter(env.upstreamUrl, env.publicBaseUrl);
  const localBases = rewriter.upstreamBases;
  const linkOf = (r: Resource) => patientsOf(r, { localBases });
  const read = (type: string, id: string) => client.read(type, id);
  const pages = createPageLinks({ publicBaseUrl: env.publicBaseUrl, ttlSeconds: () => policy().paging.linkTtlSeconds, now });
  const pseudonyms = createPseudonyms({ secret: env.pseudonymSecret, localBases });
  const site = { publicBaseUrl: env.publicBaseUrl, site: config.audit.site };

  const relationships = createCareSetResolver({ client, config: () => policy().careRelationships, now, ...(env.onLookup ? { onLookup: env.onLookup } : {}) });
  const stays = createStaySets(client, now);
  const breakGlass = createBreakGlassStore(now);
  const oppositions = createOppositionStore({ client, config: () => policy().careRelationships, now });
  const careSets = createCareSets({
    relationships,
    mandates: (rp) => mandatedPatients(client, rp, now()),
    breakGlass,
    stays,
    oppositions: { store: oppositions, enabled: () => policy().patientRights.oppositions.enabled },
    ttlMs: () => policy().careRelationships.cache.ttlSeconds * 1000,
    now,
  });

  const authorize = createAuthorizer({
    policy,
    careSets,
    read,
    linkOf,
    localBases,
    reveal: (e, it, paging) => pseudonyms.reveal(e, it, paging),
    openGrant: async (requestId, p, req) => {
      const g = breakGlass.grant(p.practitioner, req.patient, req.reason, policy().breakGlass.durationMinutes);
      // The grant is recorded (a high-severity security alert) before anything is answered with it.
      const started = buildAuditEvents({
        kind: 'break-glass-start',
        requestId,
        recorded: new Date(now()).toISOString(),
        principal: p,
        ...(p.claims.clientId ? { clientId: p.claims.clientId } : {}),
        publicBaseUrl: env.publicBaseUrl,
        site: config.audit.site,
        patients: [g.patient],
        breakGlass: { reason: req.reason, until: new Date(g.until).toISOString() },
      });
      await env.audit(started);
      env.onBreakGlassOpened?.({
        eventId: started[0]!.id!,
        patient: g.patient,
        practitioner: p.practitioner,
        name: p.claims.displayName,
        professions: p.claims.professionCodes,
        reason: req.reason,
        at: g.grantedAt,
        until: g.until,
      });
      return { until: g.until };
    },
    now,
    ...(env.shadow ? { shadow: env.shadow } : {}),
  });
  const plan = createPlanner({ shapeRequest: createRequestShaper({ serviceHeaders, publicBaseUrl: env.publicBaseUrl }), rewriter });
  const shape = createResponseShaper({ linkOf, read, rewriter, pages, pseudonyms, reduceAuditEvent: reduceForPatients, logger: env.logger });

  const stages: Stages = {
    async identify(s) {
      const h = s.head;
      if (h.method === 'GET' && PUBLIC_PATHS.has(h.rawPath) && h.rawQuery === '') return { principal: undefined };
      const principal = await identifier.identify({
        method: h.method,
        url: h.url,
        headers: h.headers,
        rawHeaders: [...h.rawHeaders],
        ...(h.clientAddress ? { remoteAddress: h.clientAddress } : {}),
        ...(h.tls ? { tls: h.tls } : {}),
      });
      return { principal };
    },

    classify(s) {
      const h = s.head;
      const p = s.identity.principal;
      let path = h.rawPath;
      let query = h.rawQuery;
      const paging = path.startsWith(`/${PAGE_PATH}/`) && p !== undefined;
      if (paging) {
        if (h.method !== 'GET' || query !== '') throw new ProxyError('ERR_BAD_REQUEST', 'Paging links are followed with a plain GET.');
        const link = pages.open(path.slice(PAGE_PATH.length + 2), principalKey(p));
        const q = link.indexOf('?');
        path = q === -1 ? link : link.slice(0, q);
        query = q === -1 ? '' : link.slice(q + 1);
      }
      const interaction = classify(
        { method: h.method, path, query, headers: h.headers, rawHeaders: [...h.rawHeaders], ...(s.body ? { body: s.body } : {}) },
        { maxBodyBytes: config.server.maxRequestBytes },
      );
      return { interaction, paging };
    },

    authorize: (s) =>
      authorize({ requestId: s.head.id, headers: s.head.headers, principal: s.identity.principal, interaction: s.classified.interaction, paging: s.classified.paging }),

    plan: (s) => plan({ id: s.head.id, clientAddress: s.head.clientAddress, headers: s.head.headers, body: s.body }, s.authorization),

    shape: (s, upstream) =>
      shape(
        {
          userKey: s.identity.principal ? principalKey(s.identity.principal) : undefined,
          authorization: s.authorization,
          ...(s.plan.kind === 'upstream' && s.plan.subsetting ? { subsetting: s.plan.subsetting } : {}),
        },
        upstream,
      ),

    settle(s) {
      const a = s.authorization;
      invalidateAfterWrite(a.interaction, a.replaced, isRelationshipType, {
        careSets: (members) => relationships.invalidate(members),
        principal: (ref) => identifier.invalidatePrincipal(ref),
        stays: () => stays.clear(),
        oppositions: (patients) => oppositions.invalidatePatients(patients),
      });
    },

    audit: (s, answer) => env.audit(buildAuditEvents(auditInputOf(s, answer, site))),
  };

  return {
    stages,
    client,
    identifier,
    careSets: relationships,
    profiles: careSets,
    oppositions,
    onPolicyReload() {
      relationships.clear();
      stays.clear();
      oppositions.clear();
    },
    async close() {
      identifier.close();
      await dispatcher?.close();
    },
  };
}
