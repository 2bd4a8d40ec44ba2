import { describe, expect, it } from 'vitest';
import { auditConfigSchema } from '../../src/audit/config.js';

describe('audit config', () => {
  it('defaults to a strict spool under var/audit shipped to the upstream', () => {
    const c = auditConfigSchema.parse({});
    expect(c).toMatchObject({
      mode: 'strict',
      spoolDir: 'var/audit',
      groupCommitMaxDelayMs: 0,
      maxSyncsInFlight: 4,
      failureRetryMs: 1000,
      site: 'caregate',
      ship: { target: 'upstream', batchSize: 200, intervalMs: 1000, backoff: { initialMs: 500, maxMs: 60_000 } },
      review: { timeZone: 'Europe/Paris', offHoursStart: 20, offHoursEnd: 7, weekends: true, unusualMinPatients: 20, maxDays: 92, maxEvents: 50_000 },
    });
  });

  it('reports problems at their dotted path', () => {
    const r = auditConfigSchema.safeParse({
      mode: 'lazy',
      ship: { target: 'url', backoff: { initialMs: 5000, maxMs: 10 } },
      review: { timeZone: 'Mars/Olympus', maxDays: 0 },
      readRoles: ['dim'],
    });
    expect(r.success).toBe(false);
    const paths = r.error!.issues.map((i) => i.path.join('.'));
    expect(paths).toEqual(expect.arrayContaining(['mode', 'ship.url', 'ship.backoff.initialMs', 'review.timeZone', 'review.maxDays', '']));
    expect(r.error!.issues.find((i) => i.path.length === 0)!.message).toMatch(/readRoles/);
  });

  it('accepts a separate audit server with its own headers', () => {
    const c = auditConfigSchema.parse({ ship: { target: 'url', url: 'https://audit.chu.example/fhir/', headers: { authorization: 'Bearer x' } } });
    expect(c.ship.url).toBe('https://audit.chu.example/fhir');
    expect(auditConfigSchema.safeParse({ ship: { url: 'https://audit.chu.example/fhir' } }).success).toBe(false);
  });
});
