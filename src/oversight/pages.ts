import { escapeHtml as h } from '../audit/report-html.js';
import type { Person, PatientReachReport, UserReachReport } from './reach.js';
import type { ReachEvidence } from '../relate/who-can-see.js';

/**
 * The DIM's oversight pages: who can see a patient now, which patients a user can see now, and the
 * confirmation of a break-the-glass verdict. Self-contained, every value escaped, styles under the
 * page's CSP nonce (like the review report).
 */

function page(title: string, nonce: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>${h(title)}</title>
<style nonce="${h(nonce)}">${CSS}</style>
</head>
<body>
<header><h1>${h(title)}</h1><p class="secret">Confidential: personal health data covered by medical secrecy. Do not forward.</p></header>
<main>
${body}
</main>
</body>
</html>
`;
}

function evidenceText(e: ReachEvidence): string {
  const parts = [e.source, e.reference ?? ''];
  if (e.through?.length) parts.push(`through ${e.through.join(' → ')}`);
  if (e.until) parts.push(`until ${e.until}`);
  if (e.reason) parts.push(`reason: ${e.reason}`);
  return parts.filter(Boolean).join(' ');
}

function people(title: string, list: readonly Person[], hint: string): string {
  if (!list.length) return `<section><h2>${h(title)} <span class="count">0</span></h2><p class="hint">${h(hint)}</p><p class="empty">None.</p></section>`;
  const rows = list
    .map(
      (p) =>
        `<tr data-who="${h(p.who)}"><td>${h(p.who)}</td><td>${h(p.name)}</td><td>${h(p.services.map((s) => (s.name ? `${s.name} (${s.reference})` : s.reference)).join(', '))}</td><td>${h(
          p.roleCodes.join(' '),
        )}</td><td>${p.evidence.map((e) => h(evidenceText(e))).join('<br>')}</td></tr>`,
    )
    .join('\n');
  return `<section><h2>${h(title)} <span class="count">${list.length}</span></h2><p class="hint">${h(hint)}</p>
<table><thead><tr><th>Who</th><th>Name</th><th>Services</th><th>Role codes</th><th>Evidence</th></tr></thead><tbody>
${rows}
</tbody></table></section>`;
}

export function patientReachPage(r: PatientReachReport, nonce: string): string {
  const roles = r.roles.length
    ? `<ul>${r.roles.map((x) => `<li><b>${h(x.id)}</b> (${h(x.profile)}): ${h(x.view)}${x.description ? ` — ${h(x.description)}` : ''}</li>`).join('')}</ul>`
    : '<p class="empty">None.</p>';
  const engagements = r.engagements.length
    ? `<ul>${r.engagements
        .map((e) => `<li><b>${h(e.id)}</b>, ${h(e.contract)}: ${h(e.who.join(', '))}; ${h(e.access)}; ${h(e.categories.join(', '))}; stays ${h(e.stays.join(', '))}</li>`)
        .join('')}</ul>`
    : '<p class="empty">None.</p>';
  return page(
    `Who can see ${r.patient} now`,
    nonce,
    `<p>${h(r.name)} · as of ${h(r.asOf)}</p>
${people('Professionals through care relationships', r.practitioners, 'Practitioners whose care teams, services, stays or open break-the-glass grants hold this patient now: what a care-team role (clinician, emergency physician…) lets them read.')}
${people('Mandated persons', r.mandated, 'People holding a written mandate of the patient, valid now.')}
${people('The patient herself', r.self ? [r.self] : [], 'Through the patient portal (own-record roles).')}
<section><h2>Roles that see every record <span class="count">${r.roles.length}</span></h2><p class="hint">Whoever the identity provider gives these roles.</p>${roles}</section>
<section><h2>Contractors <span class="count">${r.engagements.length}</span></h2><p class="hint">Engagements in force whose stays include one of this patient's.</p>${engagements}</section>`,
  );
}

export function userReachPage(r: UserReachReport, nonce: string): string {
  const rows = r.patients
    .map((p) => `<tr><td>${h(p.patient)}</td><td>${h(p.name)}</td><td>${p.evidence.map((e) => h(evidenceText(e))).join('<br>')}</td></tr>`)
    .join('\n');
  return page(
    `Patients ${r.practitioner} can see now`,
    nonce,
    `<p>${h(r.name)} · services ${h(r.services.map((s) => s.name || s.reference).join(', ') || 'none')} · as of ${h(r.asOf)}</p>
<p class="hint">Her care relationships (care teams, services, stays) and open break-the-glass grants: what a care-team role lets her read. A role that sees every record (DIM, admission) reads more, whoever holds it.</p>
<section><h2>Patients <span class="count">${r.patients.length}</span></h2>
${r.patients.length ? `<table><thead><tr><th>Patient</th><th>Name</th><th>Evidence</th></tr></thead><tbody>\n${rows}\n</tbody></table>` : '<p class="empty">None.</p>'}</section>`,
  );
}

export function verdictRecordedPage(v: { opening: string; verdict: string; eventId: string }, nonce: string): string {
  return page(
    'Break-the-glass verdict recorded',
    nonce,
    `<section><p>Verdict <b>${h(v.verdict)}</b> on the opening AuditEvent/${h(v.opening)}, recorded as AuditEvent/${h(v.eventId)}.</p>
<p><a href="../../../review">Back to the review</a></p></section>`,
  );
}

const CSS = `
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#123;color:#fff;padding:16px 24px}header h1{margin:0 0 4px;font-size:22px}.secret{color:#ffd479;font-weight:600}
main{padding:8px 24px 40px}section{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:16px 0;padding:12px 16px}
h2{font-size:17px;margin:4px 0 8px}.count{background:#e8ecf1;border-radius:10px;padding:1px 8px;font-size:13px;font-weight:600}
.hint{color:#5b6470}.empty{color:#5b6470;font-style:italic}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #e6e9ed;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}
`;
