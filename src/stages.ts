import { readFileSync } from 'node:fs';
import type { AuditEvent, Resource } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { buildAuditEvents } from './audit/build.js';
import { reduceForPatients } from './audit/patient-view.js';
import { auditInputOf } from './audit/record.js';
import { serializeAuditEvents } from './audit/serialize.js';
import type { SerializedAuditEvents } from './audit/spool.js';
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
import { createBinaryOwners } from './relate/binary-owners.js';
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
import { createMemoryState, type Invalidation, type SharedState } from './shared/state.js';
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
  /** Where AuditEvents go (as objects, or serialised); resolves once they are durable, rejects when they cannot be. */
  audit: (events: readonly AuditEvent[] | SerializedAuditEvents) => Promise<void>;
  shadow?: ShadowPolicy;
  /** Secret contractor pseudonyms derive from (stable across restarts); random per process without it. */
  pseudonymSecret?: Buffer;
  now?: () => number;
  /** Counts care-relationship lookups (metrics). */
  onLookup?: (kind: 'careteam' | 'encounter', ok: boolean) => void;
  /** The state instances share (grants, invalidations, the paging key); in this process when absent. */
  shared?: SharedState;
  /**
   * A break-the-glass grant was opened and its start event is durable: the patient and her
   * attending physician are to be told (notify/breakglass.ts). Not awaited: the emergency access
   * never waits for the notification.
   */
  onBreakGlassOpened?: (opening: Opening) => void;
  /**
   * Which of these patients the oversight watches (staff members, flagged patients): their
   * interactions are recorded at high severity. A label lookup, batched and cached, may be awaited.
   */
  sensitivePatients?: (ids: readonly string[]) => Promise<ReadonlySet<string>>;
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
    aliases: [env.publicBaseUrl, ...config.upstream.publicBaseAliases],
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

  // The bases the upstream may answer with: its own, caregate's public base (a proxy-aware server
  // builds links from the forwarded headers), and the configured aliases. All are recognised as
  // the upstream's, and rewritten to the public base.
  const rewriter = createBaseRewriter(env.upstreamUrl, env.publicBaseUrl, [env.publicBaseUrl, ...config.upstream.publicBaseAliases]);
  const localBases = rewriter.upstreamBases;
  const linkOf = (r: Resource) => patientsOf(r, { localBases });
  const read = (type: string, id: string) => client.read(type, id);
  const shared = env.shared ?? createMemoryState();
  const pages = createPageLinks({ publicBaseUrl: env.publicBaseUrl, ttlSeconds: () => policy().paging.linkTtlSeconds, key: () => shared.pagingKey(), now });
  const pseudonyms = createPseudonyms({ secret: env.pseudonymSecret, localBases, shared: shared.pseudonyms });
  const site = { publicBaseUrl: env.publicBaseUrl, site: config.audit.site };

  const binaryOwners = createBinaryOwners({
    client,
    localBases,
    searches: config.upstream.binaryOwnerSearches,
    ttlMs: () => policy().careRelationships.cache.ttlSeconds * 1000,
    now,
  });
  const relationships = createCareSetResolver({ client, config: () => policy().careRelationships, now, ...(env.onLookup ? { onLookup: env.onLookup } : {}) });
  const stays = createStaySets(client, now);
  const breakGlass = createBreakGlassStore(shared.grants, now);
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
    binaryOwners,
    reveal: (e, it, paging) => pseudonyms.reveal(e, it, paging),
    openGrant: async (requestId, p, req) => {
      // No grant is opened, nor its alert recorded, when it cannot be stored where every instance sees it.
      breakGlass.assertWritable();
      const t = now();
      const g = { user: p.practitioner, patient: req.patient, reason: req.reason, grantedAt: t, until: req.until };
      // The grant is recorded (a high-severity security alert) before it is stored and used.
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
      await breakGlass.grant(g);
      // The patient and her attending physician are told (notify/breakglass.ts); never awaited.
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
  const plan = createPlanner({
    shapeRequest: createRequestShaper({ serviceHeaders, publicBaseUrl: env.publicBaseUrl, forwardedHeaders: config.upstream.forwardedHeaders }),
    rewriter,
  });
  const shape = createResponseShaper({ linkOf, read, binaryOwners, rewriter, pages, pseudonyms, reduceAuditEvent: reduceForPatients, categories: () => policy().minimisation, logger: env.logger });

  // What a relationship write made stale, dropped here and on every other instance (shared/state.ts).
  const unsubscribe = shared.bus.subscribe((m) => {
    if (m.all) {
      relationships.clear();
      stays.clear();
      binaryOwners.clear();
      oppositions.clear();
      identifier.clearPrincipals();
      return;
    }
    if (m.members?.length) relationships.invalidate(m.members);
    for (const r of m.principals ?? []) identifier.invalidatePrincipal(r);
    if (m.caches?.includes('stays')) stays.clear();
    if (m.caches?.includes('binary-owners')) binaryOwners.clear();
    // A Consent written on any instance: that patient's oppositions are read again (CSP L1110-4).
    if (m.patients?.length) oppositions.invalidatePatients(m.patients);
  });

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
      let renarrow = false;
      if (paging) {
        if (h.method !== 'GET' || query !== '') throw new ProxyError('ERR_BAD_REQUEST', 'Paging links are followed with a plain GET.');
        const opened = pages.open(path.slice(PAGE_PATH.length + 2), principalKey(p));
        const q = opened.link.indexOf('?');
        path = q === -1 ? opened.link : opened.link.slice(0, q);
        query = q === -1 ? '' : opened.link.slice(q + 1);
        renarrow = opened.renarrow;
      }
      const interaction = classify(
        { method: h.method, path, query, headers: h.headers, rawHeaders: [...h.rawHeaders], ...(s.body ? { body: s.body } : {}) },
        { maxBodyBytes: config.server.maxRequestBytes },
      );
      return { interaction, paging, ...(renarrow ? { renarrow } : {}) };
    },

    authorize: (s) =>
      authorize({
        requestId: s.head.id,
        headers: s.head.headers,
        principal: s.identity.principal,
        interaction: s.classified.interaction,
        paging: s.classified.paging,
        renarrow: s.classified.renarrow === true,
      }),

    plan: (s) => plan({ id: s.head.id, clientAddress: s.head.clientAddress, headers: s.head.headers, body: s.body }, s.authorization),

    async shape(s, upstream) {
      const shaped = await shape(
        {
          userKey: s.identity.principal ? principalKey(s.identity.principal) : undefined,
          authorization: s.authorization,
          ...(s.plan.kind === 'upstream' && s.plan.subsetting ? { subsetting: s.plan.subsetting } : {}),
        },
        upstream,
      );
      // A contractor may follow these pseudonyms on any instance: shared before they are answered.
      if (s.authorization.engagement) await pseudonyms.share();
      return shaped;
    },

    settle(s) {
      const a = s.authorization;
      const members = new Set<string>();
      const principals = new Set<string>();
      const caches = new Set<string>();
      const patientsDropped = new Set<string>();
      // A document written here may be the owner another instance has not seen: its Binaries' owners are looked up again.
      const writes = a.interaction.kind === 'batch' || a.interaction.kind === 'transaction' ? (a.interaction.entries ?? []).map((e) => e.interaction) : [a.interaction];
      for (const w of writes) {
        if (w.method === 'GET' || !w.body || typeof w.body !== 'object') continue;
        if (binaryOwners.forget(w.body as Resource)) caches.add('binary-owners');
      }
      invalidateAfterWrite(a.interaction, a.replaced, isRelationshipType, {
        careSets: (refs) => refs.forEach((r) => members.add(r)),
        principal: (ref) => principals.add(ref),
        stays: () => caches.add('stays'),
        oppositions: (patients) => patients.forEach((pid) => patientsDropped.add(pid)),
      });
      const m: Invalidation = { members: [...members], principals: [...principals], caches: [...caches], patients: [...patientsDropped] };
      if (members.size + principals.size + caches.size + patientsDropped.size > 0) shared.bus.publish(m);
    },

    // Serialised here, sharing the text of what the events of one interaction have in common.
    audit: async (s, answer) => {
      const input = auditInputOf(s, answer, site);
      if (env.sensitivePatients && input.patients.length > 0) {
        const watched = await env.sensitivePatients(input.patients);
        if (watched.size > 0) input.sensitivePatients = watched;
      }
      const events = buildAuditEvents(input);
      return env.audit({ json: serializeAuditEvents(events), events });
    },
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
      binaryOwners.clear();
      oppositions.clear();
    },
    async close() {
      unsubscribe();
      identifier.close();
      await dispatcher?.close();
    },
  };
}
