/**
 * Path canonicalisation for request classification: decoding the raw path into checked segments,
 * and the grammars of the names found in it (resource types, logical ids, operation names, `_type`).
 */

import type { SearchParam } from './interaction.js';
import { bad, notFhirPath } from './request-errors.js';

const OPERATION = /^\$[A-Za-z][A-Za-z0-9\-_]{0,63}$/;
/** Characters allowed in a raw path: unreserved, `%` escapes, `$` (operations), `*` (compartment) and `/`. */
const RAW_PATH = /^[A-Za-z0-9\-._~%$*/]*$/;
/** Characters allowed in a decoded path segment. */
const SEGMENT = /^[A-Za-z0-9\-._$*]+$/;

/** What classification accepts as resource types and ids (from the classify options). */
export interface Ctx {
  types: ReadonlySet<string>;
  id: RegExp;
}

/**
 * Splits and decodes the raw path. Refused: characters outside a strict set (so `;` matrix
 * parameters, backslashes, control and non-ASCII characters), encoded slashes and backslashes,
 * empty segments (`//`, trailing `/`), dot segments raw or encoded, and segments that decode to
 * anything but `[A-Za-z0-9\-._$*]`.
 */
export function parsePath(raw: string): string[] {
  const path = raw.startsWith('/') ? raw.slice(1) : raw;
  if (path === '') return [];
  if (!RAW_PATH.test(path)) throw bad('The path contains characters that are not accepted.');
  if (/%(2f|5c)/i.test(path)) throw bad('The path contains an encoded slash.');
  return path.split('/').map((seg) => {
    if (seg === '') throw bad('The path contains an empty segment.');
    let d: string;
    try {
      d = decodeURIComponent(seg);
    } catch {
      throw bad('The path has a malformed percent escape.');
    }
    if (d === '.' || d === '..') throw bad('The path contains a dot segment.');
    if (!SEGMENT.test(d)) throw bad('The path contains characters that are not accepted.');
    return d;
  });
}

/** A path segment that must be an accepted resource type. */
export function resourceType(seg: string, ctx: Ctx): string {
  if (!ctx.types.has(seg)) throw notFhirPath();
  return seg;
}

/** A path segment that must be a logical id (or version id). */
export function logicalId(seg: string | undefined, ctx: Ctx): string {
  // An id made only of dots is a dot segment somewhere (`...` on some servers).
  if (seg === undefined || !ctx.id.test(seg) || /^\.+$/.test(seg)) throw bad('The path contains an invalid id.');
  return seg;
}

/** An `$operation` segment, returned without its `$`. */
export function opName(seg: string): string {
  if (!OPERATION.test(seg)) throw bad('The operation name is not valid.');
  return seg.slice(1);
}

/** `_type` may name accepted resource types only. */
export function checkTypeParam(params: readonly SearchParam[], ctx: Ctx): void {
  for (const p of params) {
    if (p.name !== '_type') continue;
    if (p.modifier !== undefined) throw bad('_type takes no modifier.');
    for (const t of p.value.split(',')) {
      if (!ctx.types.has(t)) throw bad('_type names an unknown resource type.');
    }
  }
}
