import type { AuditEvent } from '@medplum/fhirtypes';

/**
 * The JSON text of the AuditEvents of one interaction, each part serialised once however many
 * events share it.
 *
 * Why hand-written: BALP asks for one AuditEvent per patient of a search, so a DIM search page of
 * a hundred patients makes a hundred events of about 3.5 KB that differ only in their id and their
 * entities (the builder makes them share every other part, by reference). `JSON.stringify` of each
 * would serialise the shared agents, source and decision a hundred times. Here:
 * - the members other than `id` and `entity` are a frame: while an event's frame is the previous
 *   event's (same keys, same values by identity), its text is reused as a whole, so an event costs
 *   its id and its entity list;
 * - within an entity list (and a new frame), every object or array met again by identity is
 *   serialised once and its text reused.
 * The text is exactly what `JSON.stringify` gives (same keys, same order, undefined members left
 * out), which test/audit/serialize.test.ts checks.
 */
export function serializeAuditEvents(events: readonly AuditEvent[]): string[] {
  if (events.length === 1) return [JSON.stringify(events[0])];
  const memo = new Map<object, string>();
  const list = (v: readonly unknown[]) => `[${v.map((x) => value(x) ?? 'null').join(',')}]`;
  const value = (v: unknown): string | undefined => {
    if (v === null || typeof v !== 'object') return JSON.stringify(v);
    let s = memo.get(v);
    if (s === undefined) {
      s = Array.isArray(v) ? list(v) : JSON.stringify(v);
      memo.set(v, s);
    }
    return s;
  };
  let frame: Frame | undefined;
  return events.map((e) => {
    const members = membersOf(e);
    if (!frame || !sameFrame(frame, e, members)) frame = frameOf(e, members, value);
    let out = '';
    for (const part of frame.parts) {
      if (part === ID) out += JSON.stringify(e.id);
      // Entity lists are the events' own; their members are shared or not.
      else if (part === ENTITY) out += Array.isArray(e.entity) ? list(e.entity) : (value(e.entity) ?? 'null');
      else out += part;
    }
    return out;
  });
}

const ID = Symbol('id');
const ENTITY = Symbol('entity');
type Part = string | typeof ID | typeof ENTITY;

interface Frame {
  event: AuditEvent;
  members: string[];
  /** Text, with the places of the event's own `id` and `entity`. */
  parts: Part[];
}

/** The keys `JSON.stringify` writes, in its order. */
function membersOf(e: AuditEvent): string[] {
  const out: string[] = [];
  for (const k in e) {
    if (!Object.hasOwn(e, k)) continue;
    const v = (e as unknown as Record<string, unknown>)[k];
    if (v !== undefined && typeof v !== 'function' && typeof v !== 'symbol') out.push(k);
  }
  return out;
}

function sameFrame(f: Frame, e: AuditEvent, members: string[]): boolean {
  if (members.length !== f.members.length) return false;
  const a = e as unknown as Record<string, unknown>;
  const b = f.event as unknown as Record<string, unknown>;
  for (let i = 0; i < members.length; i++) {
    const k = members[i]!;
    if (k !== f.members[i]) return false;
    if (k !== 'id' && k !== 'entity' && a[k] !== b[k]) return false;
  }
  return true;
}

function frameOf(e: AuditEvent, members: string[], value: (v: unknown) => string | undefined): Frame {
  const parts: Part[] = [];
  let run = '{';
  members.forEach((k, i) => {
    run += `${i ? ',' : ''}${JSON.stringify(k)}:`;
    if (k === 'id' || k === 'entity') {
      parts.push(run, k === 'id' ? ID : ENTITY);
      run = '';
    } else run += value((e as unknown as Record<string, unknown>)[k]) ?? 'null';
  });
  parts.push(`${run}}`);
  return { event: e, members, parts };
}
