import type { AuditEvent } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { buildAuditEvents } from '../../src/audit/build.js';
import type { AuditInput } from '../../src/audit/audit-input.js';
import { notificationEvent } from '../../src/audit/notification-event.js';
import { pageLanguage, renderAccessHistory } from '../../src/audit/patient-page.js';
import { patientAccessOf, reduceForPatients } from '../../src/audit/patient-view.js';
import type { RelatedPersonPrincipal } from '../../src/identity/principal.js';
import { deny, interaction, patientPrincipal, permit, practitioner } from './fixtures.js';

/**
 * Who saw my record: an AuditEvent reduced to what the patient may know, and the page that lists
 * them in her language. Nothing about other patients, nothing about the infrastructure.
 */
const base = { requestId: 'req-1', recorded: '2026-03-04T10:00:00.000Z', publicBaseUrl: 'https://fhir.chu.example/fhir', site: 'chu-demo', clientAddress: '10.0.0.5', clientId: 'dpi-web' };
const event = (input: Partial<AuditInput>): AuditEvent => buildAuditEvents({ ...base, patients: ['pat-1'], ...input } as AuditInput)[0]!;
const mine = new Set(['pat-1']);

describe('the patient’s reduced AuditEvent', () => {
  it('keeps when, who by name and profession, which kind of data, the outcome and why', () => {
    const e = event({ principal: practitioner(), interaction: interaction('read', { id: 'o1', path: 'Observation/o1' }), decision: permit(), httpStatus: 200 });
    const a = patientAccessOf(e, mine)!;
    expect(a).toMatchObject({ recorded: base.recorded, kind: 'access', who: { as: 'professional', name: 'Claire MARTIN', professions: ['10'] }, action: 'read', data: ['Observation'], outcome: 'granted' });
    const r = reduceForPatients(e, mine)!;
    expect(r.agent).toEqual([expect.objectContaining({ name: 'Claire MARTIN', role: [{ coding: [expect.objectContaining({ code: '10', display: 'Médecin' })] }] })]);
  });

  it('carries nothing about the infrastructure or internal ids: no address, client, request id, rule, site, query, resource id', () => {
    const e = event({ principal: practitioner(), interaction: interaction('search-type', { params: [{ name: 'code', modifier: undefined, value: '8867-4' }], path: 'Observation' }), rawQuery: 'code=8867-4&patient=pat-1', decision: permit(), httpStatus: 200, resourceRefs: ['Observation/o1'] });
    const text = JSON.stringify(reduceForPatients(e, mine));
    for (const hidden of ['10.0.0.5', 'dpi-web', 'req-1', 'chu-demo', 'fhir.chu.example', 'Observation/o1', 'prat-martin', '899700000013', 'jti-123', 'code=8867-4', 'rule']) {
      expect(text, hidden).not.toContain(hidden);
    }
  });

  it('names no other patient of an event about several, nor their Patient resource', () => {
    const e = event({ principal: practitioner(), patients: ['pat-1', 'pat-2'], interaction: interaction('read', { resourceType: 'Provenance', id: 'pv', path: 'Provenance/pv' }), resourceRefs: ['Provenance/pv', 'Patient/pat-2'], decision: permit(), httpStatus: 200 });
    const r = reduceForPatients(e, mine)!;
    expect(JSON.stringify(r)).not.toContain('pat-2');
    expect(r.entity!.filter((x) => x.role?.code === '1').map((x) => x.what?.reference)).toEqual(['Patient/pat-1']);
  });

  it('does not name a person who is neither a professional nor hers: another patient, a relative refused', () => {
    const other = { ...patientPrincipal(), patient: 'Patient/pat-9', claims: { ...patientPrincipal().claims, displayName: 'Albert X' } };
    const refused = event({ principal: other, interaction: interaction('read', { resourceType: 'Patient', id: 'pat-1', path: 'Patient/pat-1' }), decision: deny({ refuseAs: undefined }), httpStatus: 403 });
    expect(patientAccessOf(refused, mine)!.who).toEqual({ as: 'other-person', name: undefined, professions: [] });
    expect(JSON.stringify(reduceForPatients(refused, mine))).not.toContain('Albert');
    const rp: RelatedPersonPrincipal = { kind: 'related-person', method: 'jwt', claims: { ...patientPrincipal().claims, displayName: 'Pierre X' }, certificate: undefined, relatedPerson: 'RelatedPerson/rp', policyRoles: ['mandated'] };
    const mandated = event({ principal: rp, interaction: interaction('read', { resourceType: 'Patient', id: 'pat-1', path: 'Patient/pat-1' }), decision: permit({ reason: 'mandate', purposeOfUse: 'PWATRNY', evidence: [] }), httpStatus: 200 });
    expect(patientAccessOf(mandated, mine)!.who).toEqual({ as: 'mandated', name: 'Pierre X', professions: [] });
    expect(patientAccessOf(event({ principal: rp, decision: deny({ refuseAs: undefined }), httpStatus: 403 }), mine)!.who.name).toBeUndefined();
  });

  it('keeps a break-the-glass opening with its reason, and the notification that followed', () => {
    const opened = buildAuditEvents({ ...base, kind: 'break-glass-start', principal: practitioner(), patients: ['pat-1'], breakGlass: { reason: 'Unconscious patient' }, ids: ['btg-1'] })[0]!;
    expect(patientAccessOf(opened, mine)).toMatchObject({ kind: 'break-glass', breakGlass: { reason: 'Unconscious patient' } });
    const told = notificationEvent({ id: 'n-1', recorded: base.recorded, site: 'x', requestId: 'r', patients: ['pat-1'], of: 'btg-1', status: 'sent', channel: 'communication', recipients: ['patient', 'attending'] });
    expect(patientAccessOf(told, mine)).toMatchObject({ kind: 'notification', who: { as: 'caregate' }, notification: { of: 'btg-1', status: 'sent', recipients: ['patient', 'attending'] } });
  });

  it('has no view of an event about another patient only, or of events that are not accesses', () => {
    expect(reduceForPatients(event({ principal: practitioner(), patients: ['pat-2'] }), mine)).toBeUndefined();
    expect(reduceForPatients(buildAuditEvents({ ...base, kind: 'policy-reload', patients: [], policy: { revision: 'r' } })[0]!, mine)).toBeUndefined();
  });
});

describe('the page “who saw my record”', () => {
  const rows = [
    patientAccessOf(buildAuditEvents({ ...base, kind: 'break-glass-start', principal: practitioner(), patients: ['pat-1'], breakGlass: { reason: '<script>alert(1)</script> inconscient' }, ids: ['btg-1'] })[0]!, mine)!,
    patientAccessOf(notificationEvent({ id: 'n-1', recorded: base.recorded, site: 'x', requestId: 'r', patients: ['pat-1'], of: 'btg-1', status: 'sent', channel: 'communication', recipients: ['patient', 'attending'] }), mine)!,
  ];
  const opts = { nonce: 'n0nce', timeZone: 'Europe/Paris', generatedAt: new Date(base.recorded), patient: 'pat-1', viewer: 'patient' as const, from: '', to: '' };

  it('speaks French by default, English when asked, and escapes what users typed', () => {
    const fr = renderAccessHistory(rows, { ...opts, lang: 'fr' });
    expect(fr).toContain('<html lang="fr">');
    expect(fr).toContain('Qui a consulté mon dossier ?');
    expect(fr).toContain('Information envoyée (vous, votre médecin)');
    expect(fr).toContain('&lt;script&gt;');
    expect(fr).not.toContain('<script>');
    expect(fr).toContain('<style nonce="n0nce">');
    expect(renderAccessHistory(rows, { ...opts, lang: 'en' })).toContain('Who saw my record?');
  });

  it('calls the patient “you” on her own page, and names her mandated person as such', () => {
    const own = patientAccessOf(event({ principal: patientPrincipal(), interaction: interaction('read', { resourceType: 'Patient', id: 'pat-1', path: 'Patient/pat-1' }), decision: permit({ reason: 'own-record' }), httpStatus: 200 }), mine)!;
    expect(renderAccessHistory([own], { ...opts, lang: 'fr' })).toContain('<td>Vous</td>');
    expect(renderAccessHistory([own], { ...opts, lang: 'en', viewer: 'mandated' })).toContain('<td>The person whose record it is</td>');
  });

  it('takes the language from ?lang=, else Accept-Language, else French', () => {
    expect(pageLanguage('en', 'fr')).toBe('en');
    expect(pageLanguage(undefined, 'de-DE,en;q=0.8,fr;q=0.5')).toBe('en');
    expect(pageLanguage(undefined, 'en;q=0.2,fr')).toBe('fr');
    expect(pageLanguage(undefined, undefined)).toBe('fr');
  });
});
