/**
 * The care sets of the demo's clinical personas, resolved by caregate's own resolver
 * (`relate/careset.ts`) against a running FHIR server: how many patients each holds, from which
 * source, how many upstream lookups and bytes a resolution costs, and how long it takes. Used by
 * `npm run bench:demo` and printed by `npm run bench` (what the benchmark's clinicians carry).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { referenceClaims, type PractitionerPrincipal } from '../src/identity/principal.js';
import { createPrincipalResolver } from '../src/identity/resolve.js';
import type { CareRelationshipsConfig } from '../src/relate/config.js';
import { createCareSetResolver } from '../src/relate/careset.js';
import { createFhirClient } from '../src/upstream/client.js';

export interface CareSetMeasure {
  practitioner: string;
  patients: number;
  bySource: Record<string, number>;
  /** Upstream searches one resolution makes (CareTeam levels + Encounter). */
  lookups: number;
  /** Median wall time of a fresh resolution over `runs`, ms. */
  medianMs: number;
  /** A generated patient of the set (`pat-NNNNN`, the smallest), for the scenarios that name one. */
  sample: string | undefined;
  /** Heap one cached copy of this set holds, bytes. */
  bytes: number;
}

/** A practitioner principal as identity resolution builds it (caregate's resolver): her active roles and services. */
export async function practitionerPrincipal(baseUrl: string, practitioner: string): Promise<PractitionerPrincipal> {
  const client = createFhirClient({ baseUrl, timeoutMs: 30_000 });
  const claims = referenceClaims(practitioner, 'bench');
  const resolved = await createPrincipalResolver({ client, practitionerIdentifierSystems: [], ttlSeconds: 0, max: 1 }).resolve({ claims, staff: undefined, certificate: undefined });
  if (resolved.kind !== 'practitioner') throw new Error(`${practitioner} resolves to a ${resolved.kind}`);
  return { ...resolved, method: 'jwt', claims, certificate: undefined, policyRoles: ['clinician'] };
}

/** Resolves each practitioner's care set `runs` times afresh (after one warm-up). */
export async function measureCareSets(
  baseUrl: string,
  practitioners: readonly string[],
  config: CareRelationshipsConfig,
  runs = 10,
  /** The resolver's clock (epoch ms): the seed's `now` when the hospital was built for another day. */
  now?: number,
): Promise<CareSetMeasure[]> {
  const client = createFhirClient({ baseUrl, timeoutMs: 60_000 });
  const out: CareSetMeasure[] = [];
  for (const practitioner of practitioners) {
    const resolver = createCareSetResolver({ client, config: () => config, ...(now === undefined ? {} : { now: () => now }) });
    const principal = await practitionerPrincipal(baseUrl, practitioner);
    const set = await resolver.refresh(principal);
    const lookups = resolver.lookups;
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await resolver.refresh(principal);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    const bySource: Record<string, number> = {};
    for (const evidence of set.patients.values()) {
      for (const source of new Set(evidence.map((e) => e.source))) bySource[source] = (bySource[source] ?? 0) + 1;
    }
    const sample = [...set.patients.keys()].filter((id) => /^pat-\d+$/.test(id)).sort()[0];
    out.push({
      practitioner,
      patients: set.patients.size,
      bySource,
      lookups,
      medianMs: Math.round(times[Math.floor(times.length / 2)]! * 10) / 10,
      sample,
      bytes: await retainedBytes(() => resolver.refresh(principal)),
    });
  }
  return out;
}

/** The garbage collector, exposed at run time (the bench is started without --expose-gc). */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** Heap held by one value `make` builds: 20 copies kept, measured after full collections. */
async function retainedBytes(make: () => Promise<unknown>, copies = 20): Promise<number> {
  const gc = collector();
  const kept: unknown[] = [];
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < copies; i++) kept.push(await make());
  gc();
  const after = process.memoryUsage().heapUsed;
  kept.length = 0;
  return Math.max(0, Math.round((after - before) / copies));
}
