import type { Resource } from '@medplum/fhirtypes';
import type { SearchParam } from '../fhir/interaction.js';
import { ProxyError } from '../http/errors.js';

/**
 * `_elements` and `_summary`, applied by caregate after judging rather than by the upstream: an
 * upstream that leaves out `subject` would leave resources whose patient cannot be told, which the
 * filter must withhold. So the upstream returns whole resources; the caller receives the subset.
 */
export interface Subsetting {
  elements?: ReadonlySet<string>;
  /** `_summary=data`: everything but the narrative. */
  dropText?: boolean;
}

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' };
const ALWAYS = ['resourceType', 'id', 'meta'];

/** Takes `_elements` and `_summary` out of the parameters sent upstream. `_summary=count` and `false` stay. */
export function splitSubsetting(params: readonly SearchParam[]): { params: SearchParam[]; subsetting: Subsetting | undefined } {
  const rest: SearchParam[] = [];
  let subsetting: Subsetting | undefined;
  for (const p of params) {
    if (p.name === '_elements') {
      const names = p.value.split(',').map((v) => v.trim()).filter(Boolean);
      if (names.some((n) => !/^[a-zA-Z][a-zA-Z0-9]*(\[x\])?$/.test(n))) {
        throw new ProxyError('ERR_BAD_REQUEST', '_elements lists top-level element names, such as code,status.');
      }
      subsetting = { ...subsetting, elements: new Set([...(subsetting?.elements ?? []), ...names]) };
    } else if (p.name === '_summary') {
      if (p.value === 'count' || p.value === 'false') rest.push(p);
      else if (p.value === 'data') subsetting = { ...subsetting, dropText: true };
      else throw new ProxyError('ERR_UNSUPPORTED', `_summary=${p.value === 'true' || p.value === 'text' ? p.value : '…'} is not supported through caregate; use _elements or _summary=data.`);
    } else rest.push(p);
  }
  return { params: rest, subsetting };
}

/** A copy of the resource reduced to what was asked, tagged SUBSETTED as FHIR requires. */
export function applySubsetting(resource: Resource, s: Subsetting): Resource {
  const src = resource as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(src)) {
    if (s.elements && !ALWAYS.includes(k) && !s.elements.has(k) && !s.elements.has(k.replace(/^(value|effective|onset|abatement|deceased|multipleBirth)[A-Z].*$/, '$1[x]'))) continue;
    if (s.dropText && k === 'text') continue;
    out[k] = v;
  }
  const meta = (out.meta as { tag?: unknown[] } | undefined) ?? {};
  out.meta = { ...meta, tag: [...(Array.isArray(meta.tag) ? meta.tag : []), SUBSETTED] };
  return out as unknown as Resource;
}
