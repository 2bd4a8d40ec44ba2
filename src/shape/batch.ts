import type { Bundle, BundleEntry } from '@medplum/fhirtypes';
import { notFound } from '../http/errors.js';
import { outcomeFor } from '../http/outcome.js';
import { entrySent, type Authorization } from '../policy/authorize.js';
import { refusalOf, type Decision } from '../policy/decision.js';
import { filterBundle, present, presentContainer, sanitizeOutcome, type FilterContext } from './filter.js';
import { isSearchOrHistory } from '../fhir/interaction.js';
import { hidesInstance, resourceEntries } from './searchset.js';

/**
 * The answers of batches and transactions. Each entry was decided on its own (policy/authorize.ts)
 * and the permitted ones were sent upstream in one Bundle (shape/plan.ts); here the upstream's
 * answer to each is judged like a standalone answer, and the refused ones are answered with their
 * own refusal, in their place.
 */

/** What the caller receives of one batch answer, and what it held. */
export interface MergedBatch {
  bundle: Bundle;
  patients: Set<string>;
  linksRemoved: number;
}

/**
 * The batch answer: the upstream's entries for the permitted requests, each judged; the refusals
 * in the place of the others. `signLinks` seals the paging links of searches inside the batch.
 */
export async function mergeBatch(
  a: Authorization,
  upstream: Bundle,
  fctx: FilterContext,
  signLinks: (b: Bundle, d: Decision) => void,
  /** An upstream URL on caregate's public base, or undefined when it points elsewhere. */
  publicUrl: (url: string) => string | undefined,
): Promise<MergedBatch> {
  const it = a.interaction;
  const verdicts = a.entries ?? [];
  const upEntries = upstream.entry ?? [];
  const patients = new Set<string>();
  let linksRemoved = 0;
  let k = 0;
  const out: BundleEntry[] = [];
  for (let i = 0; i < (it.entries ?? []).length; i++) {
    if (!entrySent(verdicts[i])) {
      out.push(refusedEntry(a, i));
      continue;
    }
    // An entry the upstream left out, or a null one, is the upstream's fault: answered as its error.
    const e: BundleEntry = upEntries[k++] ?? { response: { status: '502' } };
    if (/^(404|410)\b/.test(e.response?.status ?? '')) {
      // Like a top-level miss: the upstream's own wording could differ from caregate's refusal.
      out.push(notFoundEntry());
      continue;
    }
    const entry: BundleEntry = { ...e };
    if (entry.response) {
      const { outcome, location, ...rest } = entry.response;
      const where = typeof location === 'string' ? publicUrl(location) : undefined;
      entry.response = { ...rest, ...(where ? { location: where } : {}), ...(outcome ? { outcome: sanitizeOutcome(outcome) } : {}) };
    }
    delete entry.fullUrl;
    const r = e.resource;
    if (r) {
      const entryIt = it.entries![i]!.interaction;
      if (r.resourceType === 'Bundle' && (isSearchOrHistory(entryIt) || entryIt.kind === 'operation')) {
        const versions = resourceEntries(r as Bundle);
        const filtered = await filterBundle(r as Bundle, fctx);
        if (hidesInstance(entryIt, versions, r as Bundle)) {
          out.push(notFoundEntry());
          continue;
        }
        for (const pid of filtered.patients) patients.add(pid);
        linksRemoved += filtered.linksRemoved;
        delete (r as Bundle).total;
        signLinks(r as Bundle, verdicts[i]!.decision);
        entry.resource = r;
      } else if (r.resourceType === 'Bundle' || r.resourceType === 'Parameters') {
        const shown = await presentContainer(r, fctx);
        if (!shown) {
          out.push(notFoundEntry());
          continue;
        }
        for (const pid of shown.patients) patients.add(pid);
        linksRemoved += shown.linksRemoved;
        entry.resource = shown.resource;
      } else if (r.resourceType === 'OperationOutcome') {
        entry.resource = sanitizeOutcome(r as never);
      } else {
        const shown = await present(r, fctx);
        if (!shown) {
          out.push(notFoundEntry());
          continue;
        }
        for (const pid of shown.patients) patients.add(pid);
        linksRemoved += shown.linksRemoved;
        entry.resource = shown.resource;
      }
      if (entry.resource.id && entry.resource.resourceType !== 'OperationOutcome' && entry.resource.resourceType !== 'Bundle') entry.fullUrl = `${fctx.publicBase}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
    out.push(entry);
  }
  return { bundle: { resourceType: 'Bundle', type: upstream.type ?? (`${it.kind}-response` as never), entry: out }, patients, linksRemoved };
}

/** The answer of an entry that was not sent upstream: its refusal, or its own error. */
export function refusedEntry(a: Authorization, i: number): BundleEntry {
  const v = a.entries?.[i];
  if (v?.error) {
    if (v.error.status === 404) return notFoundEntry();
    const o = outcomeFor(v.error);
    return { response: { status: String(o.status), outcome: o.body } };
  }
  if (!v || v.decision.refuseAs === 'not-found') return notFoundEntry();
  return { response: { status: '403 Forbidden', outcome: outcomeFor(refusalOf(v.decision)).body } };
}

/** The one answer of a batch entry that is missing, withheld or refused as if missing. */
function notFoundEntry(): BundleEntry {
  const o = outcomeFor(notFound());
  return { response: { status: '404 Not Found', outcome: o.body } };
}
