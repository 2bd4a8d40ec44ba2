import { ProxyError } from '../http/errors.js';
import type { SearchParam } from './interaction.js';

/** More parameters than this in one query (or form body) is refused: no real client sends that many. */
export const MAX_PARAMS = 1000;

/**
 * Parses a raw query string (or an `application/x-www-form-urlencoded` body, or an `If-None-Exist`
 * value) into search parameters, the one way the proxy reads them:
 *
 * - split on `&` (empty pieces are ignored), then on the first `=`;
 * - `+` is a space, percent escapes are decoded once; malformed escapes and invalid UTF-8 are refused;
 * - after decoding, a remaining `%XX` (double encoding) is refused: a component that decodes twice
 *   would read differently wherever a second decode happens; so are control characters;
 * - repeated parameters stay separate entries (they AND), OR lists stay comma-joined in `value`;
 * - `name:modifier` is split; chains keep their dots in the name (`subject.name`,
 *   `subject:Patient.name`, with a final modifier split off: `subject.name:exact`);
 *   `_has:Observation:patient:code` becomes name `_has`, modifier `Observation:patient:code`.
 *
 * The upstream request is rebuilt from this form, so whatever the client's encoding was, the FHIR
 * server reads exactly what the policy judged.
 */
export function parseQuery(raw: string): SearchParam[] {
  if (raw === '') return [];
  if (raw.includes('#')) throw bad('The query contains a fragment delimiter.');
  const pieces = raw.split('&');
  const params: SearchParam[] = [];
  for (const piece of pieces) {
    if (piece === '') continue;
    if (params.length >= MAX_PARAMS) throw bad(`More than ${MAX_PARAMS} parameters.`);
    const eq = piece.indexOf('=');
    const key = decodeComponent(eq === -1 ? piece : piece.slice(0, eq));
    const value = eq === -1 ? '' : decodeComponent(piece.slice(eq + 1));
    if (key === 'access_token') {
      throw new ProxyError('ERR_TOKEN_IN_QUERY', 'Access tokens are not accepted in the query string.', {
        issue: 'security',
      });
    }
    params.push({ ...splitParamName(key), value });
  }
  return params;
}

const PARAM_CODE = '[A-Za-z_][A-Za-z0-9_\\-]{0,63}';
const TYPE = '[A-Z][A-Za-z]{1,63}';
const MODIFIER = /^[A-Za-z][A-Za-z0-9-]{0,63}$/;
/** One link of a chain: `param` or `param:Type`. */
const CHAIN_LINK = new RegExp(`^${PARAM_CODE}(?::${TYPE})?$`);
const PLAIN_NAME = new RegExp(`^${PARAM_CODE}$`);
const HAS_REST = /^[A-Za-z0-9_\-.:]{1,512}$/;

/**
 * Splits a decoded parameter key into `name` and `modifier` (see {@link parseQuery}). Refuses keys
 * whose characters or shape are not those of a FHIR search parameter.
 */
export function splitParamName(key: string): Pick<SearchParam, 'name' | 'modifier'> {
  if (key.startsWith('_has:')) {
    const rest = key.slice(5);
    if (!HAS_REST.test(rest)) throw badName();
    return { name: '_has', modifier: rest };
  }
  const dot = key.lastIndexOf('.');
  if (dot !== -1) {
    // A chain: every link is `param[:Type]`; the last one may carry a modifier instead.
    const tail = key.slice(dot + 1);
    const colon = tail.indexOf(':');
    const lastName = colon === -1 ? tail : tail.slice(0, colon);
    const modifier = colon === -1 ? undefined : tail.slice(colon + 1);
    const links = key.slice(0, dot).split('.');
    if (!links.every((l) => CHAIN_LINK.test(l)) || !PLAIN_NAME.test(lastName)) throw badName();
    if (modifier !== undefined && !MODIFIER.test(modifier)) throw badName();
    return { name: key.slice(0, dot + 1 + lastName.length), modifier };
  }
  const colon = key.indexOf(':');
  const name = colon === -1 ? key : key.slice(0, colon);
  const modifier = colon === -1 ? undefined : key.slice(colon + 1);
  if (!PLAIN_NAME.test(name)) throw badName();
  if (modifier !== undefined && !MODIFIER.test(modifier)) throw badName();
  return { name, modifier };
}

/** Decodes one query component: `+` is a space, percent escapes once, and nothing left to decode. */
function decodeComponent(s: string): string {
  let out: string;
  try {
    out = decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    throw bad('The query has a malformed percent escape.');
  }
  // Why: a value that still contains `%XX` means something else to any component that decodes
  // again (double encoding). Literal `%` not followed by two hex digits is harmless and kept.
  if (/%[0-9A-Fa-f]{2}/.test(out)) throw bad('The query is encoded more than once.');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(out)) throw bad('The query contains control characters.');
  return out;
}

function badName(): ProxyError {
  return bad('A query parameter name is not a FHIR search parameter name.');
}

function bad(message: string): ProxyError {
  return new ProxyError('ERR_BAD_REQUEST', message, { issue: 'invalid' });
}
