import type { HumanName, Meta, Patient, Practitioner } from '@medplum/fhirtypes';
import { LRUCache } from 'lru-cache';
import type { FhirClient } from '../upstream/client.js';
import type { PatientFacts } from './detectors.js';

/**
 * What the patient rules need to know of a record, looked up with caregate's own credential and
 * kept in memory for a few minutes (never on disk, never logged): a Patient's labels and family
 * names, a Practitioner's family names. Lookups are batched (`Patient?_id=a,b,…`). The alerts ask
 * after the request's AuditEvents are durable; the audit stage asks for the Patient labels of the
 * interaction's patients to set its severity, so a patient not yet cached costs one batched search
 * on that request's path (and none for `lookupCacheMinutes` after).
 */
export interface Facts {
  patient(id: string): Promise<PatientFacts | undefined>;
  /** Family names of `Practitioner/<id>` (normalised); empty when unknown. */
  surnamesOf(practitionerRef: string): Promise<readonly string[]>;
}

const BATCH = 50;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export function createFacts(opts: { client: FhirClient; ttlMs: number; max?: number }): Facts {
  const patients = new LRUCache<string, Promise<PatientFacts | undefined>>({ max: opts.max ?? 10_000, ttl: opts.ttlMs });
  const practitioners = new LRUCache<string, Promise<readonly string[]>>({ max: opts.max ?? 10_000, ttl: opts.ttlMs });
  let queue = new Map<string, (f: PatientFacts | undefined) => void>();
  let scheduled = false;

  async function flush(): Promise<void> {
    scheduled = false;
    const batch = queue;
    queue = new Map();
    const ids = [...batch.keys()];
    for (let i = 0; i < ids.length; i += BATCH) {
      const slice = ids.slice(i, i + BATCH);
      let found: Patient[] = [];
      try {
        found = await opts.client.searchAll<Patient>('Patient', { _id: slice.join(','), _count: String(BATCH) }, 2);
      } catch {
        // A failed lookup is retried at the next access: drop the entries rather than cache a miss.
        for (const id of slice) patients.delete(id);
      }
      const byId = new Map(found.filter((p) => p.resourceType === 'Patient' && p.id).map((p) => [p.id!, p]));
      for (const id of slice) {
        const p = byId.get(id);
        batch.get(id)!(p ? { labels: labelsOf(p.meta), surnames: surnameKeys(p.name) } : undefined);
      }
    }
  }

  return {
    patient(id) {
      if (!ID.test(id)) return Promise.resolve(undefined);
      let p = patients.get(id);
      if (!p) {
        p = new Promise((resolve) => queue.set(id, resolve));
        patients.set(id, p);
        if (!scheduled) {
          scheduled = true;
          setImmediate(() => void flush());
        }
      }
      return p;
    },
    surnamesOf(ref) {
      const m = /^Practitioner\/([A-Za-z0-9\-.]{1,64})$/.exec(ref);
      if (!m) return Promise.resolve([]);
      let p = practitioners.get(ref);
      if (!p) {
        p = opts.client.read<Practitioner>('Practitioner', m[1]!).then(
          (r) => (r?.resourceType === 'Practitioner' ? surnameKeys(r.name) : []),
          () => {
            practitioners.delete(ref);
            return [];
          },
        );
        practitioners.set(ref, p);
      }
      return p;
    },
  };
}

/** `system|code` of every label in `meta.security` and `meta.tag`. */
export function labelsOf(meta: Meta | undefined): string[] {
  return [...(meta?.security ?? []), ...(meta?.tag ?? [])].filter((c) => c.system && c.code).map((c) => `${c.system}|${c.code}`);
}

/** Particles that do not make two family names the same (DE, LA, LE, …). */
const PARTICLES = new Set(['DE', 'DU', 'DES', 'LA', 'LE', 'LES', 'D', 'L', 'VAN', 'VON', 'DA', 'DI', 'DEL', 'DOS', 'EL', 'BEN', 'MAC', 'MC', 'ST', 'SAINT', 'SAINTE']);

/**
 * Family names as comparable keys: every `family` of every name (usual, official, maiden), upper
 * case without accents, and each part of a compound name ("MARTIN-DURAND" gives MARTIN-DURAND,
 * MARTIN and DURAND) longer than two letters and not a particle.
 */
export function surnameKeys(names: readonly HumanName[] | undefined): string[] {
  const out = new Set<string>();
  for (const n of names ?? []) {
    if (!n.family) continue;
    const whole = n.family
      .normalize('NFD')
      .replace(/\p{M}/gu, '')
      .toUpperCase()
      .replace(/[^A-Z' -]/g, '')
      .trim();
    if (whole.length > 2) out.add(whole.replace(/\s+/g, ' '));
    for (const part of whole.split(/[\s'-]+/)) if (part.length > 2 && !PARTICLES.has(part)) out.add(part);
  }
  return [...out];
}
