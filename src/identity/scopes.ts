import type { SmartScope } from './principal.js';

/**
 * SMART App Launch v2 scopes: `(patient|user|system)/(Type|*).[c][r][u][d][s][?param=value&...]`,
 * plus the v1 suffixes `.read` (= `rs`), `.write` (= `cud`) and `.*` (= `cruds`).
 *
 * Scopes that do not start with `patient/`, `user/` or `system/` (`openid`, `fhirUser`,
 * `launch/patient`, `offline_access`, `profile`, PSC `scope_all`, ...) grant no FHIR access and are
 * ignored. A scope that does start with one of those contexts must parse completely: out-of-order or
 * unknown permission letters, an empty restriction, a malformed type are refused rather than read
 * generously.
 */

export type ScopePermission = 'c' | 'r' | 'u' | 'd' | 's';
export type ScopeContext = SmartScope['context'];

/** A syntactically wrong SMART resource scope. The message names the problem, not the token. */
export class ScopeSyntaxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScopeSyntaxError';
  }
}

const CONTEXTS: ReadonlySet<string> = new Set(['patient', 'user', 'system']);
const V1: Readonly<Record<string, string>> = { read: 'rs', write: 'cud', '*': 'cruds' };
const ORDER = 'cruds';
const RESOURCE_TYPE = /^(\*|[A-Z][A-Za-z]{1,63})$/;

/**
 * Parses one scope. Returns `undefined` for scopes that are not FHIR resource scopes.
 * @throws ScopeSyntaxError for a malformed resource scope.
 */
export function parseSmartScope(raw: string): SmartScope | undefined {
  const slash = raw.indexOf('/');
  if (slash === -1 || !CONTEXTS.has(raw.slice(0, slash))) return undefined;
  const context = raw.slice(0, slash) as ScopeContext;
  const rest = raw.slice(slash + 1);
  const q = rest.indexOf('?');
  const body = q === -1 ? rest : rest.slice(0, q);
  const dot = body.lastIndexOf('.');
  if (dot <= 0) throw new ScopeSyntaxError('a SMART scope needs "<Type>.<permissions>"');
  const resourceType = body.slice(0, dot);
  const suffix = body.slice(dot + 1);
  if (!RESOURCE_TYPE.test(resourceType)) throw new ScopeSyntaxError('a SMART scope names a resource type or "*"');

  const letters = V1[suffix] ?? suffix;
  if (V1[suffix] !== undefined && q !== -1) {
    throw new ScopeSyntaxError('restriction parameters are only defined for v2 (cruds) scopes');
  }
  if (!/^[cruds]{1,5}$/.test(letters)) throw new ScopeSyntaxError('SMART permissions are letters among c, r, u, d, s');
  let last = -1;
  for (const ch of letters) {
    const at = ORDER.indexOf(ch);
    // Letters must appear once each, in "cruds" order (SMART v2 §scopes); anything else is refused.
    if (at <= last) throw new ScopeSyntaxError('SMART permissions must be in "cruds" order without repeats');
    last = at;
  }

  const params: Array<readonly [string, string]> = [];
  if (q !== -1) {
    const query = rest.slice(q + 1);
    if (query.length === 0) throw new ScopeSyntaxError('empty restriction after "?"');
    for (const part of query.split('&')) {
      const eq = part.indexOf('=');
      if (eq <= 0 || eq === part.length - 1) throw new ScopeSyntaxError('restrictions are "name=value" pairs');
      try {
        params.push([decodeURIComponent(part.slice(0, eq)), decodeURIComponent(part.slice(eq + 1))]);
      } catch {
        throw new ScopeSyntaxError('malformed percent-encoding in a scope restriction');
      }
    }
  }

  return {
    context,
    resourceType,
    permissions: new Set(letters as Iterable<ScopePermission>) as ReadonlySet<ScopePermission>,
    params,
    raw,
  };
}

/**
 * Parses a `scope` claim (space-separated string, or an array of scope strings) into the FHIR
 * resource scopes it contains.
 * @throws ScopeSyntaxError for a malformed resource scope.
 */
export function parseSmartScopes(value: string | readonly string[]): SmartScope[] {
  const list = typeof value === 'string' ? value.split(/[ ]+/) : value.flatMap((v) => v.split(/[ ]+/));
  const out: SmartScope[] = [];
  for (const raw of list) {
    if (raw === '') continue;
    const s = parseSmartScope(raw);
    if (s) out.push(s);
  }
  return out;
}

/**
 * Scopes that grant `permission` on `resourceType` in one of the given contexts, restricted or not.
 * The policy applies a restricted scope's `params` as an extra filter.
 */
export function matchingScopes(
  scopes: readonly SmartScope[],
  context: ScopeContext | readonly ScopeContext[],
  resourceType: string,
  permission: ScopePermission,
): SmartScope[] {
  const contexts: readonly ScopeContext[] = typeof context === 'string' ? [context] : context;
  return scopes.filter(
    (s) =>
      contexts.includes(s.context) &&
      (s.resourceType === '*' || s.resourceType === resourceType) &&
      s.permissions.has(permission),
  );
}

/**
 * The token's ceiling: may this token do `permission` on `resourceType` without restriction?
 *
 * `scopes === undefined` means the credential carries no scope ceiling (a card, or an issuer whose
 * scope claim is not mapped): the answer is `true` and the policy alone decides. Restricted scopes
 * (`?category=...`) do not count here; use {@link matchingScopes} to apply them as filters.
 */
export function scopeAllows(
  scopes: readonly SmartScope[] | undefined,
  context: ScopeContext | readonly ScopeContext[],
  resourceType: string,
  permission: ScopePermission,
): boolean {
  if (scopes === undefined) return true;
  return matchingScopes(scopes, context, resourceType, permission).some((s) => s.params.length === 0);
}
