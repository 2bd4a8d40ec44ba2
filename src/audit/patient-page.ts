import { escapeHtml } from './report-html.js';
import { professionLabel, type PatientAccess } from './patient-view.js';

/**
 * The patient's page "who saw my record", in her language (French by default, English available):
 * one self-contained HTML page, inline CSS under a nonce, no script, every value escaped.
 */

export type Lang = 'fr' | 'en';

export interface AccessPageOptions {
  lang: Lang;
  nonce: string;
  timeZone: string;
  generatedAt: Date;
  /** Whose record this is (the id only: kept in the language link). */
  patient: string;
  /** Who reads the page: the patient herself, or her mandated person (how the patient and the mandatary are called). */
  viewer: 'patient' | 'mandated';
  /** The period asked for, as typed (empty: the whole history). */
  from: string;
  to: string;
}

const T = {
  fr: {
    title: 'Qui a consulté mon dossier ?',
    intro:
      'Chaque accès à votre dossier médical est enregistré, qu’il ait été accordé ou refusé. Cette page en donne la liste, du plus récent au plus ancien : ' +
      'quand, par qui (nom et profession), pour quelles données, et le résultat. Un accès en urgence (« bris de glace ») est signalé avec le motif indiqué ' +
      'et l’information qui vous a été envoyée, à vous et à votre médecin. Vos propres consultations y figurent aussi.',
    empty: 'Aucun accès enregistré pour cette période.',
    cols: ['Date et heure', 'Qui', 'Qualité', 'Données', 'Résultat', 'Urgence (motif)', 'Information'],
    other: 'English',
    otherLang: 'en',
    period: 'Période',
    all: 'tout l’historique',
    generated: 'Page établie le',
    who: {
      patient: { patient: 'Vous', mandated: 'La personne dont c’est le dossier' },
      mandated: { patient: 'votre mandataire', mandated: 'mandataire' },
      'other-person': 'Une autre personne',
      unidentified: 'Personne non identifiée',
      caregate: 'Information automatique',
      staff: 'Personnel de l’établissement',
    },
    action: { read: 'consultation', search: 'recherche', write: 'écriture', delete: 'suppression', other: 'accès' },
    outcome: { granted: 'Accordé', refused: 'Refusé', failed: 'Non abouti' },
    reason: {
      'care-relationship': 'membre de l’équipe qui vous soigne',
      'break-glass': 'accès en urgence',
      'own-record': 'votre propre accès',
      mandate: 'au titre de votre mandat',
      'role-all-records': 'département d’information médicale',
      'no-care-relationship': 'aucun lien de soins',
      'patient-opposition': 'votre opposition',
      'filtered-search': 'recherche sans résultat',
    } as Record<string, string>,
    refusedOther: 'non autorisé',
    opposedWithheld: 'une partie retenue (votre opposition)',
    notification: {
      sent: 'Information envoyée',
      failed: 'Envoi en cours',
      pending: 'Information en attente',
      patient: 'vous',
      attending: 'votre médecin',
    },
    btgOpened: 'ouverture en urgence',
    data: {
      Patient: 'identité',
      Observation: 'résultats et mesures',
      Condition: 'diagnostics',
      MedicationRequest: 'prescriptions',
      DocumentReference: 'documents',
      Binary: 'documents',
      Encounter: 'séjours',
      CareTeam: 'équipe de soins',
      AuditEvent: 'historique des accès',
      Communication: 'messages',
      Consent: 'consentements et oppositions',
      Provenance: 'traçabilité',
      DiagnosticReport: 'comptes rendus d’examens',
      Procedure: 'actes',
      AllergyIntolerance: 'allergies',
      Immunization: 'vaccinations',
    } as Record<string, string>,
  },
  en: {
    title: 'Who saw my record?',
    intro:
      'Every access to your medical record is recorded, whether it was granted or refused. This page lists them, newest first: when, by whom ' +
      '(name and profession), which data, and the outcome. An emergency access ("break the glass") is shown with the reason given and the ' +
      'information sent to you and to your physician. Your own views appear too.',
    empty: 'No access recorded for this period.',
    cols: ['Date and time', 'Who', 'Capacity', 'Data', 'Outcome', 'Emergency (reason)', 'Information'],
    other: 'Français',
    otherLang: 'fr',
    period: 'Period',
    all: 'the whole history',
    generated: 'Page made on',
    who: {
      patient: { patient: 'You', mandated: 'The person whose record it is' },
      mandated: { patient: 'your mandated person', mandated: 'mandated person' },
      'other-person': 'Another person',
      unidentified: 'Unidentified person',
      caregate: 'Automatic information',
      staff: 'Hospital staff',
    },
    action: { read: 'read', search: 'search', write: 'write', delete: 'deletion', other: 'access' },
    outcome: { granted: 'Granted', refused: 'Refused', failed: 'Not completed' },
    reason: {
      'care-relationship': 'member of the team caring for you',
      'break-glass': 'emergency access',
      'own-record': 'your own access',
      mandate: 'under your mandate',
      'role-all-records': 'medical information department',
      'no-care-relationship': 'no care relationship',
      'patient-opposition': 'your opposition',
      'filtered-search': 'search without result',
    } as Record<string, string>,
    refusedOther: 'not allowed',
    opposedWithheld: 'part withheld (your opposition)',
    notification: {
      sent: 'Information sent',
      failed: 'Being sent',
      pending: 'Information pending',
      patient: 'you',
      attending: 'your physician',
    },
    btgOpened: 'emergency opening',
    data: {
      Patient: 'identity',
      Observation: 'results and measurements',
      Condition: 'diagnoses',
      MedicationRequest: 'prescriptions',
      DocumentReference: 'documents',
      Binary: 'documents',
      Encounter: 'stays',
      CareTeam: 'care team',
      AuditEvent: 'access history',
      Communication: 'messages',
      Consent: 'consents and oppositions',
      Provenance: 'traceability',
      DiagnosticReport: 'test reports',
      Procedure: 'procedures',
      AllergyIntolerance: 'allergies',
      Immunization: 'immunisations',
    } as Record<string, string>,
  },
} as const;

/** The language asked for: `?lang=`, else the first of fr/en in Accept-Language, else French. */
export function pageLanguage(param: string | undefined, acceptLanguage: string | undefined): Lang {
  if (param === 'en' || param === 'fr') return param;
  const tags = (acceptLanguage ?? '')
    .split(',')
    .map((part) => {
      const [tag = '', ...attrs] = part.trim().toLowerCase().split(';');
      const q = attrs.map((a) => /^\s*q=([\d.]+)\s*$/.exec(a)?.[1]).find(Boolean);
      return { tag: tag.split('-')[0], q: q === undefined ? 1 : Number(q) };
    })
    .filter((x) => x.q > 0)
    .sort((a, b) => b.q - a.q);
  const first = tags.find((x) => x.tag === 'fr' || x.tag === 'en');
  return first?.tag === 'en' ? 'en' : 'fr';
}

export function renderAccessHistory(rows: readonly PatientAccess[], opts: AccessPageOptions): string {
  const t = T[opts.lang];
  const h = escapeHtml;
  // French typography puts a space before the colon.
  const colon = opts.lang === 'fr' ? ' : ' : ': ';
  const fmt = new Intl.DateTimeFormat(opts.lang === 'fr' ? 'fr-FR' : 'en-GB', { dateStyle: 'medium', timeStyle: 'short', timeZone: opts.timeZone });
  const date = (iso: string) => fmt.format(new Date(iso));
  // The notification of each break-the-glass opening, by the id of its start event.
  const told = new Map<string, PatientAccess>();
  for (const r of rows) if (r.kind === 'notification' && r.notification && told.get(r.notification.of)?.notification?.status !== 'sent') told.set(r.notification.of, r);

  const recipients = (list: readonly string[]) =>
    list.map((x) => (x === 'patient' ? t.notification.patient : x === 'attending' ? t.notification.attending : x)).join(', ');
  const line = (r: PatientAccess): string[] => {
    const who =
      r.who.as === 'patient'
        ? t.who.patient[opts.viewer]
        : r.who.as === 'mandated'
          ? `${r.who.name ?? ''} (${t.who.mandated[opts.viewer]})`
          : r.who.as === 'professional' || r.who.as === 'staff'
            ? (r.who.name ?? '')
            : t.who[r.who.as];
    const capacity = r.who.professions.length ? r.who.professions.map((c) => professionLabel(c, opts.lang)).join(', ') : r.who.as === 'staff' ? t.who.staff : '';
    const data = [...new Set(r.data.map((d) => t.data[d] ?? d))].join(', ');
    const what = r.kind === 'break-glass' ? t.btgOpened : r.kind === 'notification' ? '' : t.action[r.action];
    const reason = r.reason ? (t.reason[r.reason] ?? (r.outcome === 'granted' ? '' : t.refusedOther)) : '';
    const outcome = [t.outcome[r.outcome], reason, r.opposedWithheld ? t.opposedWithheld : ''].filter(Boolean).join(' — ');
    let info = '';
    if (r.kind === 'notification' && r.notification) {
      const s = r.notification.status === 'sent' ? t.notification.sent : t.notification.failed;
      info = `${s}${colon}${recipients(r.notification.recipients)}`;
    } else if (r.kind === 'break-glass') {
      const n = told.get(r.id)?.notification;
      info = n ? `${n.status === 'sent' ? t.notification.sent : t.notification.failed} (${recipients(n.recipients)})` : t.notification.pending;
    }
    return [date(r.recorded), who, capacity, [what, data].filter(Boolean).join(' — '), outcome, r.breakGlass?.reason ?? '', info];
  };

  const body = rows.length
    ? `<table><thead><tr>${t.cols.map((c) => `<th>${h(c)}</th>`).join('')}</tr></thead><tbody>
${rows
  .map((r) => `<tr class="${r.breakGlass ? 'btg' : r.outcome === 'granted' ? '' : 'refused'}">${line(r).map((c) => `<td>${h(c)}</td>`).join('')}</tr>`)
  .join('\n')}
</tbody></table>`
    : `<p>${h(t.empty)}</p>`;
  const query = (lang: string) => {
    const pairs: [string, string][] = [['lang', lang], ['patient', opts.patient]];
    if (opts.from) pairs.push(['from', opts.from]);
    if (opts.to) pairs.push(['to', opts.to]);
    return `?${new URLSearchParams(pairs).toString()}`;
  };
  return `<!doctype html>
<html lang="${opts.lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${h(t.title)}</title>
<style nonce="${h(opts.nonce)}">
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b;max-width:80rem}
table{border-collapse:collapse;width:100%;font-size:.92rem}th,td{border-bottom:1px solid #ddd;padding:.4rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr.btg td{background:#fff3e0}tr.refused td{color:#8a1c1c}nav{float:right}p.meta{color:#555;font-size:.85rem}
</style></head><body>
<nav><a href="${h(query(t.otherLang))}" hreflang="${t.otherLang}">${h(t.other)}</a></nav>
<h1>${h(t.title)}</h1>
<p>${h(t.intro)}</p>
<p class="meta">${h(t.period)}${colon}${h(opts.from || opts.to ? `${opts.from || '…'} — ${opts.to || '…'}` : t.all)} · ${h(t.generated)} ${h(date(opts.generatedAt.toISOString()))}</p>
${body}
</body></html>
`;
}
