import type { Bundle } from '@medplum/fhirtypes';
import type { FhirInteraction } from '../fhir/interaction.js';

/** Rules on search and history Bundles that the filter's result decides. */

/** Entries that carry a resource (history deletions carry none), outcomes aside. */
export function resourceEntries(b: Bundle): number {
  return (b.entry ?? []).filter((e) => e?.resource && e.resource.resourceType !== 'OperationOutcome').length;
}

/** Match entries the upstream returned (before filtering). */
export function matchEntries(b: Bundle): number {
  return (b.entry ?? []).filter((e) => (e?.search?.mode ?? 'match') === 'match').length;
}

/**
 * The history of one resource is answered whole or not at all: when the filter withheld any of
 * its versions (it belongs, or belonged, to a patient the caller may not see), or none remains,
 * the answer is the 404 of a miss. An empty or partial history would tell that the resource
 * exists, which a read of it does not (threats.md, "Existence oracles").
 */
export function hidesInstance(it: FhirInteraction, versionsBefore: number, filtered: Bundle): boolean {
  if (it.kind !== 'history-instance') return false;
  const kept = resourceEntries(filtered);
  return kept === 0 || kept < versionsBefore;
}

/**
 * `Bundle.total` counts matches the caller never receives unless every match is in this page and
 * none was withheld: a total over pages not seen (or over none, `_summary=count`, `_count=0`)
 * would count the resources the filter withholds (another patient named beside one of the care
 * set, a stay outside a contractor's engagement), an oracle for them (threats.md, "Side channels").
 */
export function totalIsVerified(filtered: Bundle, matchesBefore: number): boolean {
  return filtered.total !== undefined && filtered.total === matchesBefore;
}
