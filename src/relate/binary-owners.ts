import type { Resource } from '@medplum/fhirtypes';
import { LRUCache } from 'lru-cache';
import type { FhirClient } from '../upstream/client.js';

/**
 * Which resources point at a Binary stored without `securityContext` (what most servers do with
 * attachments): the DocumentReference whose `content.attachment.url`, the DiagnosticReport whose
 * `presentedForm.url`, the Media whose `content.url` names it. The Binary belongs to the patients
 * of all of them; none found, it is withheld (fail closed).
 *
 * Two sources, both needed:
 * - a search `DocumentReference?location=<the Binary's URL forms>` (the standard R4 parameter on
 *   `content.attachment.url`), and any search the operator configures for the other types (a
 *   server with a custom SearchParameter on `DiagnosticReport.presentedForm.url`, for example);
 * - the owners caregate has seen pass through (every DocumentReference, DiagnosticReport and Media
 *   of an upstream answer, judged or not), for the types no standard parameter searches.
 *
 * Every owner counts: a resource written to claim someone else's Binary cannot narrow its owners
 * to one patient, and writes through caregate may attach only Binaries whose owners the writer may
 * see (policy/write-facts.ts). Answers are cached (bounded, with the care-set lifetime). The
 * command `caregate backfill-binaries` writes `securityContext` on existing Binaries instead, which
 * needs none of this (docs/POLICY.md compares the costs).
 */
export interface BinaryOwners {
  /** `DocumentReference/x`, `DiagnosticReport/y`… pointing at `Binary/<id>`; empty when none is known. */
  of(binaryId: string): Promise<string[]>;
  /** Notes the Binaries an upstream resource points at (called on what passes through). */
  learn(resource: Resource): void;
  /**
   * Drops the cached owners of the Binaries a resource written through caregate points at (they
   * may have one more); true when it points at any.
   */
  forget(resource: Resource): boolean;
  clear(): void;
}

export interface BinaryOwnerSearch {
  /** The resource type searched, e.g. `DiagnosticReport`. */
  type: string;
  /** A search parameter on the attachment URL, e.g. `presented-form-url` (custom). */
  param: string;
}

export interface BinaryOwnersOptions {
  client: FhirClient;
  /** The bases an absolute attachment URL may be written on (the upstream's, caregate's, aliases). */
  localBases: readonly string[];
  /** Searches besides `DocumentReference?location=`. */
  searches?: readonly BinaryOwnerSearch[];
  ttlMs: () => number;
  maxEntries?: number;
  now?: () => number;
}

const OWNER_TYPES: ReadonlySet<string> = new Set(['DocumentReference', 'DiagnosticReport', 'Media']);
const BINARY_URL = /(?:^|\/)Binary\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;

export function createBinaryOwners(opts: BinaryOwnersOptions): BinaryOwners {
  const now = opts.now ?? Date.now;
  const searches: readonly BinaryOwnerSearch[] = [{ type: 'DocumentReference', param: 'location' }, ...(opts.searches ?? [])];
  const found = new LRUCache<string, { at: number; owners: string[] }>({ max: opts.maxEntries ?? 50_000 });
  /** Binary id → owners seen passing through. */
  const seen = new LRUCache<string, Set<string>>({ max: opts.maxEntries ?? 50_000 });

  /** The Binary id an attachment URL names, when it is a Binary of this server. */
  function binaryOf(url: string): string | undefined {
    const m = BINARY_URL.exec(url);
    if (!m) return undefined;
    const prefix = url.slice(0, url.length - m[0].length);
    if (prefix === '' || opts.localBases.includes(prefix)) return m[1];
    return undefined;
  }

  return {
    async of(binaryId) {
      const hit = found.get(binaryId);
      const learned = [...(seen.get(binaryId) ?? [])];
      if (hit && now() - hit.at < opts.ttlMs()) return [...new Set([...hit.owners, ...learned])];
      const forms = [`Binary/${binaryId}`, ...opts.localBases.map((b) => `${b}/Binary/${binaryId}`)].join(',');
      const owners: string[] = [];
      for (const s of searches) {
        // A failed lookup throws ERR_LOOKUP_FAILED: the Binary is then refused with a 503, not shown.
        const bundle = await opts.client.search(s.type, { [s.param]: forms, _elements: 'id', _count: '100' });
        for (const e of bundle.entry ?? []) {
          const r = e?.resource;
          if (r?.resourceType === s.type && typeof r.id === 'string') owners.push(`${s.type}/${r.id}`);
        }
      }
      found.set(binaryId, { at: now(), owners });
      return [...new Set([...owners, ...learned])];
    },
    learn(resource) {
      if (!OWNER_TYPES.has(resource.resourceType) || typeof resource.id !== 'string') return;
      const owner = `${resource.resourceType}/${resource.id}`;
      for (const url of attachmentUrls(resource)) {
        const id = binaryOf(url);
        if (id === undefined) continue;
        let set = seen.get(id);
        if (!set) seen.set(id, (set = new Set()));
        set.add(owner);
      }
    },
    forget(resource) {
      if (!OWNER_TYPES.has(resource.resourceType)) return false;
      let any = false;
      for (const url of attachmentUrls(resource)) {
        const id = binaryOf(url);
        if (id !== undefined) {
          found.delete(id);
          any = true;
        }
      }
      return any;
    },
    clear() {
      found.clear();
    },
  };
}

/** The URLs of a resource's attachments (DocumentReference.content, DiagnosticReport.presentedForm, Media.content). */
export function attachmentUrls(resource: Resource): string[] {
  const r = resource as { content?: unknown; presentedForm?: unknown };
  const out: string[] = [];
  const add = (a: unknown) => {
    const url = (a as { url?: unknown } | null)?.url;
    if (typeof url === 'string') out.push(url);
  };
  switch (resource.resourceType) {
    case 'DocumentReference':
      if (Array.isArray(r.content)) for (const c of r.content) add((c as { attachment?: unknown } | null)?.attachment);
      break;
    case 'DiagnosticReport':
      if (Array.isArray(r.presentedForm)) for (const a of r.presentedForm) add(a);
      break;
    case 'Media':
      add(r.content);
      break;
    default:
      break;
  }
  return out;
}
