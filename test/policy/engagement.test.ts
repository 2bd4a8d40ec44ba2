import { describe, expect, it } from 'vitest';
import { categoriesOf, contractOf, contractorOf, engagementActive, engagementFor, engagementSchema } from '../../src/policy/engagement.js';
import { practitioner } from '../audit/fixtures.js';

const VALID = {
  id: 'optim-codage-2024',
  contractor: 'coding-contractor',
  supervisingDim: { practitioner: 'Practitioner/dim-bernard', name: 'Dr Bernard (DIM)' },
  cnilAuthorisation: 'DR-2024-123',
  validFrom: '2024-01-01',
  validUntil: '2024-12-31',
  stays: ['c3b2a190-8e7d-4c6b-a5f4-e3d2c1b0a987', 'enc-2'],
};

function issues(input: unknown): { path: string; message: string }[] {
  const r = engagementSchema.safeParse(input);
  return r.success ? [] : r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
}

function without(key: keyof typeof VALID): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...VALID };
  delete copy[key];
  return copy;
}

describe('engagementSchema', () => {
  it('accepts a complete engagement and defaults dateMode to month', () => {
    const e = engagementSchema.parse(VALID);
    expect(e.dateMode).toBe('month');
    expect(e.stays).toEqual(VALID.stays);
  });

  it('accepts stays given as a Group and a staff member as contractor', () => {
    const e = engagementSchema.parse({ ...VALID, contractor: 'Practitioner/ext-coder-1', stays: { group: 'Group/optim-2024-q1' }, dateMode: 'year' });
    expect(e.stays).toEqual({ group: 'Group/optim-2024-q1' });
  });

  it('refuses an engagement without a supervising DIM physician, and says why', () => {
    const [issue] = issues(without('supervisingDim'));
    expect(issue?.path).toBe('supervisingDim');
    expect(issue?.message).toContain('R6113-5');
    expect(issue?.message).toContain('2013-037');
  });

  it('refuses an engagement with neither a contract reference nor a CNIL authorisation, and says why', () => {
    const [issue] = issues(without('cnilAuthorisation'));
    expect(issue?.path).toBe('contractReference');
    expect(issue?.message).toContain('R6113-5-2');
    expect(issue?.message).toContain('2023-498');
    expect(issue?.message).toContain('2013-037');
  });

  it.each([
    ['empty', { ...VALID, cnilAuthorisation: '' }],
    ['blank', { ...VALID, cnilAuthorisation: '   ' }],
  ])('refuses an %s CNIL authorisation reference, and says why', (_name, input) => {
    const [issue] = issues(input);
    expect(issue?.path).toBe('cnilAuthorisation');
    expect(issue?.message).toContain('2013-037');
    expect(issue?.message).toContain('R6113-5');
  });

  it.each([
    ['ends before it starts', { validFrom: '2024-06-01', validUntil: '2024-05-31' }, 'validUntil'],
    ['ends the day it starts', { validFrom: '2024-06-01', validUntil: '2024-06-01' }, 'validUntil'],
    ['has no end date', { validUntil: undefined }, 'validUntil'],
    ['has an impossible date', { validUntil: '2024-02-30' }, 'validUntil'],
    ['has a date-time instead of a date', { validFrom: '2024-01-01T00:00:00Z' }, 'validFrom'],
    ['lists no stay', { stays: [] }, 'stays'],
    ['lists a stay twice', { stays: ['enc-2', 'enc-2'] }, 'stays'],
    ['lists a malformed stay id', { stays: ['Encounter/enc-2'] }, 'stays.0'],
    ['names a Group malformed', { stays: { group: 'enc-group' } }, 'stays.group'],
    ['has a DIM physician that is not a Practitioner reference', { supervisingDim: { practitioner: 'dim-bernard' } }, 'supervisingDim.practitioner'],
    ['names a contractor of neither form', { contractor: 'Organization/prestataire' }, 'contractor'],
    ['has an unknown date mode', { dateMode: 'day' }, 'dateMode'],
    ['has an unknown key', { scope: 'all' }, ''],
  ])('refuses an engagement that %s', (_name, patch, path) => {
    const found = issues({ ...VALID, ...patch });
    expect(found.length).toBeGreaterThan(0);
    expect(found.map((i) => i.path)).toContain(path);
  });
});

describe('contractorOf', () => {
  it('tells a role from a staff member', () => {
    expect(contractorOf({ contractor: 'coding-contractor' })).toEqual({ kind: 'role', role: 'coding-contractor' });
    expect(contractorOf({ contractor: 'Practitioner/ext-1' })).toEqual({ kind: 'staff', practitioner: 'Practitioner/ext-1' });
  });
});

describe('engagementActive', () => {
  const e = { validFrom: '2024-01-01', validUntil: '2024-12-31' };

  it.each([
    ['the day before it starts, in Paris', '2023-12-31T22:30:00Z', false],
    ['its first minute in Paris (still 2023 in UTC)', '2023-12-31T23:30:00Z', true],
    ['in the middle', '2024-06-15T12:00:00Z', true],
    ['its last evening in Paris', '2024-12-31T22:30:00Z', true],
    ['after midnight in Paris (still 31 December in UTC)', '2024-12-31T23:30:00Z', false],
    ['long after', '2026-01-01T00:00:00Z', false],
  ])('is %s → %s', (_name, now, expected) => {
    expect(engagementActive(e, new Date(now))).toBe(expected);
  });

  it('reads days in the given time zone', () => {
    expect(engagementActive(e, new Date('2024-12-31T23:30:00Z'), 'UTC')).toBe(true);
    expect(engagementActive(e, new Date('2025-01-01T02:30:00Z'), 'America/Cayenne')).toBe(true);
  });

  it('is not active at an invalid date', () => {
    expect(engagementActive(e, new Date('nonsense'))).toBe(false);
  });
});

describe('engagements under the 2023 rules (CSP R6113-5-2)', () => {
  const CONTRACT = { ...VALID, cnilAuthorisation: undefined, contractReference: 'Contrat DIM-2026-007', staff: ['Practitioner/ext-1'] };

  it('accepts a contract with its named staff, and defaults to de-identified access to the coding categories', () => {
    const e = engagementSchema.parse(CONTRACT);
    expect(e.access).toBe('de-identified');
    expect(categoriesOf(e)).toContain('Condition');
    expect(contractOf(e)).toBe('Contrat DIM-2026-007');
    expect(contractOf(engagementSchema.parse(VALID))).toBe('CNIL DR-2024-123');
  });

  it('refuses a contract without its individually authorised staff, unless the contractor is one person', () => {
    const [issue] = issues({ ...CONTRACT, staff: undefined });
    expect(issue).toMatchObject({ path: 'staff' });
    expect(issue!.message).toContain('R6113-5-2');
    expect(issues({ ...CONTRACT, staff: undefined, contractor: 'Practitioner/ext-1' })).toEqual([]);
    expect(issues({ ...CONTRACT, staff: ['Practitioner/ext-1', 'Practitioner/ext-1'] }).map((i) => i.path)).toContain('staff');
  });

  it('allows identified access only under a contract, and de-identified access only to what caregate de-identifies', () => {
    expect(issues({ ...CONTRACT, access: 'identified', categories: ['Encounter', 'DocumentReference'] })).toEqual([]);
    expect(issues({ ...VALID, access: 'identified' }).map((i) => i.path)).toContain('access');
    expect(issues({ ...CONTRACT, categories: ['DocumentReference'] }).map((i) => i.path)).toContain('categories.0');
    expect(issues({ ...CONTRACT, access: 'identified', categories: ['AuditEvent'] }).map((i) => i.path)).toContain('categories.0');
  });

  it('gives the engagement to its listed staff only', () => {
    const e = engagementSchema.parse({ ...CONTRACT, contractor: 'coding-contractor', validFrom: '2024-01-01', validUntil: '2030-12-31' });
    const policy = { engagements: [e], timeZone: 'Europe/Paris' };
    const now = new Date('2026-03-03T10:00:00Z');
    const who = (ref: string) => practitioner({ practitioner: ref, policyRoles: ['coding-contractor'] });
    expect(engagementFor(policy, who('Practitioner/ext-1'), 'coding-contractor', now)?.id).toBe(e.id);
    expect(engagementFor(policy, who('Practitioner/ext-2'), 'coding-contractor', now)).toBeUndefined();
  });
});
