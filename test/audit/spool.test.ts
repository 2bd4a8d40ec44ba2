import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { open as openFile, mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import type { AuditEvent } from '@medplum/fhirtypes';
import { encodeSpoolLine, openSpool, readSpoolDir, type AuditSpool, type SpoolIo } from '../../src/audit/spool.js';
import { ProxyError } from '../../src/http/errors.js';

let dir: string;
let spools: AuditSpool[] = [];
let n = 0;

function ev(tag = ''): AuditEvent {
  n++;
  return {
    resourceType: 'AuditEvent',
    id: `ev-${n}${tag}`,
    type: { code: 'rest' },
    recorded: new Date().toISOString(),
    agent: [{ requestor: true }],
    source: { observer: { display: 'caregate' } },
  };
}

async function open(opts: Partial<Parameters<typeof openSpool>[0]> = {}): Promise<AuditSpool> {
  const s = await openSpool({ dir, ...opts });
  spools.push(s);
  return s;
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(code), { code });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(2);
  }
}

/** An io that counts writes and syncs and knows which bytes reached a sync. */
function countingIo(syncDelayMs = 0) {
  const written: string[] = [];
  const synced = new Set<string>();
  const counters = { writes: 0, syncs: 0 };
  const io: SpoolIo = {
    async write(fh: FileHandle, data: Buffer, position: number) {
      counters.writes++;
      await fh.write(data, 0, data.length, position);
      const ids = [...data.toString('utf8').matchAll(/"id":"([^"]+)"/g)].map((m) => m[1]!);
      written.push(...ids);
    },
    async datasync(fh: FileHandle) {
      counters.syncs++;
      // fdatasync makes durable everything written before the call, whichever sync returns first.
      const upTo = written.length;
      if (syncDelayMs) await sleep(syncDelayMs * (0.5 + Math.random()));
      await fh.datasync();
      for (const id of written.slice(0, upTo)) synced.add(id);
    },
  };
  return { io, counters, synced, written };
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'caregate-spool-'));
});
afterEach(async () => {
  for (const s of spools) await s.close();
  spools = [];
  await rm(dir, { recursive: true, force: true });
});

describe('audit.spool: durability and group commit', () => {
  it('resolves a strict append only once its bytes were fdatasync\'ed', async () => {
    const { io, synced } = countingIo(3);
    const s = await open({ io });
    const events = Array.from({ length: 50 }, () => ev());
    const checks = events.map(async (e, i) => {
      await sleep(i % 7);
      await s.append([e]);
      expect(synced.has(e.id!)).toBe(true);
    });
    await Promise.all(checks);
    expect(s.backlog()).toBe(50);
  });

  it('groups 500 concurrent appends into a handful of writes and syncs', async () => {
    const { io, counters } = countingIo(2);
    const s = await open({ io });
    await Promise.all(Array.from({ length: 500 }, () => s.append([ev()])));
    expect(counters.syncs).toBeLessThanOrEqual(3);
    expect(counters.writes).toBe(counters.syncs);
    expect(s.stats()).toMatchObject({ events: 500, syncs: counters.syncs });
    const { events } = await readSpoolDir(dir);
    expect(events).toHaveLength(500);
  });

  it('shares one sync among appends that arrive while a sync is in flight', async () => {
    const { io, counters } = countingIo(5);
    const s = await open({ io, maxSyncsInFlight: 1 });
    // 200 appends spread over ~100 ms: about 20 syncs of ~5 ms can cover them.
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        await sleep(Math.floor(i / 2));
        await s.append([ev()]);
      }),
    );
    expect(counters.syncs).toBeLessThan(50);
    expect((await readSpoolDir(dir)).events).toHaveLength(200);
  });

  it('overlaps fdatasyncs (up to maxSyncsInFlight) while keeping writes one at a time', async () => {
    let syncs = 0;
    let maxSyncs = 0;
    let writes = 0;
    let maxWrites = 0;
    const slow: Partial<SpoolIo> = {
      async write(fh, data, position) {
        maxWrites = Math.max(maxWrites, ++writes);
        await fh.write(data, 0, data.length, position);
        writes--;
      },
      // A slow disk, simulated: the sync takes 20 ms.
      async datasync() {
        maxSyncs = Math.max(maxSyncs, ++syncs);
        await sleep(20);
        syncs--;
      },
    };
    const s = await open({ io: slow, maxSyncsInFlight: 4 });
    await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        await sleep(i * 4);
        await s.append([ev()]);
      }),
    );
    expect(maxSyncs).toBeGreaterThan(1);
    expect(maxSyncs).toBeLessThanOrEqual(4);
    expect(maxWrites).toBe(1);

    maxSyncs = 0;
    const serial = await openSpool({ dir: join(dir, 'serial'), io: slow, maxSyncsInFlight: 1 });
    spools.push(serial);
    await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        await sleep(i * 4);
        await serial.append([ev()]);
      }),
    );
    expect(maxSyncs).toBe(1);
  });

  it('settles earlier writes when a later sync returns first (it covers them)', async () => {
    let releaseFirst!: () => void;
    const firstGate = new Promise<void>((r) => (releaseFirst = r));
    let calls = 0;
    const s = await open({
      io: {
        async datasync(fh) {
          if (++calls === 1) await firstGate;
          await fh.datasync();
        },
      },
    });
    const a = ev();
    const b = ev();
    let aDone = false;
    const pa = s.append([a]).then(() => (aDone = true));
    await sleep(5);
    await s.append([b]);
    expect(aDone).toBe(true);
    expect((await s.readBatch(10))!.events.map((e) => e.id)).toEqual([a.id, b.id]);
    releaseFirst();
    await pa;
    expect(s.backlog()).toBe(2);
  });

  it('rotates segments safely while syncs are in flight', async () => {
    // Segments smaller than one event: every write rotates, waiting for the syncs still running on the old file.
    const s = await open({
      segmentMaxBytes: 256,
      io: {
        async datasync(fh) {
          await sleep(Math.random() * 6);
          await fh.datasync();
        },
      },
    });
    const all = Array.from({ length: 150 }, () => ev());
    await Promise.all(all.map(async (e, i) => {
      await sleep(i % 30);
      await s.append([e]);
    }));
    expect(s.health().ok).toBe(true);
    expect(s.stats().segments).toBeGreaterThan(1);
    expect(s.stats().segments).toBe(s.stats().writes);
    const { events, tornLines } = await readSpoolDir(dir);
    expect(tornLines).toBe(0);
    expect(events.map((e) => e.id).sort()).toEqual(all.map((e) => e.id).sort());
  });

  it('waits groupCommitMaxDelayMs on an idle spool to gather companions', async () => {
    const { io, counters } = countingIo();
    const s = await open({ io, groupCommitMaxDelayMs: 15 });
    await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        await sleep(i);
        await s.append([ev()]);
      }),
    );
    expect(counters.syncs).toBeLessThanOrEqual(2);
  });

  it('writes all events of one append, and an empty append costs nothing', async () => {
    const s = await open();
    await s.append([ev(), ev(), ev()]);
    await s.append([]);
    expect(s.stats()).toMatchObject({ events: 3, syncs: 1 });
  });

  it('writes past its zero-filled room and reads every event back in order', async () => {
    const s = await open();
    const all: AuditEvent[] = [];
    // A few MiB of events: more than one zero-filling step.
    for (let i = 0; i < 12; i++) {
      const batch = Array.from({ length: 800 }, () => ({ ...ev(), text: { status: 'generated', div: 'x'.repeat(400) } }) as AuditEvent);
      all.push(...batch);
      await s.append(batch);
    }
    const { events, tornLines } = await readSpoolDir(dir);
    expect(tornLines).toBe(0);
    expect(events.map((e) => e.id)).toEqual(all.map((e) => e.id));
    expect(s.backlog()).toBe(all.length);
  });

  it('keeps accented names, other scripts and lone surrogates intact when several appends share one write', async () => {
    const s = await open();
    const names = ['Hélène Lefèvre', 'Zoë Nguyễn', '李小龍', 'emoji 🩺 and a lone \ud800 surrogate'];
    const batches = names.map((n) => Array.from({ length: 3 }, () => ({ ...ev(), agent: [{ requestor: true, name: n }] }) as AuditEvent));
    await Promise.all(batches.map((b) => s.append(b)));
    const { events, tornLines } = await readSpoolDir(dir);
    expect(tornLines).toBe(0);
    // JSON.stringify escapes a lone surrogate (\ud800), so even that comes back as it was.
    expect(events.map((e) => e.agent[0]!.name)).toEqual(names.flatMap((n) => [n, n, n]));
    expect(s.stats().writes).toBeLessThan(names.length);
  });

  it('writes lines as "<crc32> <json>" and creates owner-only files', async () => {
    const s = await open();
    const e = ev();
    await s.append([e]);
    const [seg] = (await readdir(dir)).filter((f) => f.startsWith('spool-'));
    expect(seg).toMatch(/^spool-\d{10}\.jsonl$/);
    const bytes = await readFile(join(dir, seg!));
    const line = encodeSpoolLine(e);
    expect(bytes.subarray(0, line.length).toString('utf8')).toBe(line.toString('utf8'));
    expect(line.toString('utf8')).toMatch(/^[0-9a-f]{8} \{"resourceType":"AuditEvent"/);
    // The segment is zero-filled ahead of the data (syncs then commit no size change).
    expect(bytes.length).toBeGreaterThan(line.length);
    expect(bytes.subarray(line.length).every((b) => b === 0)).toBe(true);
    expect((await stat(join(dir, seg!))).mode & 0o777).toBe(0o600);
    expect((await stat(dir)).mode & 0o077).toBe(0);
  });

  it('refuses a second writer on the same spool directory', async () => {
    await open();
    await expect(openSpool({ dir })).rejects.toThrow(/already open/);
  });
});

describe('audit.spool: recovery', () => {
  it('ignores a torn last line and a corrupt line after a crash, and writes on in a new segment', async () => {
    const s = await open();
    const good = [ev(), ev(), ev()];
    await s.append(good);
    await s.close();
    spools = [];
    const [seg] = (await readdir(dir)).filter((f) => f.startsWith('spool-'));
    const corrupt = encodeSpoolLine(ev()).toString('utf8').replace('"rest"', '"resT"');
    const torn = encodeSpoolLine(ev()).subarray(0, 40);
    // What a crash leaves: the lines it tore sit at the end of the data, before the zero-filled room.
    const path = join(dir, seg!);
    const end = (await readFile(path)).indexOf(0);
    const fh = await openFile(path, 'r+');
    await fh.write(Buffer.concat([Buffer.from(corrupt), torn]), 0, undefined, end);
    await fh.close();

    const again = await open();
    expect(again.backlog()).toBe(3);
    expect(again.stats().tornLines).toBe(2);
    const later = ev();
    await again.append([later]);
    const segs = (await readdir(dir)).filter((f) => f.startsWith('spool-')).sort();
    expect(segs).toHaveLength(2);
    const { events, tornLines } = await readSpoolDir(dir);
    expect(events.map((e) => e.id)).toEqual([...good, later].map((e) => e.id));
    expect(tornLines).toBe(2);
    const batch = await again.readBatch(100);
    expect(batch!.events.map((e) => e.id)).toEqual([...good, later].map((e) => e.id));
  });

  it('rotates segments, ships through the cursor and deletes fully shipped segments', async () => {
    const s = await open({ segmentMaxBytes: 1024 });
    const all: AuditEvent[] = [];
    for (let i = 0; i < 30; i++) {
      const e = ev();
      all.push(e);
      await s.append([e]);
    }
    expect(s.stats().segments).toBeGreaterThan(3);
    const shipped: string[] = [];
    for (let b = await s.readBatch(7); b; b = await s.readBatch(7)) {
      shipped.push(...b.events.map((e) => e.id!));
      await s.commit(b);
    }
    expect(shipped).toEqual(all.map((e) => e.id));
    expect(s.backlog()).toBe(0);
    // Only the segment still being written remains.
    expect((await readdir(dir)).filter((f) => f.startsWith('spool-'))).toHaveLength(1);
    await s.close();
    spools = [];
    const again = await open({ segmentMaxBytes: 1024 });
    expect(again.backlog()).toBe(0);
    expect(await again.readBatch(10)).toBeUndefined();
  });

  it('keeps the cursor across restarts and re-ships from the start when the cursor is lost', async () => {
    const s = await open();
    const all = [ev(), ev(), ev(), ev()];
    await s.append(all);
    const b = await s.readBatch(2);
    await s.commit(b!);
    await s.close();
    spools = [];
    const again = await open();
    expect(again.backlog()).toBe(2);
    expect((await again.readBatch(10))!.events.map((e) => e.id)).toEqual(all.slice(2).map((e) => e.id));
    await again.close();
    spools = [];
    await unlink(join(dir, 'cursor-0'));
    await unlink(join(dir, 'cursor-1'));
    const lost = await open();
    // Re-sending is harmless (PUT with the same ids); skipping would not be.
    expect(lost.backlog()).toBe(4);
  });

  it('falls back to the older cursor slot when the newer one is torn', async () => {
    const s = await open();
    const all = [ev(), ev(), ev(), ev()];
    await s.append(all);
    await s.commit((await s.readBatch(1))!);
    await s.commit((await s.readBatch(2))!);
    await s.close();
    spools = [];
    const slots = await Promise.all(['cursor-0', 'cursor-1'].map((f) => readFile(join(dir, f), 'latin1')));
    expect(slots.every((t) => t.length === 128 && /^[0-9a-f]{8} \{"seq":\d+/.test(t))).toBe(true);
    // Slots alternate: the first save (seq 0) went to cursor-0, the second and newest (seq 1) to cursor-1. Tear it.
    expect(slots[1]).toContain('"seq":1');
    await writeFile(join(dir, 'cursor-1'), slots[1]!.replace('"offset"', '"offsex"'));
    const again = await open();
    expect(again.backlog()).toBe(3);
    expect((await again.readBatch(10))!.events.map((e) => e.id)).toEqual(all.slice(1).map((e) => e.id));
  });

  it('rejects a commit that does not start at the cursor', async () => {
    const s = await open();
    await s.append([ev(), ev()]);
    const b = await s.readBatch(1);
    await s.commit(b!);
    await expect(s.commit(b!)).rejects.toThrow(TypeError);
  });

  it('never hands the shipper events whose sync is still in flight', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let hold = false;
    const s = await open({
      io: {
        async datasync(fh) {
          if (hold) await gate;
          await fh.datasync();
        },
      },
    });
    await s.append([ev()]);
    hold = true;
    const pendingAppend = s.append([ev(), ev()]);
    await sleep(10);
    expect((await s.readBatch(10))!.events).toHaveLength(1);
    release();
    await pendingAppend;
    expect((await s.readBatch(10))!.events).toHaveLength(3);
  });
});

describe('audit.spool: a disk that cannot be written', () => {
  it('refuses strict appends with ERR_AUDIT_UNAVAILABLE on ENOSPC, reports why, and recovers', async () => {
    let full = false;
    const s = await open({
      failureRetryMs: 20,
      io: {
        async write(fh, data, position) {
          if (full) {
            // A partial write before the error: it must not survive as a torn line.
            await fh.write(data, 0, Math.floor(data.length / 2), position);
            throw errno('ENOSPC');
          }
          await fh.write(data, 0, data.length, position);
        },
      },
    });
    const before = [ev(), ev()];
    await s.append(before);
    full = true;
    const err = await s.append([ev('-lost')]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProxyError);
    expect((err as ProxyError).code).toBe('ERR_AUDIT_UNAVAILABLE');
    expect((err as ProxyError).status).toBe(503);
    expect(s.health()).toMatchObject({ ok: false, reason: expect.stringContaining('ENOSPC') });
    expect(s.health().reason).toContain('disk full');
    // Refused at once while failed.
    await expect(s.append([ev('-lost')])).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' });
    await sleep(60);
    expect(s.health().ok).toBe(false);

    full = false;
    await until(() => s.health().ok);
    expect(s.health()).toEqual({ ok: true });
    const after = ev();
    await s.append([after]);
    const { events, tornLines } = await readSpoolDir(dir);
    expect(tornLines).toBe(0);
    expect(events.map((e) => e.id)).toEqual([...before, after].map((e) => e.id));
    expect(s.backlog()).toBe(3);
  });

  it('never trusts a descriptor whose fdatasync failed (EIO): answers 503 and resumes in a new segment', async () => {
    let broken = false;
    const s = await open({
      failureRetryMs: 10,
      io: {
        async datasync(fh) {
          if (broken) throw errno('EIO');
          await fh.datasync();
        },
      },
    });
    await s.append([ev()]);
    broken = true;
    await expect(s.append([ev('-lost')])).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' });
    expect(s.health().reason).toContain('EIO');
    broken = false;
    await until(() => s.health().ok);
    await s.append([ev()]);
    expect((await readdir(dir)).filter((f) => f.startsWith('spool-'))).toHaveLength(2);
    // The unsynced write was cut back: only acknowledged events remain.
    expect((await readSpoolDir(dir)).events.map((e) => e.id)).not.toContainEqual(expect.stringContaining('-lost'));
  });

  it('rejects strict appends queued behind a failing write instead of leaving them waiting', async () => {
    let full = false;
    const s = await open({
      failureRetryMs: 10_000,
      io: {
        async write(fh, data, position) {
          await sleep(5);
          if (full) throw errno('ENOSPC');
          await fh.write(data, 0, data.length, position);
        },
      },
    });
    full = true;
    const results = await Promise.allSettled(Array.from({ length: 20 }, async (_, i) => {
      await sleep(i);
      return s.append([ev()]);
    }));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
  });

  it.each([
    { label: 'segments smaller than the disk', segmentMaxBytes: 2048 },
    { label: 'one segment holding the whole backlog', segmentMaxBytes: 64 * 1024 },
  ])('frees a disk filled by its own backlog once it is shipped ($label)', async ({ segmentMaxBytes }) => {
    // A "disk" of 12 KiB of spool data (zero-filled room counts as free: see spool-full-disk.test.ts
    // for a real filesystem).
    const quota = 12 * 1024;
    const used = async () => {
      let bytes = 0;
      for (const f of await readdir(dir)) {
        if (!f.startsWith('spool-')) continue;
        const data = await readFile(join(dir, f)).catch(() => Buffer.alloc(0));
        const nul = data.indexOf(0);
        bytes += nul === -1 ? data.length : nul;
      }
      return bytes;
    };
    const s = await open({
      segmentMaxBytes,
      failureRetryMs: 10,
      io: {
        async write(fh, data, position) {
          if ((await used()) + data.length > quota) throw errno('ENOSPC');
          await fh.write(data, 0, data.length, position);
        },
      },
    });
    const kept: string[] = [];
    for (;;) {
      const e = ev();
      try {
        await s.append([e]);
        kept.push(e.id!);
      } catch {
        break;
      }
    }
    expect(s.health().ok).toBe(false);
    // The shipper drains: the cursor slots are overwritten in place, shipped segments deleted,
    // the last one included (nothing is ever written to it again).
    const shipped: string[] = [];
    for (let b = await s.readBatch(5); b; b = await s.readBatch(5)) {
      shipped.push(...b.events.map((x) => x.id!));
      await s.commit(b);
    }
    expect(shipped).toEqual(kept);
    expect(await used()).toBe(0);
    await until(() => s.health().ok);
    await s.append([ev()]);
    expect(s.backlog()).toBe(1);
  });

  it('in async mode acknowledges at once and keeps acknowledged events through a failure', async () => {
    let full = false;
    const s = await open({
      mode: 'async',
      failureRetryMs: 20,
      io: {
        async write(fh, data, position) {
          if (full) throw errno('ENOSPC');
          await fh.write(data, 0, data.length, position);
        },
      },
    });
    full = true;
    const acked = [ev(), ev(), ev()];
    for (const e of acked) await s.append([e]);
    await until(() => !s.health().ok);
    // While failed, new events are refused rather than silently kept in memory.
    await expect(s.append([ev()])).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' });
    full = false;
    await until(() => s.health().ok);
    await s.flush();
    expect((await readSpoolDir(dir)).events.map((e) => e.id)).toEqual(acked.map((e) => e.id));
  });
});
