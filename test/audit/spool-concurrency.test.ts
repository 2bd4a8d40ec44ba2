import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import { openSpool, type AuditSpool, type SpoolOptions } from '../../src/audit/spool.js';

/**
 * Every change of the spool's state (segment list, active segment, cursor, deletion) happening while
 * the others run: appends that rotate small segments while the shipper commits and deletes what it
 * shipped. Issue 11, point 1: a segment opened while shipped segments were being deleted was
 * dropped from the segment list, so its events were never shipped and the next segment got the same
 * number (`EEXIST`, then 503 for every request, forever).
 */

let dir: string;
let spools: AuditSpool[] = [];
let n = 0;

function ev(): AuditEvent {
  n++;
  return {
    resourceType: 'AuditEvent',
    id: `ev-${n}`,
    type: { code: 'rest' },
    recorded: new Date().toISOString(),
    agent: [{ requestor: true }],
    source: { observer: { display: 'caregate' } },
  };
}

async function open(opts: Partial<SpoolOptions> = {}): Promise<AuditSpool> {
  const s = await openSpool({ dir, ...opts });
  spools.push(s);
  return s;
}

/** Ships everything the spool hands out, as the shipper does (read a batch, commit it). */
async function drain(s: AuditSpool, batch = 50): Promise<string[]> {
  const shipped: string[] = [];
  for (let b = await s.readBatch(batch); b; b = await s.readBatch(batch)) {
    shipped.push(...b.events.map((e) => e.id!));
    await s.commit(b);
  }
  return shipped;
}

async function segmentFiles(): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.startsWith('spool-')).sort();
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'caregate-spool-race-'));
});
afterEach(async () => {
  for (const s of spools) await s.close();
  spools = [];
  await rm(dir, { recursive: true, force: true });
});

describe('audit.spool: state changes under concurrency', () => {
  it('ships the events of a segment opened while shipped segments were being deleted', async () => {
    // One event per segment: every append rotates. A long backlog of shipped segments makes the
    // deletion last while the rotation below opens the next segment.
    const BACKLOG = 200;
    let hold: Promise<void> | undefined;
    let syncHeld!: () => void;
    const s = await open({
      segmentMaxBytes: 256,
      io: {
        async datasync(fh) {
          const h = hold;
          hold = undefined;
          if (h) {
            syncHeld();
            await h;
          }
          await fh.datasync();
        },
      },
    });
    const backlog: string[] = [];
    for (let i = 0; i < BACKLOG; i++) {
      const e = ev();
      backlog.push(e.id!);
      await s.append([e]);
    }

    // The sync of the next segment's only write is held: the rotation that follows waits for it
    // (a descriptor is closed only once its syncs are done).
    let release!: () => void;
    hold = new Promise<void>((r) => (release = r));
    const started = new Promise<void>((r) => (syncHeld = r));
    const held = ev();
    const heldAppend = s.append([held]);
    await started;
    const rotating = ev();
    const rotatingAppend = s.append([rotating]);

    // The shipper sent the backlog; its commit deletes 200 segments while the rotation goes on.
    const batch = (await s.readBatch(1000))!;
    expect(batch.events.map((e) => e.id)).toEqual(backlog);
    const committed = s.commit(batch);
    release();
    await Promise.all([committed, heldAppend, rotatingAppend]);

    // Appends go on (a reused segment number made every one of them fail), and everything
    // appended after the backlog is shipped, in order.
    const later = [ev(), ev(), ev()];
    for (const e of later) await s.append([e]);
    expect(s.health()).toEqual({ ok: true });
    expect(await drain(s)).toEqual([held, rotating, ...later].map((e) => e.id));
    expect(s.backlog()).toBe(0);
    // Only the segment being written remains.
    expect(await segmentFiles()).toHaveLength(1);
  });

  it('keeps every event exactly once while appends rotate small segments and the shipper deletes shipped ones', async () => {
    const s = await open({ segmentMaxBytes: 1024 });
    const appended: string[] = [];
    const refused: unknown[] = [];
    const shipped: string[] = [];
    let writing = true;
    const writers = Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; i < 60; i++) {
        const events = Array.from({ length: 1 + ((w + i) % 3) }, () => ev());
        try {
          await s.append(events);
          appended.push(...events.map((e) => e.id!));
        } catch (err) {
          refused.push(err);
        }
      }
    });
    const shipper = (async () => {
      while (writing) {
        const b = await s.readBatch(7);
        if (b) {
          shipped.push(...b.events.map((e) => e.id!));
          await s.commit(b);
        } else {
          await new Promise((r) => setImmediate(r));
        }
      }
    })();
    await Promise.all(writers);
    writing = false;
    await shipper;
    shipped.push(...(await drain(s, 7)));

    expect(refused).toEqual([]);
    expect(s.health()).toEqual({ ok: true });
    expect(new Set(shipped).size).toBe(shipped.length);
    expect([...shipped].sort()).toEqual([...appended].sort());
    expect(s.backlog()).toBe(0);
    expect((await segmentFiles()).length).toBeLessThanOrEqual(1);
  });

  it('never reuses a segment number, across rotations, deletions and restarts', async () => {
    const s = await open({ segmentMaxBytes: 256 });
    for (let i = 0; i < 5; i++) await s.append([ev()]);
    await drain(s);
    const before = await segmentFiles();
    await s.close();
    spools = [];
    const again = await open({ segmentMaxBytes: 256 });
    await again.append([ev()]);
    const after = await segmentFiles();
    // The restarted spool writes into a segment numbered after every one it ever had.
    expect(after.at(-1)! > before.at(-1)!).toBe(true);
    expect(await drain(again)).toHaveLength(1);
  });
});
