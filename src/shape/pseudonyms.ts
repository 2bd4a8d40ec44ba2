import { createHmac, randomBytes } from 'node:crypto';
import type { FhirInteraction } from '../fhir/interaction.js';
import { notFound } from '../http/errors.js';
import type { DateMode } from '../policy/engagement.js';
import { createDeidentifier, type Deidentifier } from './deid.js';

/**
 * Coding contractors see pseudonyms, never real ids: one de-identifier per engagement, each with its
 * own pseudonym key derived from the deployment's secret, so that two contractors cannot link
 * their data. The request side maps the pseudonyms a contractor sends back to real ids before the
 * request is decided (`reveal`); the response side replaces real ids by pseudonyms (`forEngagement`).
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
  reveal(engagement: { id: string; dateMode: DateMode }, it: FhirInteraction, paging: boolean): FhirInteraction;
}

/** Parameters a coding contractor gives ids in (pseudonyms only). */
const ID_PARAMS: ReadonlySet<string> = new Set(['_id', 'patient', 'subject', 'encounter']);

export function createPseudonyms(opts: { secret: Buffer | undefined; localBases: readonly string[] }): Pseudonyms {
  // Without a configured secret, pseudonyms are random per process (and change at each start).
  const secret = opts.secret ?? randomBytes(32);
  const byEngagement = new Map<string, Deidentifier>();

  function forEngagement(e: { id: string; dateMode: DateMode }): Deidentifier {
    let d = byEngagement.get(e.id);
    if (!d) {
      const key = createHmac('sha256', secret).update(`engagement:${e.id}`).digest();
      d = createDeidentifier({ key, dateMode: e.dateMode, localBases: opts.localBases });
      byEngagement.set(e.id, d);
    }
    return d;
  }

  return {
    forEngagement,
    reveal(e, it, paging) {
      if (paging) return it;
      const d = forEngagement(e);
      const miss = () => notFound('unknown pseudonym');
      let id = it.id;
      let path = it.path;
      if (it.resourceType && it.id) {
        const real = d.reveal(it.resourceType, it.id);
        if (!real) throw miss();
        id = real;
        path = [it.resourceType, real, ...it.path.split('/').slice(2)].join('/');
      }
      const params = it.params.map((p) => {
        const values = p.value.split(',').map((v) => {
          const m = /^(?:([A-Z][A-Za-z]+)\/)?(p-[A-Za-z0-9\-.]{22})$/.exec(v);
          if (!m && ID_PARAMS.has(p.name)) throw miss();
          if (!m) return v;
          const type = m[1] ?? (p.name === '_id' ? it.resourceType : p.name === 'encounter' ? 'Encounter' : 'Patient');
          const real = type ? d.reveal(type, m[2]!) : undefined;
          if (!real) throw miss();
          return m[1] ? `${m[1]}/${real}` : real;
        });
        return { ...p, value: values.join(',') };
      });
      return { ...it, id, path, params };
    },
  };
}
