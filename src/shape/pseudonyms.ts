import { createHmac, randomBytes } from 'node:crypto';
import type { FhirInteraction } from '../fhir/interaction.js';
import { notFound } from '../http/errors.js';
import type { DateMode } from '../policy/engagement.js';
import type { PseudonymTable } from '../shared/state.js';
import { createDeidentifier, type Deidentifier } from './deid.js';

/**
 * Coding contractors see pseudonyms, never real ids: one de-identifier per engagement, each with its
 * own pseudonym key derived from the deployment's secret, so that two contractors cannot link
 * their data. The request side maps the pseudonyms a contractor sends back to real ids before the
 * request is decided (`reveal`); the response side replaces real ids by pseudonyms (`forEngagement`).
 *
 * Several instances (`state.mode: redis`) derive the same pseudonyms from the same secret, and share
 * which ones were issued (`share`, then the shared table on a local miss): a contractor may follow
 * on one instance a pseudonym another gave them. A mapping read from the table is checked against
 * the engagement's key before it is used.
 */
export interface Pseudonyms {
  /** The de-identifier of an engagement (created on first use). */
  forEngagement(engagement: { id: string; dateMode: DateMode }): Deidentifier;
  /**
   * The interaction with the contractor's pseudonyms replaced by real ids. An unknown pseudonym is
   * a miss, and so is a real id: a search by real id would answer with its pseudonym (linking the
   * two) and tell whether that patient or stay is in the engagement. Revealing grants nothing: the
   * real request is judged against the engagement's stays like any other. A signed paging link
   * holds caregate's own (real) query and is left as is.
   */
  reveal(engagement: { id: string; dateMode: DateMode }, it: FhirInteraction, paging: boolean): Promise<FhirInteraction>;
  /** Stores the pseudonyms issued since the last call in the shared table; rejects with a 503 when it cannot. */
  share(): Promise<void>;
}

/** Parameters a coding contractor gives ids in (pseudonyms only). */
const ID_PARAMS: ReadonlySet<string> = new Set(['_id', 'patient', 'subject', 'encounter']);

export function createPseudonyms(opts: { secret: Buffer | undefined; localBases: readonly string[]; shared?: PseudonymTable }): Pseudonyms {
  // Without a configured secret, pseudonyms are random per process (and change at each start).
  const secret = opts.secret ?? randomBytes(32);
  const byEngagement = new Map<string, Deidentifier>();
  /** Issued and not yet shared: engagement → [`Type/pseudo`, real id]. */
  let unshared = new Map<string, [string, string][]>();

  function forEngagement(e: { id: string; dateMode: DateMode }): Deidentifier {
    let d = byEngagement.get(e.id);
    if (!d) {
      const key = createHmac('sha256', secret).update(`engagement:${e.id}`).digest();
      const onIssue = (type: string, pseudo: string, realId: string) => {
        let list = unshared.get(e.id);
        if (!list) unshared.set(e.id, (list = []));
        list.push([`${type}/${pseudo}`, realId]);
      };
      d = createDeidentifier({ key, dateMode: e.dateMode, localBases: opts.localBases, ...(opts.shared ? { onIssue } : {}) });
      byEngagement.set(e.id, d);
    }
    return d;
  }

  /** The real id behind a pseudonym: issued here, or by another instance (checked), or undefined. */
  async function realId(e: { id: string }, d: Deidentifier, type: string, pseudo: string): Promise<string | undefined> {
    const known = d.reveal(type, pseudo);
    if (known !== undefined || !opts.shared) return known;
    const real = await opts.shared.get(e.id, `${type}/${pseudo}`);
    return real !== undefined && d.adopt(type, pseudo, real) ? real : undefined;
  }

  return {
    forEngagement,
    async reveal(e, it, paging) {
      if (paging) return it;
      const d = forEngagement(e);
      const miss = () => notFound('unknown pseudonym');
      let id = it.id;
      let path = it.path;
      if (it.resourceType && it.id) {
        const real = await realId(e, d, it.resourceType, it.id);
        if (!real) throw miss();
        id = real;
        path = [it.resourceType, real, ...it.path.split('/').slice(2)].join('/');
      }
      const params = [];
      for (const p of it.params) {
        const values: string[] = [];
        for (const v of p.value.split(',')) {
          const m = /^(?:([A-Z][A-Za-z]+)\/)?(p-[A-Za-z0-9\-.]{22})$/.exec(v);
          if (!m && ID_PARAMS.has(p.name)) throw miss();
          if (!m) {
            values.push(v);
            continue;
          }
          const type = m[1] ?? (p.name === '_id' ? it.resourceType : p.name === 'encounter' ? 'Encounter' : 'Patient');
          const real = type ? await realId(e, d, type, m[2]!) : undefined;
          if (!real) throw miss();
          values.push(m[1] ? `${m[1]}/${real}` : real);
        }
        params.push({ ...p, value: values.join(',') });
      }
      return { ...it, id, path, params };
    },
    async share() {
      if (!opts.shared || unshared.size === 0) return;
      const batch = unshared;
      unshared = new Map();
      try {
        await Promise.all([...batch].map(([engagement, entries]) => opts.shared!.put(engagement, entries)));
      } catch (err) {
        // Kept for the next answer: a pseudonym is shared once, when first issued.
        for (const [engagement, entries] of batch) unshared.set(engagement, [...entries, ...(unshared.get(engagement) ?? [])]);
        throw err;
      }
    },
  };
}
