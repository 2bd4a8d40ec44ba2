import type { Decision } from '../policy/decision.js';
import type { Evidence } from '../relate/types.js';
import type { Explanation } from './explain.js';

/** `caregate explain`'s output: the explanation as text for a terminal, or as JSON. */


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
