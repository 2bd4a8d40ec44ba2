import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { configPath, ConfigError, formatIssues, loadConfig, type LoadedConfig } from '../config/load.js';
import type { Config } from '../config/root.js';
import { identityConfigSchema } from '../identity/config.js';
import { PERSONAS, type PersonaName } from '../demo/personas.js';
import { startCaregate } from '../server.js';
import type { DecisionReason } from '../policy/decision.js';
import { loadPolicy } from '../policy/load.js';

/**
 * `caregate test-policy`: the security team's regression tests for a policy file. Each case is a
 * request made as one of the demo hospital's people, through the real proxy (caregate in-process
 * on a free port, in front of the embedded demo hospital, with demo tokens and the demo CPS card),
 * and the decision it must get.
 *
 * The decision of each request is read from the proxy's own `request` log line (request id,
 * status, decision reason, rule, error code), the same line operators see; the request id is the
 * case's. Cases run in file order against one proxy: a break-the-glass grant or a write made by a
 * case is seen by the cases after it.
 */

const PERSONA_NAMES = Object.keys(PERSONAS) as [PersonaName, ...PersonaName[]];

const caseSchema = z
  .object({
    name: z.string().min(1).describe('What the case shows, read as behaviour.'),
    as: z.enum(PERSONA_NAMES).describe('The demo person making the request.'),
    credential: z
      .enum(['token', 'card', 'none'])
      .default('token')
      .describe('token: a demo access token; card: the demo CPS card alone (clinician only), forwarded as by a TLS terminator; none: no credential.'),
    scope: z.string().min(1).optional().describe("Replaces the token's SMART scopes."),
    claims: z.record(z.string(), z.unknown()).optional().describe('Extra token claims, merged last (e.g. other IdP roles).'),
    request: z
      .object({
        method: z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']),
        url: z.string().min(1).describe('Relative to the FHIR base: /Patient/pat-dupont, /Observation?patient=pat-dupont'),
        headers: z.record(z.string(), z.string()).optional(),
        body: z.unknown().optional().describe('A JSON value (sent as FHIR JSON), or a string sent as is.'),
      })
      .strict(),
    expect: z
      .object({
        effect: z.enum(['permit', 'deny']).describe('The decision; a request refused before any decision (401, 400) counts as deny.'),
        status: z.number().int().min(100).max(599).optional(),
        reason: z.string().min(1).optional().describe('The decision reason, or the error code when refused before a decision.'),
        rule: z.string().min(1).optional(),
        withheld: z.string().min(1).optional().describe('The minimisation rule that withheld the answer or part of it (minimisation.<row>, sensitivity.<name>).'),
      })
      .strict(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.credential === 'card' && c.as !== 'clinician') {
      ctx.addIssue({ code: 'custom', path: ['credential'], message: 'the demo hospital has a CPS card for the clinician persona only' });
    }
    if (c.credential !== 'token' && (c.scope !== undefined || c.claims !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['credential'], message: 'scope and claims apply to tokens only' });
    }
  });

export const policyCasesSchema = z.object({ cases: z.array(caseSchema).min(1) }).strict();

export type PolicyCase = z.infer<typeof caseSchema>;

/** Reads and validates a cases file; throws ConfigError naming each problem's dotted path. */
export function loadPolicyCases(file: string): PolicyCase[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read the cases file (${(err as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length) throw new ConfigError(file, doc.errors.map((e) => e.message.split('\n')[0]!));
  const parsed = policyCasesSchema.safeParse(doc.toJS() ?? {});
  if (!parsed.success) throw new ConfigError(file, formatIssues(parsed.error.issues));
  return parsed.data.cases;
}

/**
 * Decision effect of each reason. A closed map, so that a new reason cannot be added to
 * `DecisionReason` without saying here whether it lets a request through.
 */
const EFFECT_OF: Record<DecisionReason, 'permit' | 'deny'> = {
  'care-relationship': 'permit',
  'break-glass': 'permit',
  'own-record': 'permit',
  mandate: 'permit',
  'role-all-records': 'permit',
  'reference-data': 'permit',
  capabilities: 'permit',
  'filtered-search': 'permit',
  'de-identified': 'permit',
  'engagement-identified': 'permit',
  'default-deny': 'deny',
  'no-care-relationship': 'deny',
  'role-forbidden': 'deny',
  'interaction-forbidden': 'deny',
  'parameter-forbidden': 'deny',
  'scope-ceiling': 'deny',
  'relationship-write-forbidden': 'deny',
  'patient-undetermined': 'deny',
  'patient-move-forbidden': 'deny',
  'patient-opposition': 'deny',
  'category-forbidden': 'deny',
  'lookup-failed': 'deny',
};

/** What a case got. */
export interface CaseOutcome {
  status: number;
  effect: 'permit' | 'deny';
  /** Decision reason; undefined when the request was refused before a decision. */
  reason: string | undefined;
  rule: string | undefined;
  /** caregate's error code when the answer is its own refusal (ERR_FORBIDDEN, ERR_NOT_FOUND, ERR_BAD_REQUEST…). */
  error: string | undefined;
  /** The minimisation rules that withheld the answer or part of it. */
  withheld: readonly string[];
  /** The OperationOutcome text of a refusal. */
  message: string | undefined;
}

export interface CaseResult {
  name: string;
  ok: boolean;
  /** Each expectation that did not hold, in words. */
  problems: string[];
  got: CaseOutcome | undefined;
}

export interface RunCasesOptions {
  cases: readonly PolicyCase[];
  /** The policy file under test. */
  policyFile: string;
  /** The configuration the proxy starts from (server limits, demo seed); identity, audit and upstream are replaced. */
  loaded: LoadedConfig;
  /** Generated patients of the demo hospital (default: the configuration's `demo.patients`; the fixtures are always there). */
  patients?: number;
}

interface RequestLine {
  status?: number;
  decision?: string;
  rule?: string;
  error?: string;
  withheld?: string[];
}

/** Runs the cases, in order, through one in-process caregate in front of a fresh demo hospital. */
export async function runPolicyCases(opts: RunCasesOptions): Promise<CaseResult[]> {
  // Fail on a bad policy file before starting anything, with its own dotted-path problems.
  const policyFile = resolve(opts.policyFile);
  loadPolicy(policyFile);
  const dir = mkdtempSync(join(tmpdir(), 'caregate-test-policy-'));
  const closers: (() => Promise<void>)[] = [];
  try {
    return await runInHarness(opts, policyFile, dir, closers);
  } finally {
    for (const close of closers.reverse()) await close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Starts the demo hospital and caregate (registering how to stop them in `closers`), then runs the cases. */
async function runInHarness(opts: RunCasesOptions, policyFile: string, dir: string, closers: (() => Promise<void>)[]): Promise<CaseResult[]> {
  const { startDemoFhir } = await import('../demo/server.js');
  const { demoIssuerConfig, demoToken } = await import('../demo/tokens.js');
  const { demoCertificatesConfig, ensureDemoPki } = await import('../demo/pki.js');
  const demo = await startDemoFhir({
    port: 0,
    host: '127.0.0.1',
    seed: { seed: opts.loaded.config.demo.seed, patients: opts.patients ?? opts.loaded.config.demo.patients },
  });
  closers.push(demo.close);
  const pki = await ensureDemoPki(join(dir, 'keys'));
  const base = opts.loaded.config;
  const config: Config = {
    ...base,
    server: { ...base.server, host: '127.0.0.1', port: 0, publicBaseUrl: undefined, tls: undefined },
    upstream: { ...base.upstream, url: demo.url, auth: { type: 'none' } },
    identity: identityConfigSchema.parse({
      issuers: [demoIssuerConfig(join(dir, 'keys'))],
      // The demo card arrives in the header a TLS terminator on this machine would set.
      certificates: { ...demoCertificatesConfig(join(dir, 'keys')), requestCert: false, forwarded: { format: 'nginx-escaped-pem', trustedProxies: ['127.0.0.1', '::1'] } },
    }),
    audit: { ...base.audit, mode: 'strict', spoolDir: join(dir, 'audit'), ship: { ...base.audit.ship, target: 'upstream', url: undefined, headers: undefined } },
    policy: { file: policyFile, watch: false },
    // The cases are about decisions: no alert to the establishment's webhook, no state beside the real one.
    oversight: { ...base.oversight, enabled: false, webhook: undefined, dir: join(dir, 'oversight') },
  };
  const loaded: LoadedConfig = { config, file: opts.loaded.file, dir };

  const lines = new Map<string, RequestLine>();
  const waiters = new Map<string, () => void>();
  const logger = pino(
    { level: 'info' },
    {
      write(s: string) {
        let o: { msg?: string; reqId?: string } & RequestLine;
        try {
          o = JSON.parse(s) as typeof o;
        } catch {
          return;
        }
        if (o.msg !== 'request' || !o.reqId) return;
        lines.set(o.reqId, { status: o.status, decision: o.decision, rule: o.rule, error: o.error, ...(o.withheld ? { withheld: o.withheld } : {}) });
        waiters.get(o.reqId)?.();
      },
    },
  );
  const gate = await startCaregate({ loaded, upstreamUrl: demo.url, logger, port: 0, host: '127.0.0.1' });
  closers.push(() => gate.close());
  const tokens = new Map<string, string>();
  const cardHeader = encodeURIComponent(readFileSync(pki.cards.clinician.certFile, 'utf8'));

  async function requestLine(id: string): Promise<RequestLine | undefined> {
    if (!lines.has(id)) {
      await new Promise<void>((done) => {
        const timer = setTimeout(done, 5000);
        waiters.set(id, () => {
          clearTimeout(timer);
          done();
        });
      });
      waiters.delete(id);
    }
    return lines.get(id);
  }

  async function run(c: PolicyCase, index: number): Promise<CaseResult> {
    const id = `policy-case-${index + 1}`;
    const headers: Record<string, string> = { accept: 'application/fhir+json' };
    if (c.credential === 'card') {
      headers['ssl-client-cert'] = cardHeader;
    } else if (c.credential === 'token') {
      const key = JSON.stringify([c.as, c.scope, c.claims]);
      let token = tokens.get(key);
      if (!token) {
        token = demoToken(c.as, { dir: join(dir, 'keys'), ...(c.scope ? { scope: c.scope } : {}), ...(c.claims ? { claims: c.claims } : {}) });
        tokens.set(key, token);
      }
      headers.authorization = `Bearer ${token}`;
    }
    // The case's own headers come last: a case may send a broken credential on purpose.
    Object.assign(headers, lowerKeys(c.request.headers ?? {}), { 'x-request-id': id });
    let body: string | undefined;
    if (c.request.body !== undefined) {
      body = typeof c.request.body === 'string' ? c.request.body : JSON.stringify(c.request.body);
      headers['content-type'] ??= 'application/fhir+json';
    }
    const url = `${gate.url}${c.request.url.startsWith('/') ? '' : '/'}${c.request.url}`;
    const res = await fetch(url, { method: c.request.method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    const line = await requestLine(id);
    if (!line) return { name: c.name, ok: false, problems: ['the proxy logged no decision for this request'], got: undefined };
    const reason = line.decision as DecisionReason | undefined;
    const got: CaseOutcome = {
      status: res.status,
      effect: reason !== undefined && EFFECT_OF[reason] === 'permit' ? 'permit' : 'deny',
      reason,
      rule: line.rule,
      error: line.error,
      withheld: line.withheld ?? [],
      message: res.status >= 400 ? outcomeText(text) : undefined,
    };
    const problems: string[] = [];
    const e = c.expect;
    if (got.effect !== e.effect) problems.push(`effect: expected ${e.effect}, got ${got.effect}`);
    if (e.status !== undefined && got.status !== e.status) problems.push(`status: expected ${e.status}, got ${got.status}`);
    if (e.reason !== undefined && e.reason !== (got.reason ?? got.error)) problems.push(`reason: expected ${e.reason}, got ${got.reason ?? got.error ?? 'none'}`);
    if (e.rule !== undefined && e.rule !== got.rule) problems.push(`rule: expected ${e.rule}, got ${got.rule ?? 'none'}`);
    if (e.withheld !== undefined && !got.withheld.includes(e.withheld)) problems.push(`withheld: expected ${e.withheld}, got ${got.withheld.join(', ') || 'nothing withheld'}`);
    return { name: c.name, ok: problems.length === 0, problems, got };
  }

  const results: CaseResult[] = [];
  for (const [i, c] of opts.cases.entries()) results.push(await run(c, i));
  return results;
}

function lowerKeys(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
}

function outcomeText(text: string): string | undefined {
  try {
    const o = JSON.parse(text) as { resourceType?: string; issue?: { details?: { text?: string } }[] };
    return o.resourceType === 'OperationOutcome' ? o.issue?.[0]?.details?.text : undefined;
  } catch {
    return undefined;
  }
}

/** One line per case and the summary line `N passed, M failed`. */
export function formatCaseResults(results: readonly CaseResult[]): string {
  const out: string[] = [];
  for (const r of results) {
    if (r.ok) {
      out.push(`  ok    ${r.name}`);
      continue;
    }
    out.push(`  FAIL  ${r.name}`);
    for (const p of r.problems) out.push(`          ${p}`);
    if (r.got) {
      const g = r.got;
      out.push(`          got: ${g.effect} ${g.status}${g.reason ? ` reason ${g.reason}` : ''}${g.rule ? ` rule ${g.rule}` : ''}${g.error ? ` error ${g.error}` : ''}${g.withheld.length ? ` withheld ${g.withheld.join(', ')}` : ''}`);
      if (g.message) out.push(`          message: ${g.message}`);
    }
  }
  const failed = results.filter((r) => !r.ok).length;
  out.push('', `${results.length - failed} passed, ${failed} failed`);
  return `${out.join('\n')}\n`;
}

const USAGE = `Usage: caregate test-policy CASES.yaml [--policy POLICY.yaml] [--config FILE]

  Runs each case through caregate (in-process, in front of the embedded demo hospital, with demo
  tokens) and checks the decision. Exit 0 when every case passes, 1 otherwise.
`;

/** `caregate test-policy …`; returns the exit code (0 all passed, 1 a failure or a bad file, 2 usage). */
export async function runTestPolicyCli(argv: readonly string[]): Promise<number> {
  let values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: [...argv],
      options: { policy: { type: 'string' }, config: { type: 'string', short: 'c' } },
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (positionals.length !== 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  try {
    const loaded = loadConfig(values.config ?? 'config/caregate.yaml');
    const policyFile = values.policy ?? configPath(loaded, loaded.config.policy.file);
    const cases = loadPolicyCases(positionals[0]!);
    process.stdout.write(`${cases.length} cases against ${policyFile}\n`);
    const results = await runPolicyCases({ cases, policyFile, loaded });
    process.stdout.write(formatCaseResults(results));
    return results.every((r) => r.ok) ? 0 : 1;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.problems.join('\n')}\n`);
      return 1;
    }
    throw err;
  }
}
