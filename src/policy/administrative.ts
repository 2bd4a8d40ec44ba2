import type { Resource } from '@medplum/fhirtypes';
import { isWrite, patientsInUrl } from '../fhir/interaction.js';
import { classifyReference, isReferenceLike } from '../fhir/references.js';
import { isObject } from '../fhir/types.js';
import type { Decision } from './decision.js';
import { decideWrite } from './decide-write.js';
import { deny, permit, type Ctx } from './verdicts.js';

/**
 * What admission and administrative staff may see (ARCHITECTURE.md, "Roles beyond the care team"):
 * patient demographics and stay logistics, no clinical content. It is policy, so it lives here:
 * `decide()` allows only these types and {@link ADMIN_SEARCH_PARAMS}, refuses writes that carry
 * what the mask removes, and the response stage applies the mask (the `mask-clinical` obligation).
 * threats.md ("Special roles"): admin staff must not read diagnoses through Encounter fields or
 * `_has`; `decide()` refuses `_has`, includes, chains and operations.
 *
 * Allow-list, per type and at the top level of the resource; inside a kept element everything
 * is kept (a name keeps its parts, a contact keeps its telecom) except:
 * - extensions, at any depth, whose url is not in {@link ADMIN_EXTENSIONS} (patient and stay
 *   resources only: an extension may carry anything, e.g. a diagnosis);
 * - any modifier extension in a patient or stay resource withholds the resource (it changes the
 *   meaning of what it sits on; dropping it would make the rest say something false);
 * - `Reference.display`, unless the reference points at a type admin staff may read (the display
 *   of an EpisodeOfCare or a ServiceRequest names a condition);
 * - contained resources, and the `#id` references to them.
 * The narrative (`text`) is removed from every type: it renders everything, clinical content included.
 * `meta` keeps `versionId`, `lastUpdated` and `profile` only (security labels such as PSY or HIV
 * are clinical information; tags are unknown content).
 *
 * Judgement calls, for the security team to revisit:
 * - Encounter `type` and `hospitalization.dischargeDisposition` are kept (the brief and the
 *   PMSI modes of entry/exit are administrative); `serviceType` and `priority` are removed (a
 *   specialty and a triage judgement); `appointment` and `basedOn` are removed (their targets are
 *   clinical requests);
 * - Patient `deceased[x]` and `multipleBirth[x]` are kept (civil status and identity
 *   monitoring); `photo` is removed;
 * - Coverage and Account are readable (admission staff do billing); `Account.name` and
 *   `description` (free text) and `Coverage.contract` are removed. A Coverage type or class may
 *   still reveal an ALD (long-term illness) exemption: that is how French billing works.
 * - Logistics reveal some care by nature: a Location named after a ward says which ward.
 */

/** Resource types admission staff may read (masked). Everything else is withheld. */
export const ADMIN_READABLE_TYPES = [
  'Patient',
  'Encounter',
  'Coverage',
  'Account',
  'Organization',
  'Location',
  'Practitioner',
  'PractitionerRole',
  'HealthcareService',
] as const;
export type AdminReadableType = (typeof ADMIN_READABLE_TYPES)[number];

const READABLE: ReadonlySet<string> = new Set(ADMIN_READABLE_TYPES);

/** Result parameters admission staff may use on every type (`_sort` only on the type's own parameters, see {@link isAdminSort}). */
const RESULT_PARAMS = ['_count', '_sort'] as const;

/**
 * Per type, the search parameters admission staff may use. Each one searches only elements the
 * mask keeps: searching on a removed element (`reason-code`, `diagnosis`) would be an oracle for it.
 * Anything else (`_has`, `_include`, `_revinclude`, chains, `_filter`, operations) is refused by the caller.
 */
export const ADMIN_SEARCH_PARAMS: Readonly<Record<AdminReadableType, readonly string[]>> = {
  Patient: ['_id', 'identifier', 'name', 'family', 'given', 'birthdate', 'gender', 'telecom', 'address-postalcode', 'address-city', 'active', ...RESULT_PARAMS],
  Encounter: [
    '_id',
    'identifier',
    'patient',
    'subject',
    'status',
    'date',
    'class',
    'type',
    'location',
    'service-provider',
    'participant',
    'practitioner',
    'account',
    'part-of',
    ...RESULT_PARAMS,
  ],
  Coverage: ['_id', 'identifier', 'patient', 'beneficiary', 'subscriber', 'policy-holder', 'payor', 'status', 'type', ...RESULT_PARAMS],
  Account: ['_id', 'identifier', 'patient', 'subject', 'status', 'type', 'owner', 'period', ...RESULT_PARAMS],
  Organization: ['_id', 'identifier', 'name', 'type', 'active', 'partof', ...RESULT_PARAMS],
  Location: ['_id', 'identifier', 'name', 'status', 'type', 'organization', 'partof', ...RESULT_PARAMS],
  Practitioner: ['_id', 'identifier', 'name', 'family', 'given', 'active', ...RESULT_PARAMS],
  PractitionerRole: ['_id', 'identifier', 'practitioner', 'organization', 'role', 'specialty', 'location', 'service', 'active', ...RESULT_PARAMS],
  HealthcareService: ['_id', 'identifier', 'name', 'organization', 'location', 'service-type', 'active', ...RESULT_PARAMS],
};

/** Whether `name` (a bare parameter name: no modifier, no chain) may be used by admission staff on `type`. */
export function isAdminSearchParam(type: string, name: string): boolean {
  return READABLE.has(type) && ADMIN_SEARCH_PARAMS[type as AdminReadableType].includes(name);
}

/** Whether a `_sort` value (`-date,identifier`) sorts only on the type's allowed parameters (ordering leaks too). */
export function isAdminSort(type: string, value: string): boolean {
  if (!READABLE.has(type) || value === '') return false;
  const allowed = ADMIN_SEARCH_PARAMS[type as AdminReadableType];
  return value.split(',').every((key) => {
    const name = key.startsWith('-') ? key.slice(1) : key;
    return name !== '' && !(RESULT_PARAMS as readonly string[]).includes(name) && allowed.includes(name);
  });
}

const FR_CORE = 'https://hl7.fr/ig/fhir/core/StructureDefinition/';

/** Extensions kept on patient and stay resources: identity, identity monitoring and logistics (FR Core, HL7 core). */
export const ADMIN_EXTENSIONS: ReadonlySet<string> = new Set([
  'http://hl7.org/fhir/StructureDefinition/patient-birthPlace',
  'http://hl7.org/fhir/StructureDefinition/patient-nationality',
  `${FR_CORE}fr-core-patient-nationality`,
  `${FR_CORE}fr-core-identity-reliability`,
  `${FR_CORE}fr-core-patient-birthdate-update-indicator`,
  `${FR_CORE}fr-core-patient-birth-list-given-name`,
  `${FR_CORE}fr-core-patient-contact-identifier`,
  `${FR_CORE}fr-core-patient-multiple-birth`,
  `${FR_CORE}fr-core-address-insee-code`,
  `${FR_CORE}fr-core-contact-point-email-type`,
  `${FR_CORE}fr-core-estimated-discharge-date`,
]);

interface TypeRule {
  /** Top-level elements kept; undefined: all but `text` and `contained` (reference data). */
  keep?: ReadonlySet<string>;
  /** Kept elements whose own children are allow-listed too. */
  nested?: Readonly<Record<string, ReadonlySet<string>>>;
  /** Patient or stay data: extensions filtered, modifier extensions withhold. */
  patientData: boolean;
}

const EXTENSIBLE = ['extension', 'modifierExtension'];

const RULES: Readonly<Record<AdminReadableType, TypeRule>> = {
  Patient: {
    keep: new Set([
      ...EXTENSIBLE,
      'identifier',
      'active',
      'name',
      'telecom',
      'gender',
      'birthDate',
      'deceasedBoolean',
      'deceasedDateTime',
      'address',
      'maritalStatus',
      'multipleBirthBoolean',
      'multipleBirthInteger',
      'contact',
      'communication',
      'generalPractitioner',
      'managingOrganization',
      'link',
    ]),
    patientData: true,
  },
  Encounter: {
    keep: new Set([
      ...EXTENSIBLE,
      'identifier',
      'status',
      'statusHistory',
      'class',
      'classHistory',
      'type',
      'subject',
      'episodeOfCare',
      'participant',
      'period',
      'length',
      'account',
      'hospitalization',
      'location',
      'serviceProvider',
      'partOf',
    ]),
    nested: {
      // Not reAdmission, dietPreference, specialCourtesy, specialArrangement: they describe the patient's condition.
      hospitalization: new Set(['id', ...EXTENSIBLE, 'preAdmissionIdentifier', 'origin', 'admitSource', 'destination', 'dischargeDisposition']),
    },
    patientData: true,
  },
  Coverage: {
    keep: new Set([
      ...EXTENSIBLE,
      'identifier',
      'status',
      'type',
      'policyHolder',
      'subscriber',
      'subscriberId',
      'beneficiary',
      'dependent',
      'relationship',
      'period',
      'payor',
      'class',
      'order',
      'network',
      'costToBeneficiary',
      'subrogation',
    ]),
    patientData: true,
  },
  Account: {
    keep: new Set([...EXTENSIBLE, 'identifier', 'status', 'type', 'subject', 'servicePeriod', 'coverage', 'owner', 'guarantor', 'partOf']),
    patientData: true,
  },
  Organization: { patientData: false },
  Location: { patientData: false },
  Practitioner: { patientData: false },
  PractitionerRole: { patientData: false },
  HealthcareService: { patientData: false },
};

/** Kept on every type. */
const COMMON = new Set(['resourceType', 'id', 'meta', 'language']);
const META_KEPT = ['versionId', 'lastUpdated', 'profile'] as const;

/** Bounded, because the walk follows the data. */
const MAX_DEPTH = 64;

interface MaskWalk {
  patientData: boolean;
  /** Types of the (removed) contained resources, by id: a display pointing at one is judged by its type. */
  containedTypes: ReadonlyMap<string, string>;
  withhold: boolean;
}

/**
 * The administrative view of `resource`: a masked copy (the input is not modified), or undefined
 * when admission staff may not see it at all (a type not in {@link ADMIN_READABLE_TYPES}, a
 * modifier extension on patient data, a malformed resource).
 */
export function maskForAdministration(resource: Resource): Resource | undefined {
  const input: unknown = resource;
  if (!isObject(input) || typeof input.resourceType !== 'string' || !READABLE.has(input.resourceType)) return undefined;
  const rule = RULES[input.resourceType as AdminReadableType];

  const containedTypes = new Map<string, string>();
  if (Array.isArray(input.contained)) {
    for (const c of input.contained) {
      if (isObject(c) && typeof c.id === 'string' && typeof c.resourceType === 'string') containedTypes.set(c.id, c.resourceType);
    }
  }
  const walk: MaskWalk = { patientData: rule.patientData, containedTypes, withhold: false };

  const out: Record<string, unknown> = {};
  for (const key in input) {
    const base = key.startsWith('_') ? key.slice(1) : key;
    if (base === 'text' || base === 'contained') continue;
    if (!COMMON.has(base) && rule.keep !== undefined && !rule.keep.has(base)) continue;
    let value: unknown = input[key];
    if (key === 'meta') value = meta(value);
    else if (rule.nested?.[base] !== undefined) value = pick(value, rule.nested[base]);
    const cleaned = key === 'resourceType' ? value : clean(value, key, walk, 0);
    if (cleaned !== undefined) out[key] = cleaned;
  }
  if (walk.withhold) return undefined;
  return out as unknown as Resource;
}

function meta(value: unknown): unknown {
  if (!isObject(value)) return undefined;
  const out: Record<string, unknown> = {};
  for (const k of META_KEPT) if (value[k] !== undefined) out[k] = value[k];
  return out;
}

/** Keeps the allow-listed children (and their `_` siblings) of an element or of each element of an array. */
function pick(value: unknown, keep: ReadonlySet<string>): unknown {
  if (Array.isArray(value)) return value.map((v) => (Array.isArray(v) ? undefined : pick(v, keep)));
  if (!isObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const k in value) if (keep.has(k.startsWith('_') ? k.slice(1) : k)) out[k] = value[k];
  return out;
}

/** A cleaned deep copy of `value` (found under `key`), or undefined when nothing is left. */
function clean(value: unknown, key: string, walk: MaskWalk, depth: number): unknown {
  if (depth > MAX_DEPTH) {
    walk.withhold = true;
    return undefined;
  }
  if (Array.isArray(value)) {
    const items = value.map((v) => clean(v, key, walk, depth + 1));
    // `_given` and the like are aligned on their primitive array: an emptied position becomes null, not a shift.
    if (key.startsWith('_')) return items.some((v) => v !== undefined && v !== null) ? items.map((v) => v ?? null) : undefined;
    const out = items.filter((v) => v !== undefined);
    return out.length > 0 ? out : undefined;
  }
  if (!isObject(value)) return value;
  if (key === 'extension' && walk.patientData && (typeof value.url !== 'string' || !ADMIN_EXTENSIONS.has(value.url))) return undefined;
  if (key === 'modifierExtension' && walk.patientData) {
    walk.withhold = true;
    return undefined;
  }
  const out: Record<string, unknown> = {};
  for (const k in value) {
    const v = clean(value[k], k, walk, depth + 1);
    if (v !== undefined) out[k] = v;
  }
  const displayOnly = value.display !== undefined && isDisplayOnly(value);
  if (displayOnly || isReferenceLike(value)) scrubReference(out, walk);
  return Object.keys(out).length > 0 ? out : undefined;
}

function isDisplayOnly(obj: Record<string, unknown>): boolean {
  return Object.keys(obj).every((k) => k === 'display' || k === 'id' || k === 'extension');
}

/** Removes references to removed contained resources, and displays of targets admin staff may not read. */
function scrubReference(ref: Record<string, unknown>, walk: MaskWalk): void {
  const target = classifyReference(ref, []);
  let targetType: string | undefined;
  if (target.kind === 'local') targetType = target.type;
  else if (target.kind === 'logical' && typeof target.type === 'string') targetType = target.type;
  else if (target.kind === 'contained') targetType = walk.containedTypes.get(target.id);
  // Absolute URLs are not parsed here (the response stage rewrites bases): their display goes.
  if (targetType === undefined || !READABLE.has(targetType)) delete ref.display;
  if (target.kind === 'contained') delete ref.reference;
}

// ---------------------------------------------------------------------------------------------
// The decision for administrative roles

const ADMIN_TYPES: ReadonlySet<string> = new Set(ADMIN_READABLE_TYPES);

/**
 * Admission and administrative staff: demographics and stay logistics of every patient, masked;
 * no clinical resource, no search on what the mask removes, no `_has`, includes or operations.
 * Their writes (registering a patient, a stay when the policy allows) may carry nothing clinical.
 */
export function decideAdministrative(ctx: Ctx): Decision {
  const it = ctx.in.interaction;
  const r = ctx.role;
  const rule = `${r.id}.administrative`;
  const type = it.resourceType ?? '';
  if (type === 'Consent' && isWrite(it) && r.relationshipWrites.includes('Consent.opposition')) {
    // The admission office records a patient's opposition; it reads no Consent, not even the one it wrote.
    if (it.kind !== 'delete' && it.prefer.return !== 'minimal') {
      return deny('interaction-forbidden', `Role "${r.id}" records oppositions without reading Consents: send Prefer: return=minimal.`, rule);
    }
    return decideWrite(ctx);
  }
  if (!ADMIN_TYPES.has(type)) {
    return deny('role-forbidden', `Role "${r.id}" sees patient demographics and stay logistics only, not ${type || 'this interaction'}.`, rule);
  }
  if (isWrite(it)) {
    if (it.kind === 'delete' || it.kind === 'patch') return deny('interaction-forbidden', `Role "${r.id}" may register and update, not ${it.kind}.`, rule);
    if (type !== 'Patient' && !r.relationshipWrites.includes(type as never)) {
      return deny('relationship-write-forbidden', `Role "${r.id}" may not write ${type}.`, rule);
    }
    const body = it.body as Parameters<typeof maskForAdministration>[0] | undefined;
    if (!body || JSON.stringify(maskForAdministration(body)) !== JSON.stringify(body)) {
      return deny('role-forbidden', `Role "${r.id}" may not write clinical content (reasons, diagnoses, narratives).`, rule);
    }
    return decideWrite(ctx);
  }
  if (it.kind !== 'read' && it.kind !== 'vread' && it.kind !== 'search-type') {
    return deny('interaction-forbidden', `Role "${r.id}" may read and search, not ${it.kind}.`, rule);
  }
  for (const p of it.params) {
    if (p.name === '_sort' ? !isAdminSort(type, p.value) : !isAdminSearchParam(type, p.name) || p.name.includes('.')) {
      return deny('parameter-forbidden', `The search parameter ${p.name} is not available to role "${r.id}".`, rule);
    }
    if (p.modifier !== undefined && p.modifier !== 'exact') {
      return deny('parameter-forbidden', `The modifier :${p.modifier} is not available to role "${r.id}".`, rule);
    }
  }
  return permit(ctx, 'role-all-records', rule, 'Demographics and stay logistics, clinical content masked', patientsInUrl(it), []);
}

/** What a coding contractor may search with: nothing that identifies a person. */
