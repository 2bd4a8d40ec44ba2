/**
 * A FHIR REST request, canonicalised. Produced by `fhir/classify.ts`; the policy decides on this
 * form and the upstream request is rebuilt from it, never from the raw client bytes.
 */

export type InteractionKind =
  | 'capabilities'
  | 'read'
  | 'vread'
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'search-type'
  | 'search-system'
  | 'search-compartment'
  | 'create'
  | 'update'
  | 'patch'
  | 'delete'
  | 'operation'
  | 'batch'
  | 'transaction';

/** One search parameter occurrence: `name[:modifier]=value` (value still comma-joined for OR). */
export interface SearchParam {
  /** Parameter name without modifier, e.g. `subject`, `_include`, `patient.name` (chain kept). */
  name: string;
  /** Modifier after `:` (e.g. `not`, `missing`, `Patient`, `iterate`), if any. */
  modifier: string | undefined;
  /** The raw value, decoded once. OR lists stay comma-separated. */
  value: string;
}

export interface FhirInteraction {
  kind: InteractionKind;
  /** HTTP method as received (HEAD is treated as GET by the classifier, flagged in `head`). */
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  head: boolean;
  /** Resource type in the URL, if any (`Observation`). */
  resourceType: string | undefined;
  /** Logical id in the URL, if any. */
  id: string | undefined;
  /** Version id for vread. */
  versionId: string | undefined;
  /** Operation name without `$` (e.g. `everything`), for `operation`. */
  operation: string | undefined;
  /** Operation level. */
  operationLevel: 'system' | 'type' | 'instance' | undefined;
  /** For compartment searches: the compartment (`Patient`) and its id; `resourceType` is the searched type or `*`. */
  compartment: { type: string; id: string } | undefined;
  /** Search / operation parameters from the query string and, for POST `_search`, the form body, merged. */
  params: SearchParam[];
  /** Conditional interaction criteria (If-None-Exist, or query on PUT/PATCH/DELETE). */
  conditional: SearchParam[] | undefined;
  /** Parsed JSON body (create/update/patch/batch/transaction/operation POST). */
  body: unknown;
  /** Batch/transaction entries, each classified as a standalone request. */
  entries: BatchEntry[] | undefined;
  /** Canonical relative path (no leading slash), e.g. `Observation/123/_history/2`. */
  path: string;
  /** Preferences the proxy honours: `return` (minimal|representation|OperationOutcome), `handling`. */
  prefer: { return?: string; handling?: string; respondAsync?: boolean };
  /**
   * Response format asked for: JSON (default) or XML; `binary` for a Binary read whose Accept names
   * no FHIR format (the content itself, in its own content type, once judged).
   */
  format: 'json' | 'xml' | 'binary';
}

export interface BatchEntry {
  index: number;
  fullUrl: string | undefined;
  interaction: FhirInteraction;
}

/** Create, update, patch or delete: the interactions judged on the resource before and after. */
export function isWrite(it: Pick<FhirInteraction, 'kind'>): boolean {
  return it.kind === 'create' || it.kind === 'update' || it.kind === 'patch' || it.kind === 'delete';
}

/** Searches (type, system, compartment) and histories: the interactions answered with a searchset or history Bundle. */
export function isSearchOrHistory(it: Pick<FhirInteraction, 'kind'>): boolean {
  return it.kind.startsWith('search') || it.kind.startsWith('history');
}

/** Patients named by the URL itself: `Patient/x`, `Patient/x/...`, instance operations on a Patient. */
export function patientsInUrl(it: Pick<FhirInteraction, 'compartment' | 'resourceType' | 'id'>): string[] {
  if (it.compartment?.type === 'Patient') return [it.compartment.id];
  if (it.resourceType === 'Patient' && it.id) return [it.id];
  return [];
}
