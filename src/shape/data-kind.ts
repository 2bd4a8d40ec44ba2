import type { Binary, Resource } from '@medplum/fhirtypes';
import { parseReference } from '../fhir/references.js';
import type { HoldRule } from '../policy/patient-rights-config.js';
import type { Opposition } from '../relate/types.js';

/**
 * What kind of data a resource is, for the rules that cover kinds of data rather than patients: an
 * opposition limited to some resource types or security labels (CSP L1110-4), and documents held
 * back until a physician releases them. A Binary is the content of the resource its
 * `securityContext` names (a DocumentReference, a DiagnosticReport): it is judged as that resource
 * too. When that resource cannot be told (the context is the Patient, or absent, or unreadable),
 * the kind is unknown and every such rule covers it (fail closed).
 */
export interface DataKind {
  /** The resource's type, and its security context's for a Binary; `unknown` when it cannot be told. */
  types: readonly string[] | 'unknown';
  /** `system|code` of `meta.security` (and of the security context's); `unknown` when it cannot be told. */
  labels: ReadonlySet<string> | 'unknown';
  /** The resources judged: the resource itself, and a Binary's security context. */
  subjects: readonly Resource[];
}

export async function dataKindOf(r: Resource, read: (ref: string) => Promise<Resource | undefined>, localBases: readonly string[]): Promise<DataKind> {
  if (r.resourceType !== 'Binary') return { types: [r.resourceType], labels: labelsOf(r), subjects: [r] };
  const ref = (r as Binary).securityContext?.reference;
  const target = typeof ref === 'string' ? parseReference(ref, localBases) : undefined;
  if (!target || target.type === 'Patient') return { types: 'unknown', labels: 'unknown', subjects: [r] };
  const context = await read(`${target.type}/${target.id}`);
  if (!context) return { types: 'unknown', labels: 'unknown', subjects: [r] };
  return { types: ['Binary', context.resourceType], labels: new Set([...labelsOf(r), ...labelsOf(context)]), subjects: [r, context] };
}

function labelsOf(r: Resource): Set<string> {
  return new Set((r.meta?.security ?? []).filter((c) => c.system && c.code).map((c) => `${c.system}|${c.code}`));
}

/** Whether an opposition covers this kind of data (both its classes and its labels, each empty meaning all). */
export function oppositionCovers(o: Opposition, kind: DataKind): boolean {
  const types = kind.types;
  const labels = kind.labels;
  const byClass = o.classes.length === 0 || types === 'unknown' || o.classes.some((c) => types.includes(c));
  const byLabel = o.labels.length === 0 || labels === 'unknown' || o.labels.some((l) => labels.has(l));
  return byClass && byLabel;
}

/**
 * Whether a document or result is held back until a physician releases it: it (or a Binary's
 * document) has a held status or a held label. A Binary whose document cannot be told is held.
 */
export function isHeld(kind: DataKind, held: { rules: readonly HoldRule[]; labels: readonly string[] }): boolean {
  if (kind.types === 'unknown' || kind.labels === 'unknown') return true;
  const labels = kind.labels;
  if (held.labels.some((l) => labels.has(l))) return true;
  return kind.subjects.some((s) =>
    held.rules.some((rule) => {
      if (rule.resourceType !== s.resourceType) return false;
      const value = (s as unknown as Record<string, unknown>)[rule.element];
      return typeof value === 'string' && rule.values.includes(value);
    }),
  );
}
