import type { BreakGlassItem } from './review-items.js';
import type { AccessRow, ReviewModel } from './review-model.js';

/**
 * The review as one self-contained HTML page: inline CSS, inline SVG charts and a few lines of
 * inline JS for sortable tables. Nothing is fetched from anywhere (hospital networks are offline,
 * and a CDN would learn who reviews what). Every value is HTML-escaped; no `style` attributes, so
 * the page works under a strict Content-Security-Policy given a nonce.
 */

export interface RenderOptions {
  /** CSP nonce for the inline `<style>` and `<script>` when served by caregate. */
  nonce?: string;
  /** Most rows shown per table (the CSV files have them all). Default 5000. */
  maxRows?: number;
  /**
   * When served by caregate: a form to change the period (and patient) and links to the CSV files,
   * relative to the page (`review/<file>.csv?<same query>`).
   */
  nav?: { from: string; to: string; patient?: string; files?: readonly string[] };
  /**
   * When served to a DIM physician: each break-the-glass opening gets a form that records a verdict
   * (`POST review/break-glass/<id>/verdict`), carrying this anti-forgery token.
   */
  verdictForm?: { token: string };
}

/** Escapes text for HTML element content and quoted attribute values. */
export function escapeHtml(value: unknown): string {
  return String(value ?? '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

type Cell = string | number;
interface Column<T> {
  title: string;
  value: (row: T) => Cell;
  numeric?: boolean;
}

/** Renders the review page. */
export function renderReviewHtml(model: ReviewModel, opts: RenderOptions = {}): string {
  const nonce = opts.nonce ? ` nonce="${escapeHtml(opts.nonce)}"` : '';
  const maxRows = opts.maxRows ?? 5000;
  const h = escapeHtml;
  const t = model.totals;
  const hours = model.hours;

  const accessColumns: Column<AccessRow>[] = [
    { title: 'Local time', value: (r) => r.localTime },
    { title: 'User', value: (r) => r.user },
    { title: 'Name', value: (r) => r.userName },
    { title: 'Profession', value: (r) => r.professions },
    { title: 'Patient', value: (r) => r.patient },
    { title: 'Interaction', value: (r) => r.subtype },
    { title: 'Resources / query', value: (r) => r.resources },
    { title: 'Outcome', value: (r) => outcomeLabel(r.outcome) },
    { title: 'Purpose', value: (r) => r.purpose },
    { title: 'Reason', value: (r) => r.reason },
    { title: 'Client address', value: (r) => r.clientAddress },
    { title: 'Request id', value: (r) => r.requestId },
  ];

  const sections: string[] = [];

  sections.push(`<section class="cards">
${card('Events', t.events)}${card('Accesses granted', t.accesses)}${card('Refusals', t.refusals, t.refusals > 0 ? 'warn' : '')}${card(
    'Break-the-glass',
    t.breakGlass,
    t.breakGlass > 0 ? 'alert' : '',
  )}${card('Failures', t.failures)}${card('Users', t.users)}${card('Patients', t.patients)}
</section>`);

  sections.push(`<section><h2>Activity per day</h2>${dailyChart(model.daily)}</section>`);

  sections.push(breakGlassItemsSection(model.breakGlassItems, opts.verdictForm, maxRows));

  sections.push(`<section><h2>Break-the-glass accesses <span class="count">${model.breakGlass.length}</span></h2>
<p class="hint">Each emergency access with the justification typed by the user. Check it against the patient's stay. Notification: whether the patient and her attending physician were told of the opening (sent, failed and retrying, or pending).</p>
${table(model.breakGlass, [
  { title: 'Recorded (UTC)', value: (r) => r.recorded },
  { title: 'What', value: (r) => r.what },
  { title: 'User', value: (r) => r.user },
  { title: 'Name', value: (r) => r.userName },
  { title: 'Patient', value: (r) => r.patient },
  { title: 'Justification', value: (r) => r.reason },
  { title: 'Notification', value: (r) => r.notification },
  { title: 'Interaction', value: (r) => r.subtype },
  { title: 'Resources', value: (r) => r.resources },
  { title: 'Request id', value: (r) => r.requestId },
], maxRows)}</section>`);

  sections.push(`<section><h2>Refusals by user <span class="count">${model.refusalsByUser.length}</span></h2>
<p class="hint">Attempts refused by the policy or failed identifications. Trying to obtain secret information is itself an offence.</p>
${barChart(model.refusalsByUser.slice(0, 15).map((r) => ({ label: r.userName ? `${r.user} ${r.userName}` : r.user, value: r.refusals })), 'refusal')}
${table(model.refusalsByUser, [
  { title: 'User', value: (r) => r.user },
  { title: 'Name', value: (r) => r.userName },
  { title: 'Refusals', value: (r) => r.refusals, numeric: true },
  { title: 'Distinct patients', value: (r) => r.patients, numeric: true },
  { title: 'Last (UTC)', value: (r) => r.last },
], maxRows)}</section>`);

  sections.push(`<section><h2>Refusals by patient <span class="count">${model.refusalsByPatient.length}</span></h2>
${table(model.refusalsByPatient, [
  { title: 'Patient', value: (r) => r.patient },
  { title: 'Refusals', value: (r) => r.refusals, numeric: true },
  { title: 'Distinct users', value: (r) => r.users, numeric: true },
  { title: 'Last (UTC)', value: (r) => r.last },
], maxRows)}</section>`);

  sections.push(`<section><h2>Users who opened unusually many records <span class="count">${model.unusualUsers.length}</span></h2>
<p class="hint">Distinct patients opened per user. Flagged above the others' mean + 3σ (at least ${h(model.unusual.minPatients)})${
    model.unusual.threshold !== undefined ? ` or above ${h(model.unusual.threshold)}` : ''
  }.</p>
${barChart(model.patientsPerUser.slice(0, 20).map((r) => ({ label: r.userName ? `${r.user} ${r.userName}` : r.user, value: r.patients, flagged: r.flagged })), 'patients')}
${table(model.patientsPerUser, [
  { title: 'User', value: (r) => r.user },
  { title: 'Name', value: (r) => r.userName },
  { title: 'Distinct patients', value: (r) => r.patients, numeric: true },
  { title: 'Accesses', value: (r) => r.accesses, numeric: true },
  { title: 'Threshold', value: (r) => r.threshold ?? '', numeric: true },
  { title: 'Flagged', value: (r) => (r.flagged ? 'yes' : '') },
], maxRows)}</section>`);

  sections.push(`<section><h2>Accesses outside usual hours <span class="count">${model.offHours.length}</span></h2>
<p class="hint">From ${h(hours.offHoursStart)}:00 to ${h(hours.offHoursEnd)}:00${hours.weekends ? ', and weekends' : ''}, ${h(hours.timeZone)} time.</p>
${table(model.offHours, accessColumns, maxRows)}</section>`);

  if (model.patient) {
    sections.push(`<section><h2>Every access to ${h(model.patient.patient)} <span class="count">${model.patient.accesses.length}</span></h2>
<p class="hint">Granted and refused, for answering the patient (who saw my record).</p>
${table(model.patient.accesses, accessColumns, maxRows)}</section>`);
  }

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>caregate audit review ${h(model.from.slice(0, 10))} – ${h(model.to.slice(0, 10))}</title>
<style${nonce}>${CSS}</style>
</head>
<body>
<header>
<h1>Audit review</h1>
<p>${h(model.sites.join(', ') || 'caregate')} · from <b>${h(model.from)}</b> to <b>${h(model.to)}</b> · generated ${h(model.generatedAt)}</p>
<p class="secret">Confidential: personal health data covered by medical secrecy. Do not forward.</p>
</header>
<main>
${opts.nav ? navigation(opts.nav) : ''}
${sections.join('\n')}
</main>
<script${nonce}>${JS}</script>
</body>
</html>
`;

  function card(label: string, value: number, cls = ''): string {
    return `<div class="card ${cls}"><div class="v">${h(value)}</div><div class="l">${h(label)}</div></div>`;
  }
}

/**
 * Break-the-glass openings as review items: open, justified or unjustified (the latest verdict), the
 * overdue ones flagged; with a verdict form per opening when served to the DIM.
 */
function breakGlassItemsSection(items: readonly BreakGlassItem[], form: RenderOptions['verdictForm'], maxRows: number): string {
  const h = escapeHtml;
  const open = items.filter((i) => i.status === 'open').length;
  const overdue = items.filter((i) => i.overdue).length;
  if (!items.length) return '<section id="break-glass-items"><h2>Break-the-glass openings to review <span class="count">0</span></h2><p class="empty">None.</p></section>';
  const rows = items.slice(0, maxRows).map((i) => {
    const status = i.status === 'open' ? (i.overdue ? '<b class="overdue">open, overdue</b>' : 'open') : h(i.status);
    const verdict = i.verdict
      ? `${h(i.verdict.byName || i.verdict.by)}, ${h(i.verdict.recorded)}${i.verdicts > 1 ? ` (${i.verdicts} verdicts)` : ''}<br>${h(i.verdict.comment)}`
      : '';
    const cell = form
      ? `<td><form method="post" action="review/break-glass/${encodeURIComponent(i.openingId)}/verdict" class="verdict">
<input type="hidden" name="token" value="${h(form.token)}">
<select name="verdict" required><option value="">verdict…</option><option value="justified">justified</option><option value="unjustified">unjustified</option></select>
<input name="comment" required maxlength="2000" placeholder="comment">
<button type="submit">Record</button></form></td>`
      : '';
    return `<tr data-opening="${h(i.openingId)}"><td>${h(i.recorded)}</td><td>${h(i.user)}</td><td>${h(i.userName)}</td><td>${h(i.patient)}</td><td>${h(i.reason)}</td><td class="n">${h(i.accesses)}</td><td class="n">${h(i.ageDays)}</td><td>${status}</td><td>${verdict}</td>${cell}</tr>`;
  });
  const head = ['Opened (UTC)', 'User', 'Name', 'Patient', 'Justification', 'Accesses', 'Age (days)', 'Status', 'Verdict', ...(form ? ['Record a verdict'] : [])]
    .map((t) => `<th scope="col" tabindex="0">${h(t)}</th>`)
    .join('');
  const more = items.length > maxRows ? `<p class="hint">${maxRows} of ${items.length} rows shown; the CSV file has them all.</p>` : '';
  return `<section id="break-glass-items"><h2>Break-the-glass openings to review <span class="count">${items.length}</span> <span class="count">${open} open</span>${
    overdue ? ` <span class="count overdue">${overdue} overdue</span>` : ''
  }</h2>
<p class="hint">Each opening is closed by the DIM's verdict, justified or unjustified with a comment, recorded in the audit trail as an AuditEvent that points at the opening. The latest verdict counts.</p>
<div class="scroll"><table class="sortable"><thead><tr>${head}</tr></thead><tbody>
${rows.join('\n')}
</tbody></table></div>${more}</section>`;
}

/** The served page's own controls: a GET form for the period and patient, and the CSV downloads. */
function navigation(nav: NonNullable<RenderOptions['nav']>): string {
  const h = escapeHtml;
  const query = new URLSearchParams({ from: nav.from, to: nav.to, ...(nav.patient ? { patient: nav.patient } : {}) }).toString();
  const links = (nav.files ?? []).map((f) => `<a href="review/${encodeURIComponent(f)}?${h(query)}" download>${h(f)}</a>`).join(' · ');
  return `<section class="nav"><form method="get" action="review">
<label>From <input name="from" value="${h(nav.from)}" required></label>
<label>To <input name="to" value="${h(nav.to)}" required></label>
<label>Patient <input name="patient" value="${h(nav.patient ?? '')}" placeholder="id (who saw this patient)"></label>
<button type="submit">Show</button></form>
<p>CSV: ${links}</p></section>`;
}

function table<T>(rows: readonly T[], columns: readonly Column<T>[], maxRows: number): string {
  if (!rows.length) return '<p class="empty">None.</p>';
  const head = columns
    .map((c) => `<th scope="col"${c.numeric ? ' data-type="num"' : ''} tabindex="0">${escapeHtml(c.title)}</th>`)
    .join('');
  const body = rows
    .slice(0, maxRows)
    .map((r) => `<tr>${columns.map((c) => `<td${c.numeric ? ' class="n"' : ''}>${escapeHtml(c.value(r))}</td>`).join('')}</tr>`)
    .join('\n');
  const more = rows.length > maxRows ? `<p class="hint">${maxRows} of ${rows.length} rows shown; the CSV file has them all.</p>` : '';
  return `<div class="scroll"><table class="sortable"><thead><tr>${head}</tr></thead><tbody>\n${body}\n</tbody></table></div>${more}`;
}

/** Horizontal bars, one per label. */
function barChart(items: readonly { label: string; value: number; flagged?: boolean }[], unit: string): string {
  if (!items.length) return '';
  const max = Math.max(...items.map((i) => i.value), 1);
  const rowH = 22;
  const labelW = 300;
  const barW = 420;
  const height = items.length * rowH + 8;
  const bars = items
    .map((it, i) => {
      const y = 4 + i * rowH;
      const w = Math.max(1, Math.round((it.value / max) * barW));
      return `<g><title>${escapeHtml(`${it.label}: ${it.value} ${unit}${it.value === 1 ? '' : 's'}`)}</title>
<text x="${labelW - 6}" y="${y + 15}" text-anchor="end" class="lbl">${escapeHtml(truncate(it.label, 42))}</text>
<rect x="${labelW}" y="${y + 3}" width="${w}" height="${rowH - 8}" class="${it.flagged ? 'bar flag' : 'bar'}"/>
<text x="${labelW + w + 5}" y="${y + 15}" class="num">${it.value}</text></g>`;
    })
    .join('\n');
  return `<svg class="chart" viewBox="0 0 ${labelW + barW + 60} ${height}" width="${labelW + barW + 60}" height="${height}" role="img" aria-label="${escapeHtml(unit)} chart">${bars}</svg>`;
}

/** Grouped vertical bars per day: accesses, refusals, break-the-glass. */
function dailyChart(days: ReviewModel['daily']): string {
  if (!days.length) return '<p class="empty">No activity in this period.</p>';
  const series = [
    { key: 'accesses', cls: 'bar', label: 'accesses' },
    { key: 'refusals', cls: 'bar warn', label: 'refusals' },
    { key: 'breakGlass', cls: 'bar alert', label: 'break-the-glass' },
  ] as const;
  const max = Math.max(1, ...days.flatMap((d) => series.map((s) => d[s.key])));
  const groupW = Math.max(18, Math.min(60, Math.floor(900 / days.length)));
  const barW = Math.max(4, Math.floor((groupW - 4) / 3));
  const plotH = 180;
  const left = 40;
  const width = left + days.length * groupW + 10;
  const height = plotH + 50;
  const every = Math.ceil(days.length / 15);
  const groups = days
    .map((d, i) => {
      const x0 = left + i * groupW;
      const bars = series
        .map((s, j) => {
          const v = d[s.key];
          const bh = Math.round((v / max) * plotH);
          return `<rect x="${x0 + 2 + j * barW}" y="${10 + plotH - bh}" width="${barW - 1}" height="${bh}" class="${s.cls}"><title>${escapeHtml(`${d.day}: ${v} ${s.label}`)}</title></rect>`;
        })
        .join('');
      const label = i % every === 0 ? `<text x="${x0 + groupW / 2}" y="${plotH + 26}" text-anchor="middle" class="lbl">${escapeHtml(d.day.slice(5))}</text>` : '';
      return bars + label;
    })
    .join('\n');
  const legend = series
    .map((s, i) => `<rect x="${left + i * 150}" y="${plotH + 36}" width="10" height="10" class="${s.cls}"/><text x="${left + 14 + i * 150}" y="${plotH + 45}" class="lbl">${s.label}</text>`)
    .join('');
  return `<svg class="chart" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="activity per day">
<line x1="${left}" y1="${10 + plotH}" x2="${width - 10}" y2="${10 + plotH}" class="axis"/>
<text x="${left - 6}" y="18" text-anchor="end" class="lbl">${max}</text><text x="${left - 6}" y="${10 + plotH}" text-anchor="end" class="lbl">0</text>
${groups}
${legend}</svg>`;
}

function outcomeLabel(code: string): string {
  switch (code) {
    case '0':
      return 'granted';
    case '4':
      return 'refused';
    case '8':
      return 'failed (upstream)';
    case '12':
      return 'failed (caregate)';
    default:
      return code;
  }
}

function truncate(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

const CSS = `
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#123;color:#fff;padding:16px 24px}header h1{margin:0 0 4px;font-size:22px}header p{margin:2px 0}
.secret{color:#ffd479;font-weight:600}
main{padding:8px 24px 40px}section{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:16px 0;padding:12px 16px}
h2{font-size:17px;margin:4px 0 8px}.count{background:#e8ecf1;border-radius:10px;padding:1px 8px;font-size:13px;font-weight:600}
.hint{color:#5b6470;margin:4px 0 8px}.empty{color:#5b6470;font-style:italic}
.cards{display:flex;flex-wrap:wrap;gap:12px;background:none;border:0;padding:0}
.card{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px 16px;min-width:110px}
.card .v{font-size:24px;font-weight:700}.card .l{color:#5b6470}.card.warn .v{color:#b35c00}.card.alert .v{color:#c0142b}
.scroll{overflow:auto;max-height:640px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #e6e9ed;padding:4px 8px;text-align:left;vertical-align:top}
th{position:sticky;top:0;background:#eef1f5;cursor:pointer;user-select:none;white-space:nowrap}
th[data-dir=asc]::after{content:" ▲"}th[data-dir=desc]::after{content:" ▼"}td.n{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafbfc}
.chart{max-width:100%;height:auto;display:block;margin:8px 0}.lbl,.num{font-size:11px;fill:#333}.axis{stroke:#999}
.nav form{display:flex;flex-wrap:wrap;gap:12px;align-items:end}.nav label{display:flex;flex-direction:column;color:#5b6470}
.nav input{font:inherit;padding:3px 6px;min-width:200px}.nav a{color:#123}
.overdue{color:#c0142b}form.verdict{display:flex;gap:4px}form.verdict input{min-width:140px}
.bar{fill:#3b6ea8}.bar.warn{fill:#e08a1e}.bar.alert,.bar.flag{fill:#c0142b}
@media print{.nav{display:none}header{background:none;color:#000}.scroll{max-height:none}th{position:static}}
`;

const JS = `
document.querySelectorAll('table.sortable th').forEach(function (th) {
  function sort() {
    var table = th.closest('table'), body = table.tBodies[0], col = th.cellIndex;
    var asc = th.getAttribute('data-dir') !== 'asc', num = th.getAttribute('data-type') === 'num';
    table.querySelectorAll('th').forEach(function (o) { o.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].textContent, y = b.cells[col].textContent, r;
      if (num) r = (parseFloat(x) || 0) - (parseFloat(y) || 0);
      else r = x.localeCompare(y, undefined, { numeric: true });
      return asc ? r : -r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  th.addEventListener('click', sort);
  th.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); } });
});
`;
