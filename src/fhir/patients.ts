import { PATIENT_COMPARTMENT } from './generated/patient-compartment.js';
import { classifyReference, isReferenceLike, walkReferences, type ReferenceLike } from './references.js';
import { FHIR_ID, isObject } from './types.js';

/**
 * Which patients a resource belongs to. Callers make a resource visible only when every patient in
 * `ids` is visible to the user; `undetermined` is refused; `indirect` must be resolved first.
 *
 * `subjectIds` are patients linked as the subject of the resource (`subject`, `patient`,
 * `beneficiary`, Group members, List items...); `participantIds` are patients linked any other way
 * (`performer`, `author`, `asserter`, a Patient reference in any other element). A user who may see
 * only their own record must be in `subjectIds`, and `ids` must still be all theirs: being the
 * performer of someone else's Observation shows nothing (threats.md, "Special roles").
 */
export type PatientLink =
  /** Reference data: not patient-bearing. */
  | { kind: 'none' }
  | { kind: 'patients'; ids: string[]; subjectIds: string[]; participantIds: string[] }
  /** Patient-bearing, but the patient cannot be told from the content: refuse. */
  | { kind: 'undetermined'; reason: string }
  /**
   * The resource's patients also depend on the resources in `via` (`DocumentReference/x` behind a
   * Binary, the targets of a Provenance, Group members...): fetch each, run `patientsOf` on it, and
   * require all of them (see {@link resolvePatientLink}). `via` also lists `Patient/<id>` for the
   * patients already known here (`ids`), so a caller that only follows `via` misses none of them.
   */
  | { kind: 'indirect'; via: string[]; ids: string[]; subjectIds: string[]; participantIds: string[] };

export interface PatientsContext {
  /**
   * Absolute base URLs whose references count as local (`https://fhir.example/r4`). Literal
   * references under any other base are undetermined: they may name a patient the proxy cannot see.
   */
  localBases?: readonly string[];
}

/**
 * Reference data: never patient-bearing, visible to staff. A Patient reference found inside one of
 * them still makes it patient-bearing (see {@link patientsOf}).
 */
export const REFERENCE_DATA_TYPES: ReadonlySet<string> = new Set([
  // people and places of the organisation
  'Practitioner',
  'PractitionerRole',
  'Organization',
  'OrganizationAffiliation',
  'Location',
  'HealthcareService',
  'Endpoint',
  'Slot',
  // products and devices as kinds (a Device is judged on its own: it may belong to a patient)
  'Medication',
  'MedicationKnowledge',
  'Substance',
  'DeviceDefinition',
  'DeviceMetric',
  'BiologicallyDerivedProduct',
  'CatalogEntry',
  'InsurancePlan',
  'MedicinalProduct',
  'MedicinalProductAuthorization',
  'MedicinalProductContraindication',
  'MedicinalProductIndication',
  'MedicinalProductIngredient',
  'MedicinalProductInteraction',
  'MedicinalProductManufactured',
  'MedicinalProductPackaged',
  'MedicinalProductPharmaceutical',
  'MedicinalProductUndesirableEffect',
  'SubstanceNucleicAcid',
  'SubstancePolymer',
  'SubstanceProtein',
  'SubstanceReferenceInformation',
  'SubstanceSourceMaterial',
  'SubstanceSpecification',
  // terminology
  'CodeSystem',
  'ValueSet',
  'ConceptMap',
  'NamingSystem',
  'TerminologyCapabilities',
  // conformance
  'CapabilityStatement',
  'StructureDefinition',
  'StructureMap',
  'SearchParameter',
  'OperationDefinition',
  'CompartmentDefinition',
  'ImplementationGuide',
  'GraphDefinition',
  'MessageDefinition',
  'ExampleScenario',
  // knowledge and definitions
  'Questionnaire',
  'ActivityDefinition',
  'PlanDefinition',
  'Library',
  'Measure',
  'ObservationDefinition',
  'SpecimenDefinition',
  'ChargeItemDefinition',
  'EventDefinition',
  'ResearchDefinition',
  'ResearchElementDefinition',
  'ResearchStudy',
  'Evidence',
  'EvidenceVariable',
  'EffectEvidenceSynthesis',
  'RiskEvidenceSynthesis',
  'TestScript',
]);

/** Compartment parameters that make the patient the subject of the resource; all others are participants. */
const SUBJECT_PARAMS: ReadonlySet<string> = new Set(['subject', 'patient', 'beneficiary', 'individual']);

/** Types whose references in a patient link may stand for patients the caller must resolve. */
const PATIENT_CARRIERS: ReadonlySet<string> = new Set(['Group', 'Device']);

type Role = 'subject' | 'participant';

/** Collects links while one resource (with its contained resources) is read. */
class Links {
  readonly subject = new Set<string>();
  readonly participant = new Set<string>();
  /** Patients referenced outside the link elements (the catch-all). */
  readonly mentioned = new Set<string>();
  readonly via = new Set<string>();
  undetermined: string | undefined;

  constructor(
    readonly bases: readonly string[],
    readonly contained: ReadonlyMap<string, Record<string, unknown>>,
  ) {}

  fail(reason: string): void {
    this.undetermined ??= reason;
  }

  patient(id: string, role: Role): void {
    (role === 'subject' ? this.subject : this.participant).add(id);
  }

  /**
   * A value found at a patient-link element. `others` says what a literal reference to a
   * non-Patient type means there: ignored, or to be resolved (`via`).
   */
  link(value: unknown, role: Role, others: (type: string) => 'ignore' | 'via', where: string): void {
    if (!isReferenceLike(value)) {
      this.fail(`${where} is not a literal reference`);
      return;
    }
    const t = classifyReference(value, this.bases);
    switch (t.kind) {
      case 'local':
        if (t.type === 'Patient') this.patient(t.id, role);
        else if (others(t.type) === 'via') this.via.add(`${t.type}/${t.id}`);
        return;
      case 'contained': {
        const c = this.contained.get(t.id);
        // A contained Patient has no identity the care set could know; the container itself (`#`)
        // in a patient link is meaningless.
        if (c === undefined) this.fail(`${where} points at a missing contained resource`);
        else if (c.resourceType === 'Patient') this.fail(`${where} is a contained Patient`);
        // Other contained resources are judged with the container (see patientsOf).
        return;
      }
      case 'logical':
        // Identifier-only (or display-only) link: whom it names cannot be told, unless its declared
        // type rules a patient out.
        if (t.type === undefined || !REFERENCE_DATA_TYPES.has(t.type)) this.fail(`${where} has no literal reference`);
        return;
      case 'urn':
        this.fail(`${where} points at another entry of a transaction`);
        return;
      case 'external':
        this.fail(`${where} points at another server`);
        return;
      case 'invalid':
        this.fail(`${where} is not a valid reference`);
        return;
    }
  }

  /** Every value at `path` (a table path such as `Observation.subject`) as a patient link. */
  path(resource: Record<string, unknown>, path: string, role: Role, others: (type: string) => 'ignore' | 'via'): void {
    const values = evaluatePath(resource, path);
    if (values === undefined) {
      this.fail(`cannot evaluate ${path}`);
      return;
    }
    for (const v of values) this.link(v, role, others, path);
  }
}

/** Non-Patient references in a compartment link: a Group (its members) or a Device (its patient) may stand for patients. */
const carrierOthers = (type: string): 'ignore' | 'via' => (PATIENT_CARRIERS.has(type) ? 'via' : 'ignore');
/** Non-Patient references that are just other parties (Practitioner, Organization, RelatedPerson...). */
const ignoreOthers = (): 'ignore' => 'ignore';
/** References to anything that is not reference data may carry patient data and must be resolved. */
const resolveOthers = (type: string): 'ignore' | 'via' => (REFERENCE_DATA_TYPES.has(type) ? 'ignore' : 'via');

interface Rule {
  read(resource: Record<string, unknown>, links: Links): void;
  /** What a resource with no patient link at all is: reference-like (`none`) or unknown (`undetermined`). */
  empty: 'none' | 'undetermined';
}

/**
 * Explicit rules for types the CompartmentDefinition misses or gets too loosely. They replace the
 * table for their type; every type still gets the catch-all scan for Patient references.
 */
const RULES: Readonly<Record<string, Rule>> = {
  Patient: {
    read(r, l) {
      if (typeof r.id !== 'string' || !FHIR_ID.test(r.id)) l.fail('Patient without a valid id');
      else l.patient(r.id, 'subject');
      // Linked records (`replaced-by`, `seealso`, ...) are the same person: all must be visible.
      for (const v of evaluatePath(r, 'Patient.link.other') ?? []) l.link(v, 'subject', ignoreOthers, 'Patient.link.other');
    },
    empty: 'undetermined',
  },
  Binary: {
    read(r, l) {
      if (r.securityContext === undefined) l.fail('Binary without securityContext');
      else l.link(r.securityContext, 'subject', resolveOthers, 'Binary.securityContext');
    },
    empty: 'none',
  },
  Provenance: {
    read(r, l) {
      const targets = evaluatePath(r, 'Provenance.target') ?? [];
      if (targets.length === 0) l.fail('Provenance without target');
      for (const v of targets) l.link(v, 'subject', resolveOthers, 'Provenance.target');
    },
    empty: 'none',
  },
  Group: {
    read(r, l) {
      for (const v of evaluatePath(r, 'Group.member.entity') ?? []) l.link(v, 'subject', resolveOthers, 'Group.member.entity');
    },
    empty: 'none',
  },
  List: {
    read(r, l) {
      if (r.subject !== undefined) l.link(r.subject, 'subject', carrierOthers, 'List.subject');
      if (r.source !== undefined) l.link(r.source, 'participant', ignoreOthers, 'List.source');
      for (const v of evaluatePath(r, 'List.entry.item') ?? []) l.link(v, 'subject', resolveOthers, 'List.entry.item');
    },
    empty: 'none',
  },
  AuditEvent: {
    read(r, l) {
      for (const v of evaluatePath(r, 'AuditEvent.entity.what') ?? []) {
        l.link(v, 'subject', resolveOthers, 'AuditEvent.entity.what');
      }
      for (const v of evaluatePath(r, 'AuditEvent.agent.who') ?? []) l.link(v, 'participant', ignoreOthers, 'AuditEvent.agent.who');
    },
    empty: 'none',
  },
  Device: {
    read(r, l) {
      if (r.patient !== undefined) l.link(r.patient, 'subject', ignoreOthers, 'Device.patient');
    },
    empty: 'none',
  },
};

const COMPARTMENT_RULES: Readonly<Record<string, Rule>> = Object.fromEntries(
  Object.entries(PATIENT_COMPARTMENT).map(([type, links]) => [
    type,
    {
      read(r: Record<string, unknown>, l: Links) {
        for (const link of links) {
          const role: Role = SUBJECT_PARAMS.has(link.param) ? 'subject' : 'participant';
          for (const p of link.paths) l.path(r, p, role, carrierOthers);
        }
      },
      empty: 'undetermined',
    } satisfies Rule,
  ]),
);

const REFERENCE_DATA_RULE: Rule = { read() {}, empty: 'none' };

/**
 * Which patients `resource` belongs to:
 *
 * 1. the links of its type: an explicit rule (Patient, Binary, Provenance, Group, List, AuditEvent,
 *    Device), else the generated Patient-compartment table, else reference data (`none`), else
 *    `undetermined` (default deny);
 * 2. plus every other Patient reference anywhere in it, as a participant (a Patient mentioned in
 *    `focus`, an extension, a nested reference...): mentioning a patient is belonging to them;
 * 3. plus the links of its contained resources (a contained Patient is undetermined).
 *
 * Only literal references count: relative `Patient/x`, or absolute under `ctx.localBases`.
 * Identifier-only, `urn:`, foreign-server or malformed references in a patient position make the
 * result `undetermined`, never `none`.
 */
export function patientsOf(resource: unknown, ctx: PatientsContext = {}): PatientLink {
  if (!isObject(resource) || typeof resource.resourceType !== 'string') {
    return { kind: 'undetermined', reason: 'not a resource' };
  }
  const contained = indexContained(resource);
  if (contained === undefined) return { kind: 'undetermined', reason: 'malformed contained resources' };
  const links = new Links(ctx.localBases ?? [], contained);
  const empty = readOne(resource, links);
  for (const c of contained.values()) {
    if (c.resourceType === 'Patient') links.fail('contains a Patient');
    else readOne(c, links);
  }
  if (links.undetermined !== undefined) return { kind: 'undetermined', reason: links.undetermined };

  const subjectIds = [...links.subject];
  // A mention that is also a link element was already counted with its role.
  const participantIds = [...new Set([...links.participant, ...[...links.mentioned].filter((id) => !links.subject.has(id))])];
  const ids = [...new Set([...subjectIds, ...participantIds])];
  if (links.via.size > 0) {
    const via = [...new Set([...ids.map((id) => `Patient/${id}`), ...links.via])];
    return { kind: 'indirect', via, ids, subjectIds, participantIds };
  }
  if (ids.length > 0) return { kind: 'patients', ids, subjectIds, participantIds };
  return empty === 'none' ? { kind: 'none' } : { kind: 'undetermined', reason: `${resource.resourceType} without a patient reference` };
}

/** Reads one resource (the container or one contained resource); returns what "no link" means for it. */
function readOne(resource: Record<string, unknown>, links: Links): 'none' | 'undetermined' {
  const type = resource.resourceType;
  const rule =
    typeof type !== 'string'
      ? undefined
      : (RULES[type] ?? COMPARTMENT_RULES[type] ?? (REFERENCE_DATA_TYPES.has(type) ? REFERENCE_DATA_RULE : undefined));
  if (rule === undefined) {
    links.fail(`${typeof type === 'string' ? type : 'resource'} is neither in the patient compartment nor reference data`);
    return 'undetermined';
  }
  rule.read(resource, links);
  mentions(resource, links);
  return rule.empty;
}

/**
 * The catch-all: any reference to a Patient anywhere in the resource (contained resources are read
 * on their own) counts as a participant link; any reference that might be a Patient but cannot be
 * told is undetermined.
 */
function mentions(resource: Record<string, unknown>, links: Links): void {
  for (const key in resource) {
    if (key === 'contained') continue;
    walkReferences(resource[key], (ref: ReferenceLike) => {
      const t = classifyReference(ref, links.bases);
      switch (t.kind) {
        case 'local':
          if (t.type === 'Patient') links.mentioned.add(t.id);
          return;
        case 'contained':
          if (links.contained.get(t.id)?.resourceType === 'Patient') links.fail('references a contained Patient');
          return;
        case 'logical':
          if (t.type === 'Patient') links.fail('has an identifier-only Patient reference');
          return;
        case 'urn':
          if (ref.type === 'Patient') links.fail('references a Patient of another transaction entry');
          return;
        case 'external':
          if (typeof ref.reference === 'string' && /\/Patient\/[^/]+(\/_history\/[^/]+)?$/.test(ref.reference)) {
            links.fail('references a Patient on another server');
          }
          return;
        case 'invalid':
          links.fail('has a malformed reference');
          return;
      }
    });
  }
}

/** Contained resources by id; undefined when `contained` is malformed (not an array, no id, duplicate ids). */
function indexContained(resource: Record<string, unknown>): Map<string, Record<string, unknown>> | undefined {
  const out = new Map<string, Record<string, unknown>>();
  const list = resource.contained;
  if (list === undefined) return out;
  if (!Array.isArray(list)) return undefined;
  for (const c of list) {
    if (!isObject(c) || typeof c.resourceType !== 'string' || typeof c.id !== 'string' || out.has(c.id)) return undefined;
    // Contained resources cannot contain resources themselves (FHIR R4 dom-2).
    if (c.contained !== undefined) return undefined;
    out.set(c.id, c);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// FHIRPath subset

/**
 * The FHIRPath forms of the generated table (scripts/gen-compartment.mjs refuses to generate
 * others): `Type.a.b.c`, optionally followed by `.where(resolve() is Patient)`. The `where` filter
 * is honoured by the link rules themselves (only Patient references become patient ids; Group and
 * Device in a subject position are resolved), so it only needs to be recognised here. Any other
 * form, including `where(resolve() is X)` for X other than Patient, is not understood: its links
 * are undetermined, never ignored.
 */
const PATH_FORM = /^([A-Z][A-Za-z]+)((?:\.[a-z][A-Za-z]*)+)(?:\.where\(resolve\(\) is Patient\))?$/;

const parsedPaths = new Map<string, { type: string; steps: string[] } | null>();

function parsePath(path: string): { type: string; steps: string[] } | null {
  let parsed = parsedPaths.get(path);
  if (parsed === undefined) {
    const m = PATH_FORM.exec(path);
    parsed = m ? { type: m[1] as string, steps: (m[2] as string).slice(1).split('.') } : null;
    parsedPaths.set(path, parsed);
  }
  return parsed;
}

/**
 * Evaluates a table path on a resource: the values reached, arrays flattened at every step.
 * Returns undefined when the path form is not understood, does not start with the resource's
 * type, or crosses a value that is not an object.
 */
export function evaluatePath(resource: Record<string, unknown>, path: string): unknown[] | undefined {
  const parsed = parsePath(path);
  if (parsed === null || parsed.type !== resource.resourceType) return undefined;
  let current: unknown[] = [resource];
  for (const step of parsed.steps) {
    const next: unknown[] = [];
    for (const node of current) {
      if (!isObject(node)) return undefined;
      const v = node[step];
      if (v === undefined) continue;
      if (Array.isArray(v)) for (const item of v) next.push(item);
      else next.push(v);
    }
    current = next;
  }
  return current;
}

// ---------------------------------------------------------------------------------------------
// Resolution of indirect links

/**
 * Resolves an `indirect` link by reading the resources it goes through. `read` returns the
 * resource for a `Type/id` (undefined when it cannot be read, which makes the answer undetermined).
 * `Patient/<id>` entries are not read: they are already known. At most `maxDepth` levels of
 * indirection are followed; deeper chains are undetermined.
 */
export async function resolvePatientLink(
  link: PatientLink,
  read: (ref: string) => Promise<unknown>,
  ctx: PatientsContext = {},
  maxDepth = 2,
): Promise<Exclude<PatientLink, { kind: 'indirect' }>> {
  if (link.kind !== 'indirect') return link;
  if (maxDepth <= 0) return { kind: 'undetermined', reason: 'indirect links too deep' };
  const subject = new Set(link.subjectIds);
  const participant = new Set(link.participantIds);
  for (const ref of link.via) {
    if (ref.startsWith('Patient/')) continue;
    const target = await read(ref);
    if (target === undefined) return { kind: 'undetermined', reason: 'an indirect target cannot be read' };
    const resolved = await resolvePatientLink(patientsOf(target, ctx), read, ctx, maxDepth - 1);
    if (resolved.kind === 'undetermined') return resolved;
    if (resolved.kind === 'patients') {
      for (const id of resolved.subjectIds) subject.add(id);
      for (const id of resolved.participantIds) participant.add(id);
    }
  }
  const subjectIds = [...subject];
  const participantIds = [...participant];
  const ids = [...new Set([...subjectIds, ...participantIds])];
  return ids.length > 0 ? { kind: 'patients', ids, subjectIds, participantIds } : { kind: 'none' };
}
