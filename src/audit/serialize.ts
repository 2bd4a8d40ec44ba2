import type { AuditEvent } from '@medplum/fhirtypes';

/**
 * The JSON text of the AuditEvents of one interaction, each part serialised once however many
 * events share it.
 *
 * Why hand-written: BALP asks for one AuditEvent per patient of a search, so a DIM search page of
 * a hundred patients makes a hundred events of about 4 KB that differ only in their id, patient
 * and evidence (the builder makes them share every other part, by reference). `JSON.stringify` of
 * each would serialise the shared agents, source and decision a hundred times. Here every object
 * or array met again (by identity) is serialised once and its text reused; the events' own parts
 * go through `JSON.stringify` as usual. The text is exactly what `JSON.stringify` gives (same keys,
 * same order, undefined members left out), which test/audit/serialize.test.ts checks.
 */
export function serializeAuditEvents(events: readonly AuditEvent[]): string[] {
  if (events.length === 1) return [JSON.stringify(events[0])];
  const memo = new Map<object, string>();
  const value = (v: unknown): string | undefined => {
    if (v === null || typeof v !== 'object') return JSON.stringify(v);
    let s = memo.get(v);
    if (s === undefined) {
      s = Array.isArray(v) ? `[${v.map((x) => value(x) ?? 'null').join(',')}]` : JSON.stringify(v);
      memo.set(v, s);
    }
    return s;
  };
  return events.map((e) => {
    const parts: string[] = [];
    for (const [k, v] of Object.entries(e)) {
      if (v === undefined || typeof v === 'function') continue;
      // Entity lists are the events' own; their members are shared or not.
      const text = Array.isArray(v) && k === 'entity' ? `[${v.map((x) => value(x) ?? 'null').join(',')}]` : value(v);
      if (text !== undefined) parts.push(`${JSON.stringify(k)}:${text}`);
    }
    return `{${parts.join(',')}}`;
  });
}
