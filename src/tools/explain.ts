import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import { configPath, ConfigError, loadConfig, type LoadedConfig } from '../config/load.js';
import { principalKey, type Principal } from '../identity/principal.js';
import type { FhirInteraction } from '../fhir/interaction.js';
import { ProxyError } from '../http/errors.js';
import { createLogger } from '../ops/logger.js';
import type { Policy } from '../policy/config.js';
import { loadPolicy, type LoadedPolicy } from '../policy/load.js';
import { withheldBy } from '../policy/minimisation.js';
import { matchRoles, roleFactsOf } from '../policy/roles.js';
import { buildStages, type BuiltStages } from '../stages.js';
import type { ClassifiedState, Identified, Received } from '../state.js';
import { PERSONAS, type PersonaName } from '../demo/personas.js';
import { explanationJson, formatExplanation, type ExplainedEntry, type ExplainRefusal, type ExplainRequest, type Explanation } from './explanation.js';

export { explanationJson, formatExplanation, type ExplainedEntry, type ExplainRefusal, type ExplainRequest, type Explanation };

/**
 * `caregate explain`: why would caregate permit or refuse this request for this user?
 *
 * The request goes through the very stages the server runs (src/stages.ts `buildStages`): identify,
 * classify, authorize (role matching, care-set resolution with its fresh re-resolution before a
 * refusal, break-the-glass, decide, each batch entry decided by the same code). It stops after the
 * decision: nothing is sent upstream except the lookups the decision needs (principal, CareTeam,
 * Encounter, Consent, and for writes the current version), and nothing is audited (the AuditEvents
 * a break-the-glass grant would write are kept in memory and shown, not recorded).
 */

export interface ExplainerOptions {
  loaded: LoadedConfig;
  policy: LoadedPolicy;
  upstreamUrl: string;
  logger: Logger;
}

export interface Explainer {
  explain(req: ExplainRequest): Promise<Explanation>;
  close(): void;
}

/** Builds the server's own stages from the configuration, with an audit that records nothing. */
export function createExplainer(opts: ExplainerOptions): Explainer {
  const { config } = opts.loaded;
  const publicBaseUrl = config.server.publicBaseUrl ?? `http://${config.server.host}:${config.server.port}${config.server.basePath === '/' ? '' : config.server.basePath}`;
  const built: BuiltStages = buildStages({
    loaded: opts.loaded,
    upstreamUrl: opts.upstreamUrl,
    publicBaseUrl,
    logger: opts.logger,
    policy: () => opts.policy,
    // explain gives access to nothing: what would be audited is dropped.
    audit: async () => {},
  });
  const { stages } = built;

  async function explain(req: ExplainRequest): Promise<Explanation> {
    const out: Omit<Explanation, 'notes' | 'policyRevision'> = { request: { method: req.method, path: req.path, query: req.query } };
    const base = config.server.basePath === '/' ? '' : config.server.basePath;
    const received: Received = {
      head: {
        id: `explain-${randomUUID()}`,
        receivedAt: new Date(),
        started: performance.now(),
        method: req.method,
        url: `${base}${req.path}${req.query ? `?${req.query}` : ''}`,
        rawPath: req.path,
        rawQuery: req.query,
        headers: { ...req.headers },
        rawHeaders: Object.entries(req.headers).flatMap(([k, v]) => [k, v]),
        clientAddress: '127.0.0.1',
        tls: undefined,
      },
      body: req.body,
    };
    let stage: ExplainRefusal['stage'] = 'identify';
    let grant: { patient: string } | undefined;
    try {
      const identified: Identified = { ...received, identity: await stages.identify(received) };
      const p = identified.identity.principal;
      if (p) {
        out.principal = principalSummary(p);
        const matching = matchRoles(opts.policy.policy, roleFactsOf(p));
        out.role = { applied: matching[0]?.id, profile: matching[0]?.profile, matching: matching.map((r) => r.id) };
      }
      stage = 'classify';
      const classified: ClassifiedState = { ...identified, classified: stages.classify(identified) };
      out.interaction = interactionSummary(classified.classified.interaction);
      stage = 'authorize';
      const a = await stages.authorize(classified);
      out.decision = a.decision;
      if (a.grant) grant = { patient: a.grant.patient };
      if (a.careSet) out.careSet = careSetSummary(a.careSet);
      if (a.entries) {
        out.entries = (a.interaction.entries ?? []).map((e, i) => {
          const v = a.entries![i]!;
          return {
            index: e.index,
            method: e.interaction.method,
            path: e.interaction.path,
            kind: e.interaction.kind,
            resourceType: e.interaction.resourceType,
            ...(v.error ? { refusal: { stage: 'authorize', status: v.error.status, code: v.error.code, message: v.error.message } } : { decision: v.decision }),
          } satisfies ExplainedEntry;
        });
      }
    } catch (err) {
      if (!(err instanceof ProxyError)) throw err;
      out.refusal = { stage, status: err.status, code: err.code, message: err.message };
    }
    // Notes and revision last, so that the JSON reads in the order of the pipeline.
    const notes = notesFor(out, grant, opts.policy.policy);
    const withheld = await minimisationOfRead(out, built, opts.policy.policy);
    if (withheld) notes.push(withheld);
    return Object.assign(out, { notes, policyRevision: opts.policy.revision });
  }

  return { explain, close: () => void built.close() };
}

/**
 * For a permitted read under minimisation rules, whether this very resource would be withheld and
 * by which rule: the one place explain reads a resource (with caregate's credential), since the
 * rule depends on the resource's categories and labels. Names the rule, never the content.
 */
async function minimisationOfRead(e: Pick<Explanation, 'decision' | 'interaction'>, built: BuiltStages, policy: Policy): Promise<string | undefined> {
  const d = e.decision;
  const it = e.interaction;
  if (!d || d.effect !== 'permit' || !it || (it.kind !== 'read' && it.kind !== 'vread') || !it.resourceType || !it.id) return undefined;
  const cats = d.obligations.find((o) => o.kind === 'withhold-categories');
  const labels = d.obligations.find((o) => o.kind === 'withhold-labels');
  if (!cats && !labels) return undefined;
  const resource = await built.client.read(it.resourceType, it.id).catch(() => undefined);
  if (!resource) return undefined;
  const rule = withheldBy(policy.minimisation, resource, { ...(cats ? { read: cats } : {}), labels: labels?.labels ?? [] });
  if (!rule) return `${it.resourceType}/${it.id} falls under no minimisation rule that applies to this caller.`;
  return rule.startsWith('minimisation.')
    ? `${it.resourceType}/${it.id} would be refused (403) under ${rule}: a category of data the caller's profession does not read.`
    : `${it.resourceType}/${it.id} would be withheld (404, existence hidden) under ${rule}: a sensitivity label the caller is not in the audience of.`;
}

function principalSummary(p: Principal): NonNullable<Explanation['principal']> {
  return {
    kind: p.kind,
    reference: principalKey(p),
    method: p.method,
    idpRoles: p.claims.roles,
    groups: p.claims.groups,
    professionCodes: p.claims.professionCodes,
    practitionerRoleCodes: p.kind === 'practitioner' ? p.roleCodes : [],
    card: p.certificate !== undefined,
  };
}

function interactionSummary(it: FhirInteraction): NonNullable<Explanation['interaction']> {
  return {
    kind: it.kind,
    resourceType: it.resourceType,
    id: it.id,
    compartment: it.compartment,
    operation: it.operation,
    params: it.params.map((p) => (p.modifier === undefined ? p.name : `${p.name}:${p.modifier}`)),
  };
}

/** The care set the decision was taken on: its size and where each patient comes from. */
function careSetSummary(set: NonNullable<import('../relate/types.js').CareSet>): Explanation['careSet'] {
  if (set.scope === 'all') return { scope: 'all', patients: 0, bySource: {} };
  const bySource: Record<string, number> = {};
  for (const ev of set.patients.values()) for (const src of new Set(ev.map((e) => e.source))) bySource[src] = (bySource[src] ?? 0) + 1;
  return { scope: 'listed', patients: set.patients.size, bySource };
}

function notesFor(e: Pick<Explanation, 'decision' | 'interaction'>, btg: { patient: string } | undefined, policy: Policy): string[] {
  const notes: string[] = [];
  const d = e.decision;
  if (btg) {
    notes.push(
      `Break-the-glass: the proxy would grant Patient/${btg.patient} for ${policy.breakGlass.durationMinutes} minutes and record a high-severity AuditEvent (explain records nothing).`,
    );
  }
  if (!d) return notes;
  if (d.effect === 'permit' && d.obligations.some((o) => o.kind === 'filter-response')) {
    notes.push('Every resource of the upstream answer is judged again against the care set: a resource outside it is withheld (404 for a read, left out of a Bundle). explain does not send the request.');
  }
  for (const o of d.obligations) {
    if (o.kind === 'narrow') {
      notes.push(
        o.patients.length === 0
          ? 'No patient of the care set can match: the answer is an empty searchset, the upstream is not asked.'
          : `The upstream search is narrowed with ${o.param}= to the ${o.patients.length} patient(s) of the care set.`,
      );
    }
    if (o.kind === 'audit-severity' && o.severity === 'high') notes.push('The AuditEvent is flagged high severity for DIM review.');
    if (o.kind === 'mark-break-glass') notes.push('Answers carry X-Caregate-Break-Glass: active.');
    if (o.kind === 'break-glass-patients') {
      notes.push(`${o.patients.length} patient(s) are reachable only through a break-the-glass grant: an answer holding their data is marked and audited as break-the-glass.`);
    }
    if (o.kind === 'withhold-opposed') {
      notes.push(`${o.oppositions.length} opposition(s) of patients of the care set are in force (CSP L1110-4): the resources they cover are withheld from the answer.`);
    }
    if (o.kind === 'hold-unreleased') notes.push('Documents and results not yet released by a physician are withheld from the answer.');
    if (o.kind === 'withhold-categories') {
      notes.push(
        `Minimisation (${o.rule}): resources of ${o.categories.length ? o.categories.join(', ') : 'no category'}${o.uncategorised ? '' : ', and of none of the policy’s categories,'} are withheld from the answer (a read of one answers 403 naming the rule).`,
      );
    }
    if (o.kind === 'withhold-labels') {
      notes.push(`Sensitive records: resources labelled ${o.labels.map((l) => `${l.label.split('|')[1]} (${l.rule})`).join(', ')} are withheld from the answer (a read of one answers 404).`);
    }
    if (o.kind === 'own-access-history') notes.push('AuditEvents about the caller’s patients are shown in the patient’s reduced view.');
  }
  if (d.effect === 'deny') {
    notes.push(
      d.refuseAs === 'empty-searchset'
        ? 'The client would receive an empty searchset; the attempt is recorded as a refusal against the patients it named.'
        : `The client would receive ${d.refuseAs === 'not-found' ? '404 (existence hidden)' : '403'} with the message above.`,
    );
  }
  if (e.interaction?.kind === 'transaction' && d.effect === 'deny') notes.push('A transaction is refused whole when one entry is refused.');
  if (e.interaction?.kind === 'batch') notes.push('Batch entries are decided one by one; refused entries are answered with their own refusal.');
  return notes;
}


// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/** The upstream for tooling: the configured one, or the embedded demo hospital when `upstream.url` is null (as `serve`). */
export async function toolingUpstream(loaded: LoadedConfig, logger?: Logger): Promise<{ url: string; close(): Promise<void> }> {
  const { config } = loaded;
  if (config.upstream.url !== null) return { url: config.upstream.url, close: async () => {} };
  const { startDemoFhir } = await import('../demo/server.js');
  const demo = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: config.demo.seed, patients: config.demo.patients }, linksFromForwardedHeaders: config.demo.linksFromForwardedHeaders, ...(logger ? { logger } : {}) });
  return { url: demo.url, close: demo.close };
}

/** `/fhir/Patient/x?y`, `Patient/x`, or `http://host/fhir/Patient/x` → path relative to the FHIR base, and query. */
export function splitTarget(target: string, basePath: string): { path: string; query: string } {
  let rest = target;
  if (/^https?:\/\//i.test(rest)) {
    const u = new URL(rest);
    rest = `${u.pathname}${u.search}`;
  }
  const q = rest.indexOf('?');
  let path = q === -1 ? rest : rest.slice(0, q);
  const query = q === -1 ? '' : rest.slice(q + 1);
  if (!path.startsWith('/')) path = `/${path}`;
  const base = basePath === '/' ? '' : basePath;
  if (base && (path === base || path.startsWith(`${base}/`))) path = path.slice(base.length) || '/';
  return { path, query };
}

const EXPLAIN_USAGE = `Usage: caregate explain (--as PERSONA | --token JWT) [--config FILE] [--policy FILE] [--json]
                        [--body FILE] [--header 'Name: value']... METHOD URL

  Runs identify, classify, care-set resolution and decide, as the proxy would, and prints the decision.
  Nothing is forwarded, nothing is audited. Personas: ${Object.keys(PERSONAS).join(', ')}.
  Example: caregate explain --as surgeon GET /Patient/pat-dupont
`;

/** `caregate explain …`; returns the exit code (0 permit, 3 deny or refused, 2 usage, 1 configuration). */
export async function runExplainCli(argv: readonly string[]): Promise<number> {
  let values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      options: {
        as: { type: 'string' },
        token: { type: 'string' },
        config: { type: 'string', short: 'c' },
        policy: { type: 'string' },
        body: { type: 'string' },
        header: { type: 'string', short: 'H', multiple: true },
        json: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${EXPLAIN_USAGE}`);
    return 2;
  }
  const [method, target] = positionals;
  const persona = values.as as PersonaName | undefined;
  if (!method || !target || positionals.length > 2 || (persona === undefined) === (values.token === undefined)) {
    process.stderr.write(EXPLAIN_USAGE);
    return 2;
  }
  if (persona !== undefined && !(persona in PERSONAS)) {
    process.stderr.write(`--as must be one of: ${Object.keys(PERSONAS).join(', ')}\n`);
    return 2;
  }
  const headers: Record<string, string> = {};
  for (const h of values.header ?? []) {
    const i = h.indexOf(':');
    if (i <= 0) {
      process.stderr.write(`--header expects 'Name: value', got "${h}"\n`);
      return 2;
    }
    headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }

  let loaded: LoadedConfig;
  let policy: LoadedPolicy;
  try {
    loaded = loadConfig(values.config ?? 'config/caregate.yaml');
    policy = loadPolicy(values.policy ?? configPath(loaded, loaded.config.policy.file));
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.problems.join('\n')}\n`);
      return 1;
    }
    throw err;
  }
  let body: Buffer | undefined;
  if (values.body !== undefined) {
    body = readFileSync(values.body);
    headers['content-type'] ??= 'application/fhir+json';
  }

  let token = values.token;
  const keysDir = configPath(loaded, loaded.config.demo.keysDir);
  if (persona !== undefined || loaded.config.upstream.url === null) {
    // As `serve`: the demo issuer's key (and the JWKS file the demo config trusts) exist before identify starts.
    const { demoToken, ensureDemoSigningKey } = await import('../demo/tokens.js');
    ensureDemoSigningKey(keysDir);
    if (persona !== undefined) token = demoToken(persona, { dir: keysDir });
  }
  headers.authorization = `Bearer ${token}`;

  // Logs go to stderr (warnings only), so that stdout is the explanation alone.
  const logger = createLogger('warn', process.stderr);
  const upstream = await toolingUpstream(loaded);
  const explainer = createExplainer({ loaded, policy, upstreamUrl: upstream.url, logger });
  try {
    const { path, query } = splitTarget(target, loaded.config.server.basePath);
    const e = await explainer.explain({ method: method.toUpperCase(), path, query, headers, ...(body ? { body } : {}) });
    process.stdout.write(values.json ? explanationJson(e) : formatExplanation(e));
    return e.decision?.effect === 'permit' && !e.refusal ? 0 : 3;
  } finally {
    explainer.close();
    await upstream.close();
  }
}
