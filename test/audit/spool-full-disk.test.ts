import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, open as openFile, readdir, rm, statfs, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import { openSpool, type AuditSpool } from '../../src/audit/spool.js';
import { ProxyError } from '../../src/http/errors.js';

/**
 * A full disk for real: the spool on a 256 KiB tmpfs that the test mounts (root only), filled by
 * the spool's own backlog while nothing is shipped. Issue 11, point 2: when one segment held the
 * whole backlog, shipping it all never freed the disk (only segments before the cursor's were
 * deleted), the probe kept failing with ENOSPC and every request was refused until a restart.
 */

const VOLUME = '256k';

/** Mounts a small tmpfs; `undefined` with the reason when this process cannot. */
function mountTmpfs(): { dir: string } | { skip: string } {
  if (process.platform !== 'linux') return { skip: 'not Linux' };
  if (process.getuid?.() !== 0) return { skip: 'not running as root (mounting a tmpfs needs it)' };
  const dir = mkdtempSync(join(tmpdir(), 'caregate-fulldisk-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${VOLUME},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
    return { dir };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    return { skip: `mount -t tmpfs failed (${(err as Error).message.split('\n')[0]})` };
  }
}

const volume = mountTmpfs();
const mounted = 'dir' in volume ? volume.dir : undefined;
if (!mounted) console.warn(`audit.spool full-disk tests skipped: ${'skip' in volume ? volume.skip : ''}`);

afterAll(() => {
  if (!mounted) return;
  try {
    execFileSync('umount', [mounted], { stdio: 'pipe' });
  } catch {
    // Still busy (a test failed with a file open): detach it, it goes once the last file closes.
    execFileSync('umount', ['-l', mounted], { stdio: 'pipe' });
  }
  rmSync(mounted, { recursive: true, force: true });
});

let dir: string;
let spools: AuditSpool[] = [];
let n = 0;

/** About 2 KiB: one failed append is always less than a page of the tmpfs. */
function ev(): AuditEvent {
  n++;
  return {
    resourceType: 'AuditEvent',
    id: `ev-${n}`,
    type: { code: 'rest' },
    recorded: new Date().toISOString(),
    agent: [{ requestor: true }],
    source: { observer: { display: 'caregate' } },
    text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${'x'.repeat(1800)}</div>` },
  } as AuditEvent;
}

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Appends one event at a time until the spool refuses one; returns the acknowledged ids. */
async function fillUp(s: AuditSpool): Promise<string[]> {
  const acked: string[] = [];
  for (;;) {
    const e = ev();
    try {
      await s.append([e]);
      acked.push(e.id!);
    } catch (err) {
      expect(err).toBeInstanceOf(ProxyError);
      expect((err as ProxyError).code).toBe('ERR_AUDIT_UNAVAILABLE');
      return acked;
    }
  }
}

async function drain(s: AuditSpool): Promise<string[]> {
  const shipped: string[] = [];
  for (let b = await s.readBatch(50); b; b = await s.readBatch(50)) {
    shipped.push(...b.events.map((e) => e.id!));
    await s.commit(b);
  }
  return shipped;
}

beforeEach(async () => {
  if (!mounted) return;
  dir = join(mounted, `spool-${n}`);
  await mkdir(dir, { mode: 0o700 });
});
afterEach(async () => {
  for (const s of spools) await s.close();
  spools = [];
  if (mounted) await rm(dir, { recursive: true, force: true });
});

describe.skipIf(!mounted)(`audit.spool: a real full disk (tmpfs of ${VOLUME})`, () => {
  it.each([
    { label: 'one segment larger than the whole volume', segmentMaxBytes: 1 << 20 },
    { label: 'segments much smaller than the volume', segmentMaxBytes: 16 << 10 },
  ])('recovers by itself once the backlog that filled the disk is shipped ($label)', async ({ segmentMaxBytes }) => {
    const s = await openSpool({ dir, segmentMaxBytes, failureRetryMs: 10 });
    spools.push(s);
    const acked = await fillUp(s);
    expect(acked.length).toBeGreaterThan(20);
    expect(s.health()).toMatchObject({ ok: false, reason: expect.stringContaining('ENOSPC') });

    // The audit store is back: everything acknowledged is shipped, once.
    expect(await drain(s)).toEqual(acked);
    expect(s.backlog()).toBe(0);
    // Every segment was sealed by the failure and fully shipped: none is left holding the disk.
    expect((await readdir(dir)).filter((f) => f.startsWith('spool-'))).toEqual([]);

    // No operator: the shipped data no longer holds the disk, the probe finds room, appends resume.
    await until(() => s.health().ok);
    const after = [ev(), ev()];
    for (const e of after) await s.append([e]);
    expect(await drain(s)).toEqual(after.map((e) => e.id));
  });

  it('resumes when space comes back on the volume (another file removed)', async () => {
    // Someone else fills the volume, all but 48 KiB.
    const ballast = join(mounted!, 'ballast');
    const fh = await openFile(ballast, 'w');
    try {
      const chunk = Buffer.alloc(16 << 10, 0x61);
      for (;;) {
        const { bavail, bsize } = await statfs(mounted!);
        if (bavail * bsize <= 48 << 10) break;
        await fh.write(chunk);
      }
    } finally {
      await fh.close();
    }
    const s = await openSpool({ dir, failureRetryMs: 10 });
    spools.push(s);
    const acked = await fillUp(s);
    expect(s.health()).toMatchObject({ ok: false, reason: expect.stringContaining('ENOSPC') });
    await unlink(ballast);
    await until(() => s.health().ok);
    const later = ev();
    await s.append([later]);
    expect(await drain(s)).toEqual([...acked, later.id]);
    expect((await readdir(dir)).includes('.probe')).toBe(false);
  });
});
