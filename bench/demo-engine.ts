/**
 * The measurements behind docs/DEMO-HOSPITAL.md: build, load and search timings of the embedded
 * demo engine, against medplum's own MemoryRepository. Prints a table.
 *
 *   npm run bench:demo
 *   DEMO_MEASURE_PATIENTS=10000 DEMO_MEASURE_MEDPLUM=0 npm run bench:demo
 */
import { parseSearchRequest } from '@medplum/core';
import { MemoryRepository } from '@medplum/fhir-router';
import { DemoRepository, loadFhirDefinitions } from '../src/demo/engine.js';
import { startDemoFhir } from '../src/demo/server.js';
import { buildHospital, seedHospital } from '../src/demo/seed.js';
import { loadPolicy } from '../src/policy/load.js';
import { measureCareSets } from './caresets.js';

const patients = Number(process.env['DEMO_MEASURE_PATIENTS'] ?? '2000');
const withMedplum = process.env['DEMO_MEASURE_MEDPLUM'] !== '0';
const NOW = Date.UTC(2026, 0, 15, 12);

const QUERIES = [
  'Observation?subject=Patient/pat-00042',
  'Observation?patient=Patient/pat-00042&_count=100',
  'Patient?identifier=https://chu-demo.example/fhir/ipp|80100050',
  'CareTeam?participant=Practitioner/prat-martin&status=active',
  'Encounter?participant=Practitioner/prat-martin',
  'Practitioner?identifier=https://rpps.esante.gouv.fr|99700000013',
  'PractitionerRole?practitioner=Practitioner/prat-martin&active=true',
  'Encounter?patient=pat-dupont&_include=Encounter:participant&_revinclude=CareTeam:encounter',
  'Observation?code=http://loinc.org|8867-4&_count=20',
  'Observation?date=ge2026-01-10&_count=20',
  'Patient?name=dupont',
  'Patient?_has:Condition:patient:code=B20&_count=20',
  // What caregate asks to resolve the care sets of Dr Martin (ward) and Dr Roux (emergency).
  'CareTeam?participant=Practitioner/prat-martin,PractitionerRole/role-martin-cardio,Organization/org-cardio&status=active&_count=1000',
  'Encounter?participant=Practitioner/prat-martin,PractitionerRole/role-martin-cardio&status=arrived,triaged,in-progress,onleave,finished&_count=1000',
  'Encounter?participant=Practitioner/prat-roux,PractitionerRole/role-roux-urg&status=arrived,triaged,in-progress,onleave,finished&_count=1000',
] as const;

async function time(fn: () => Promise<unknown>, runs: number): Promise<number> {
  await fn();
  const t = performance.now();
  for (let i = 0; i < runs; i++) await fn();
  return (performance.now() - t) / runs;
}

async function main(): Promise<void> {
  const lines: string[] = [];
  let t = performance.now();
  loadFhirDefinitions();
  lines.push(`definitions loaded in ${Math.round(performance.now() - t)} ms`);
  const heap0 = process.memoryUsage().heapUsed;
  const indexed = new DemoRepository();
  const stats = await seedHospital(indexed, { patients, now: NOW });
  lines.push(`${patients} patients: ${stats.resources} resources, built in ${stats.buildMs} ms, loaded + hot indexes in ${stats.loadMs} ms, heap +${Math.round((process.memoryUsage().heapUsed - heap0) / 1e6)} MB`);
  const resources = buildHospital({ patients, now: NOW });
  const scanned = new DemoRepository({ indexing: false });
  scanned.load(resources, new Date(NOW));
  let medplum: MemoryRepository | undefined;
  if (withMedplum) {
    medplum = new MemoryRepository();
    t = performance.now();
    for (const r of buildHospital({ patients, now: NOW })) await medplum.createResource(r);
    lines.push(`medplum MemoryRepository load: ${Math.round(performance.now() - t)} ms`);
  }
  lines.push('', '| query | total | indexed (ms) | without index (ms) | medplum MemoryRepository (ms) |', '|---|---|---|---|---|');
  for (const q of QUERIES) {
    const total = (await indexed.search(parseSearchRequest(q))).total;
    const a = await time(() => indexed.search(parseSearchRequest(q)), 20);
    const b = await time(() => scanned.search(parseSearchRequest(q)), 3);
    let c = '-';
    if (medplum && !q.includes('_has') && !q.includes('date=') && !q.includes('name=') && !q.includes('_count=1000')) {
      const m = medplum;
      t = performance.now();
      await m.search(parseSearchRequest(q)).catch(() => undefined);
      c = (performance.now() - t).toFixed(0);
    }
    lines.push(`| \`${q}\` | ${total} | ${a.toFixed(2)} | ${b.toFixed(1)} | ${c} |`);
  }
  const fhir = await startDemoFhir({ seed: { patients, now: NOW } });
  lines.push('', '| over HTTP (fetch, keep-alive) | ms |', '|---|---|');
  for (const q of [QUERIES[1], QUERIES[3], 'Patient/pat-dupont', 'metadata']) {
    const ms = await time(async () => (await fetch(`${fhir.url}/${q}`)).arrayBuffer(), 20);
    lines.push(`| \`${q}\` | ${ms.toFixed(2)} |`);
  }
  // The personas' care sets as caregate resolves them (default policy), over HTTP.
  const relationships = loadPolicy('config/policy.yaml').policy.careRelationships;
  const sets = await measureCareSets(fhir.url, ['prat-martin', 'prat-bernard', 'prat-girard', 'prat-roux'].map((id) => `Practitioner/${id}`), relationships, 10, NOW);
  lines.push('', '| care set (caregate resolver, over HTTP) | patients | lookups | resolution (ms) | cached (KB) |', '|---|---|---|---|---|');
  for (const m of sets) lines.push(`| ${m.practitioner} | ${m.patients} | ${m.lookups} | ${m.medianMs} | ${(m.bytes / 1024).toFixed(1)} |`);
  await fhir.close();
  process.stdout.write(`\n${lines.join('\n')}\n`);
}

await main();
