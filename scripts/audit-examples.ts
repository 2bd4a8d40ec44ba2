import { mkdir, readdir, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AuditEvent } from '@medplum/fhirtypes';
import { buildAuditEvents } from '../src/audit/build.js';
import type { AuditInput } from '../src/audit/audit-input.js';
import { baseInput, deny, interaction, params, permit } from '../test/audit/fixtures.js';

/**
 * The example AuditEvents of docs/AUDIT.md, one file per kind of interaction, made by the real
 * builder (`buildAuditEvents`) from the test fixtures (Dr Claire Martin, RPPS 899700000013, client
 * `dpi-web`, caregate site `chu-demo`). `npm run docs:audit-examples` writes them into
 * docs/audit-examples/; test/audit/examples.test.ts fails when the committed files differ from what
 * this produces, so the documentation cannot drift from the code.
 */
export interface AuditExample {
  /** File name in docs/audit-examples/. */
  file: string;
  /** What the example shows, for the documentation's table. */
  title: string;
  /** What `buildAuditEvents` returns for this interaction. */
  events: AuditEvent[];
}

/** The examples, in the documentation's order, with ids drawn from one deterministic sequence. */
export function auditExamples(): AuditExample[] {
  let n = 0;
  const newId = () => `6f1c4a3e-8d2b-4b7e-9a1c-${String(++n).padStart(12, '0')}`;
  const example = (file: string, title: string, input: AuditInput): AuditExample => ({
    file,
    title,
    events: buildAuditEvents({ ...input, newId }),
  });
  const read = (requestId: string) => ({ requestId, interaction: interaction('read', { id: 'obs-1', path: 'Observation/obs-1' }) });
  return [
    example('granted-read.json', 'Granted read (`IHE.BasicAudit.PatientRead`)', baseInput({ ...read('b3f1c2d4-read'), decision: permit() })),
    example(
      'search-per-patient.json',
      'Search over two patients: one event per patient, each with the query and that patient\'s evidence only',
      baseInput({
        requestId: 'b3f1c2d4-search',
        interaction: interaction('search-type', { params: params(['code', 'http://loinc.org|8867-4'], ['_count', '50']) }),
        rawQuery: 'code=http%3A%2F%2Floinc.org%7C8867-4&_count=50',
        decision: permit({ reason: 'filtered-search', rule: 'care-set', message: 'Narrowed to the care set', evidence: [], patients: [] }),
        patients: ['pat-1', 'pat-2'],
        resourceRefs: ['Observation/obs-1', 'Observation/obs-7'],
        evidenceByPatient: new Map([
          ['pat-1', [{ source: 'careteam', reference: 'CareTeam/ct-1' }]],
          ['pat-2', [{ source: 'encounter', reference: 'Encounter/enc-7' }]],
        ]),
      }),
    ),
    example(
      'create.json',
      'Create (`action: C`; agent types 110153 → 110152; the new resource as data entity)',
      baseInput({
        requestId: 'b3f1c2d4-create',
        interaction: interaction('create'),
        decision: permit(),
        httpStatus: 201,
        resourceRefs: ['Observation/obs-9'],
      }),
    ),
    example(
      'delete.json',
      'Delete (`action: D`; client = 110150 Application, server = custodian)',
      baseInput({ requestId: 'b3f1c2d4-delete', interaction: interaction('delete', { id: 'obs-9', path: 'Observation/obs-9' }), decision: permit() }),
    ),
    example(
      'refused-read.json',
      'Refused read (outcome 4, answered 404 to hide the existence of the record)',
      baseInput({
        requestId: 'b3f1c2d4-refused',
        interaction: interaction('read', { resourceType: 'Patient', id: 'pat-1', path: 'Patient/pat-1' }),
        decision: deny(),
        httpStatus: 404,
        failure: { code: 'ERR_NOT_FOUND', message: 'Resource not found' },
      }),
    ),
    example(
      'break-glass-access.json',
      'Break-the-glass access (purpose BTG + ETREAT, justification entity)',
      baseInput({
        ...read('b3f1c2d4-btg'),
        decision: permit({
          reason: 'break-glass',
          rule: 'break-glass',
          message: 'Break-the-glass grant',
          evidence: [{ source: 'break-glass', reference: undefined, reason: 'Unconscious patient in ER', until: '2025-03-04T11:00:00Z' }],
          obligations: [{ kind: 'mark-break-glass' }],
          purposeOfUse: 'BTG',
        }),
      }),
    ),
    example(
      'break-glass-start.json',
      'Break-the-glass start (companion DCM 110113 / 110127, one per patient)',
      baseInput({ requestId: 'b3f1c2d4-btg', kind: 'break-glass-start', breakGlass: { reason: 'Unconscious patient in ER', until: '2025-03-04T11:00:00Z' } }),
    ),
    example(
      'policy-reload.json',
      'Policy reload (DCM 110113 / 110129; caregate is the requestor when no administrator triggered it)',
      baseInput({
        requestId: 'policy-2f9c',
        kind: 'policy-reload',
        principal: undefined,
        clientAddress: undefined,
        httpStatus: undefined,
        patients: [],
        policy: { revision: 'sha256:4be1c0', previousRevision: 'sha256:9a07d2' },
      }),
    ),
    example(
      'failed-identification.json',
      'Failed identification (DCM 110114 / 110122, outcome 4; no user agent, since nothing the credential claims was verified)',
      baseInput({
        requestId: 'b3f1c2d4-login',
        kind: 'login-failure',
        principal: undefined,
        httpStatus: 401,
        failure: { code: 'ERR_TOKEN_EXPIRED', message: 'The access token has expired.' },
        interaction: interaction('read', { resourceType: 'Patient', id: 'pat-1', path: 'Patient/pat-1' }),
      }),
    ),
  ];
}

/**
 * The file's text: the events (an array: what the builder returns) as JSON, indented by two, with
 * every object or array that fits on a line of 140 characters written on one line (a coding, a
 * reference), so that an event reads in a screen or two.
 */
export function renderAuditExample(example: AuditExample): string {
  return `${formatJson(example.events, '', 0)}\n`;
}

const WIDTH = 140;

function formatJson(value: unknown, indent: string, prefix: number): string {
  const inline = inlineJson(value);
  if (value === null || typeof value !== 'object' || indent.length + prefix + inline.length <= WIDTH) return inline;
  const inner = `${indent}  `;
  if (Array.isArray(value)) return `[\n${value.map((v) => inner + formatJson(v, inner, 0)).join(',\n')}\n${indent}]`;
  const members = definedEntries(value).map(([k, v]) => {
    const key = `${JSON.stringify(k)}: `;
    return inner + key + formatJson(v, inner, key.length);
  });
  return `{\n${members.join(',\n')}\n${indent}}`;
}

function inlineJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(inlineJson).join(', ')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${definedEntries(value).map(([k, v]) => `${JSON.stringify(k)}: ${inlineJson(v)}`).join(', ')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** As JSON.stringify does: members whose value is undefined are left out. */
function definedEntries(value: object): [string, unknown][] {
  return Object.entries(value).filter(([, v]) => v !== undefined);
}

/** Writes every example into `dir` and removes the JSON files of examples that no longer exist. */
export async function writeAuditExamples(dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const examples = auditExamples();
  const wanted = new Set(examples.map((e) => e.file));
  for (const name of await readdir(dir)) if (name.endsWith('.json') && !wanted.has(name)) await unlink(join(dir, name));
  for (const e of examples) await writeFile(join(dir, e.file), renderAuditExample(e));
  return [...wanted];
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // Compiled to dist/scripts/: the repository is two levels up.
  const dir = resolve(import.meta.dirname, '../../docs/audit-examples');
  const files = await writeAuditExamples(dir);
  console.log(`${files.length} example files written to ${dir}`);
}
