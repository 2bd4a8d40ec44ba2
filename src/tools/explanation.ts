import type { FhirInteraction } from '../fhir/interaction.js';
import type { Principal } from '../identity/principal.js';
import type { Decision } from '../policy/decision.js';
import type { Evidence } from '../relate/types.js';

/** What `caregate explain` finds out (src/tools/explain.ts), and its output as text or JSON. */

/** One request to explain. `path` is relative to the FHIR base (`/Patient/x`); `query` without `?`. */
export interface ExplainRequest {
  method: string;
  path: string;
  query: string;
  /** Lower-case header names. */
  headers: Record<string, string>;
  body?: Buffer;
}

/** Where a request was stopped before any decision (identify or classify, or a break-the-glass refusal). */
export interface ExplainRefusal {
  stage: 'identify' | 'classify' | 'authorize';
  status: number;
  code: string;
  message: string;
}

export interface ExplainedEntry {
  index: number;
  method: string;
  path: string;
  kind: string;
  resourceType: string | undefined;
  decision?: Decision;
  refusal?: ExplainRefusal;
}

/** Everything `explain` found out, as plain data (printed as text, or as JSON with `--json`). */
export interface Explanation {
  request: { method: string; path: string; query: string };
  principal?: {
    kind: Principal['kind'];
    reference: string;
    method: Principal['method'];
    idpRoles: readonly string[];
    groups: readonly string[];
    professionCodes: readonly string[];
    practitionerRoleCodes: readonly string[];
    card: boolean;
  };
  /** The policy role that applies (the first that matches) and every role that matches, in file order. */
  role?: { applied: string | undefined; profile: string | undefined; matching: string[] };
  interaction?: {
    kind: FhirInteraction['kind'];
    resourceType: string | undefined;
    id: string | undefined;
    compartment: { type: string; id: string } | undefined;
    operation: string | undefined;
    /** Parameter names (and modifiers) only. */
    params: string[];
  };
  /** The care set the decision was taken on: its size and where each patient comes from. */
  careSet?: { scope: 'all' | 'listed'; patients: number; bySource: Record<string, number> };
  decision?: Decision;
  /** Batch and transaction entries, each decided as the proxy decides them. */
  entries?: ExplainedEntry[];
  refusal?: ExplainRefusal;
  /** What happens next, in words (response filtering, narrowing, break-the-glass). */
  notes: string[];
  policyRevision: string;
}



const MAX_LISTED = 10;

function list(items: readonly string[]): string {
  if (items.length === 0) return '(none)';
  const shown = items.slice(0, MAX_LISTED).join(', ');
  return items.length > MAX_LISTED ? `${shown} … and ${items.length - MAX_LISTED} more` : shown;
}

function evidenceText(e: Evidence): string {
  if (e.source === 'break-glass') return `break-the-glass grant${e.until ? ` until ${e.until}` : ''}${e.reason ? ` (reason: ${e.reason})` : ''}`;
  if (e.source === 'opposition') return `the patient's opposition ${e.reference ?? ''}${e.overridden ? ', overridden by break-the-glass' : ''}`;
  return `${e.source}${e.reference ? ` ${e.reference}` : ''}`;
}

function decisionLines(d: Decision, indent = ''): string[] {
  const lines = [
    `${indent}${d.effect.toUpperCase()}  reason ${d.reason}  rule ${d.rule}${d.refuseAs === 'not-found' ? '  (answered 404)' : d.refuseAs === 'empty-searchset' ? '  (answered with an empty searchset)' : ''}`,
    `${indent}  message:     ${d.message}`,
  ];
  if (d.patients.length) lines.push(`${indent}  patients:    ${list(d.patients.map((p) => `Patient/${p}`))}`);
  if (d.evidence.length) {
    lines.push(`${indent}  evidence:`);
    for (const e of d.evidence) lines.push(`${indent}    - ${evidenceText(e)}`);
  }
  const obligations = d.obligations.map((o) => {
    switch (o.kind) {
      case 'narrow':
        return o.patients.length ? `narrow ${o.param}= to ${o.patients.length} patient(s)` : 'answer an empty searchset';
      case 'audit-severity':
        return `audit severity ${o.severity}`;
      case 'de-identify':
        return `de-identify (engagement ${o.engagement})`;
      case 'break-glass-patients':
        return `break-the-glass marking for ${o.patients.length} patient(s)`;
      case 'withhold-opposed':
        return `withhold what ${o.oppositions.length} opposition(s) cover`;
      case 'withhold-categories':
        return `withhold ${o.categories.join(', ') || 'nothing categorised'}${o.uncategorised ? '' : ' and uncategorised data'} (${o.rule})`;
      case 'withhold-labels':
        return `withhold labels ${o.labels.map((l) => l.label.split('|')[1]).join(', ')}`;
      default:
        return o.kind;
    }
  });
  if (obligations.length) lines.push(`${indent}  obligations: ${obligations.join('; ')}`);
  if (d.purposeOfUse) lines.push(`${indent}  purpose:     ${d.purposeOfUse}`);
  return lines;
}

/** The explanation as text for a terminal. */
export function formatExplanation(e: Explanation): string {
  const lines: string[] = [`${e.request.method} ${e.request.path}${e.request.query ? `?${e.request.query}` : ''}   (policy revision ${e.policyRevision})`, ''];
  if (e.principal) {
    const p = e.principal;
    lines.push(`caller:      ${p.reference} (${p.kind}, ${p.method}${p.card ? ', CPS card' : ''})`);
    lines.push(`  IdP roles: ${list(p.idpRoles)}   groups: ${list(p.groups)}   professions: ${list(p.professionCodes)}`);
    if (p.kind === 'practitioner') lines.push(`  PractitionerRole codes: ${list(p.practitionerRoleCodes)}`);
  } else if (!e.refusal || e.refusal.stage !== 'identify') {
    lines.push('caller:      none (public endpoint)');
  }
  if (e.role) {
    lines.push(
      e.role.applied
        ? `role:        ${e.role.applied} (profile ${e.role.profile})${e.role.matching.length > 1 ? `; also matching, not applied: ${e.role.matching.slice(1).join(', ')}` : ''}`
        : 'role:        none matches: everything is refused (default deny)',
    );
  }
  if (e.interaction) {
    const it = e.interaction;
    const target = [it.resourceType, it.id].filter(Boolean).join('/');
    lines.push(
      `interaction: ${it.kind}${target ? ` ${target}` : ''}${it.compartment ? ` in ${it.compartment.type}/${it.compartment.id}` : ''}${it.operation ? ` $${it.operation}` : ''}${it.params.length ? `  params: ${it.params.join(', ')}` : ''}`,
    );
  }
  if (e.careSet) {
    const sources = Object.entries(e.careSet.bySource).map(([s, n]) => `${s} ${n}`);
    lines.push(`care set:    ${e.careSet.scope === 'all' ? 'every record (role sees all records)' : `${e.careSet.patients} patient(s)${sources.length ? ` (${sources.join(', ')})` : ''}`}`);
  }
  lines.push('');
  if (e.refusal) {
    lines.push(`REFUSED at ${e.refusal.stage}: ${e.refusal.status} ${e.refusal.code}`, `  message:     ${e.refusal.message}`);
  }
  if (e.decision) lines.push(...decisionLines(e.decision));
  if (e.entries?.length) {
    lines.push('', 'entries:');
    for (const en of e.entries) {
      lines.push(`  [${en.index}] ${en.method} ${en.path} (${en.kind})`);
      if (en.decision) lines.push(...decisionLines(en.decision, '      '));
      if (en.refusal) lines.push(`      REFUSED: ${en.refusal.status} ${en.refusal.code}: ${en.refusal.message}`);
    }
  }
  if (e.notes.length) {
    lines.push('');
    for (const n of e.notes) lines.push(`note: ${n}`);
  }
  return `${lines.join('\n')}\n`;
}

/** JSON-safe copy (decisions are plain data already). */
export function explanationJson(e: Explanation): string {
  return `${JSON.stringify(e, null, 2)}\n`;
}
