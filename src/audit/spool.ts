import { mkdir, open, readdir, readFile, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import type { AuditEvent } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { ProxyError } from '../http/errors.js';

/**
 * The durable local audit spool: AuditEvents as JSON lines in append-only segment files
 * (`spool-<n>.jsonl`), each line `<crc32 hex> <json>\n` so that a line torn by a crash is detected
 * and ignored on recovery.
 *
 * Durability: in strict mode `append()` resolves only after the bytes are fdatasync'ed. Appends that
 * arrive while a write is in flight are grouped into the next single write + fdatasync (group
 * commit), so the number of syncs stays low under load without delaying a lone request.
 *
 * Segments are zero-filled ahead of the writes, a few MiB at a time, as database write-ahead logs
 * are: an fdatasync after an append that grows the file must also commit the new size and block
 * allocation to the filesystem journal, while one after a write into blocks already written only
 * flushes data. On ext4 this halves the CPU and the latency of each sync. Lines never contain a
 * NUL byte, so the first NUL of a segment marks the end of its data (or the torn tail of a crash).
 *
 * A write or sync error (full disk, I/O error) puts the spool in a failed state: strict appends are
 * refused with `ERR_AUDIT_UNAVAILABLE` so that no response leaves unaudited, `health()` says why,
 * and a probe retries periodically. Writing resumes in a fresh segment: a file descriptor whose
 * sync failed is never trusted again.
 *
 * Every change of the spool's shape (opening a segment, sealing one after a failure, recovering,
 * moving the shipping cursor, deleting shipped segments, reading for the shipper, closing) runs
 * through one queue, one change at a time; appends into the active segment never wait for it, and
 * only the write that has to open the next segment does. A segment, once no longer active, is
 * sealed: nothing is ever written to it again, segment numbers only grow, and the readers never go
 * past the end of what was made durable in it.
 *
 * The shipper reads from a cursor (two slot files overwritten in place, so that progress can be
 * recorded even on a full disk) and commits it after the server accepted a batch; every sealed
 * segment behind the cursor is deleted, the last one included once it is fully shipped, which is
 * how a disk filled by a long outage frees itself, whatever the segment size.
 *
 * Why one file of this length: appends, the shape queue, recovery, the cursor and deletion share
 * the invariants above (which segment is active, what is durable in each, where the readers stop);
 * split across modules, each would have to expose the state the others must not touch. The line
 * format and the cursor slots, which hold no such state, are small helpers at the end.
 */
export interface AuditSpool {
  /**
   * Appends the events. Strict mode: resolves once they are on disk; rejects with a `ProxyError`
   * `ERR_AUDIT_UNAVAILABLE` when they could not be written (the caller must then refuse the request).
   * Async mode: resolves at once, the write follows in the background.
   */
  append(events: readonly AuditEvent[] | SerializedAuditEvents): Promise<void>;
  /** Resolves when everything appended so far is on disk. */
  flush(): Promise<void>;
  /** For `/readyz`: `ok: false` with a reason (no PHI) while the spool cannot be written. */
  health(): SpoolHealth;
  /** The next unshipped events from the committed cursor, at most `max`; `undefined` when none. */
  readBatch(max: number): Promise<SpoolBatch | undefined>;
  /** Records that `batch` was accepted upstream; deletes the sealed segments it fully shipped. */
  commit(batch: SpoolBatch): Promise<void>;
  /** Events on disk not yet shipped. */
  backlog(): number;
  stats(): SpoolStats;
  /** Flushes, then releases the files and the directory lock. */
  close(): Promise<void>;
}

/**
 * AuditEvents already serialised to JSON (audit/serialize.ts), so that the events of one
 * interaction share the text of their common parts.
 */
export interface SerializedAuditEvents {
  readonly json: readonly string[];
  /** The events the text was made from, for observers in the same process (the live oversight). */
  readonly events?: readonly AuditEvent[];
}

export interface SpoolHealth {
  ok: boolean;
  reason?: string;
}

export interface SpoolPosition {
  segment: number;
  offset: number;
}

export interface SpoolBatch {
  events: AuditEvent[];
  start: SpoolPosition;
  end: SpoolPosition;
}

export interface SpoolStats {
  /** Events made durable since open. */
  events: number;
  /** write() calls (one per group commit). */
  writes: number;
  /** fdatasync() calls on segment data. */
  syncs: number;
  /** Invalid or torn lines skipped while reading. */
  tornLines: number;
  segments: number;
  backlog: number;
}

/** The two system calls of the write path, injectable for fault injection and counting. */
export interface SpoolIo {
  /** Writes all of `data` at `position` of the file. */
  write(fh: FileHandle, data: Buffer, position: number): Promise<void>;
  datasync(fh: FileHandle): Promise<void>;
}

export interface SpoolOptions {
  dir: string;
  /** Default `strict`. */
  mode?: 'strict' | 'async';
  /** Default 64 MiB. */
  segmentMaxBytes?: number;
  /** Extra wait for companions on an idle spool before writing. Default 0 (next event-loop turn). */
  groupCommitMaxDelayMs?: number;
  /** Overlapping fdatasyncs allowed (writes stay serialised). Default 4; 1 = strictly one after the other. */
  maxSyncsInFlight?: number;
  /** Probe interval while failed. Default 1000 ms. */
  failureRetryMs?: number;
  io?: Partial<SpoolIo>;
  logger?: Logger;
}

const SEGMENT_RE = /^spool-(\d+)\.jsonl$/;
/** Two cursor slots written alternately in place: see `openCursor`. */
const CURSOR_SLOTS = ['cursor-0', 'cursor-1'] as const;
const CURSOR_RECORD_BYTES = 128;
const LOCK_FILE = 'spool.lock';
const PROBE_FILE = '.probe';
const READ_CHUNK = 1 << 20;
const EMPTY = Buffer.alloc(0);
/** Zero-fill step, and how much zeroed room is left when the next step starts. */
const EXTEND_BYTES = 2 << 20;
const EXTEND_LOW_WATER = 512 << 10;
let zeros: Buffer | undefined;

const defaultIo: SpoolIo = {
  /**
   * A synchronous write: it lands in the page cache in microseconds, where a thread-pool write
   * would cost two thread wake-ups per group commit, more than the write itself. Only the
   * fdatasync, which waits for the disk, goes to the thread pool.
   */
  async write(fh, data, position) {
    let done = 0;
    while (done < data.length) done += writeSync(fh.fd, data, done, data.length - done, position + done);
  },
  datasync: (fh) => fh.datasync(),
};

interface ActiveSegment {
  seg: number;
  fh: FileHandle;
  /** Bytes of data written (durable or not): where the next line goes. */
  size: number;
  /** Length of the file: data, then zeros up to here. */
  allocated: number;
  /** fdatasyncs running on `fh`. */
  syncs: Set<Promise<void>>;
}

/** A batch written to the active segment, waiting for a sync. */
interface Written {
  seq: number;
  /** Segment size after this write. */
  end: number;
  count: number;
  entries: Pending[];
}

interface Pending {
  /** The events' JSON texts, framed into spool lines only when written; none for a flush barrier. */
  lines: readonly string[];
  count: number;
  /** Strict entries are settled after the sync; async entries were already acknowledged. */
  strict: boolean;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** Opens (and recovers) the spool in `opts.dir`, creating it with owner-only permissions. */
export async function openSpool(opts: SpoolOptions): Promise<AuditSpool> {
  const dir = opts.dir;
  const mode = opts.mode ?? 'strict';
  const segmentMaxBytes = opts.segmentMaxBytes ?? 64 * 1024 * 1024;
  const delayMs = opts.groupCommitMaxDelayMs ?? 0;
  const maxSyncs = Math.max(1, opts.maxSyncsInFlight ?? 4);
  const retryMs = opts.failureRetryMs ?? 1000;
  const io: SpoolIo = { ...defaultIo, ...opts.io };
  const log = opts.logger;

  // The trail holds PHI: owner-only directory and files.
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await acquireLock(dir);

  /** The segment files on disk, oldest first (the active one included). */
  let segments: number[];
  let cursorStore: CursorStore | undefined;
  let cursor: SpoolPosition;
  const stats = { events: 0, writes: 0, syncs: 0, tornLines: 0 };
  let backlog = 0;
  try {
    segments = await listSegments(dir);
    cursorStore = await openCursor(dir);
    cursor = await startPosition(dir, segments, cursorStore.position);
    // Recovery: count what is left to ship, skipping torn lines. New writes always go to a new
    // segment, so an old segment's torn tail stays where it is and is never followed by good data.
    for (const seg of segments) {
      if (seg < cursor.segment) continue;
      const r = await scanSegment(segmentPath(dir, seg), seg === cursor.segment ? cursor.offset : 0, undefined, (line) => {
        if (decodeSpoolLine(line)) backlog++;
        else stats.tornLines++;
        return true;
      });
      if (r.tornTail) stats.tornLines++;
    }
  } catch (err) {
    await cursorStore?.close();
    await releaseLock(dir);
    throw err;
  }
  const cursors = cursorStore;
  if (stats.tornLines) log?.warn({ tornLines: stats.tornLines }, 'audit spool: torn lines skipped on recovery');

  /**
   * The highest segment number ever used here (or pointed at by the cursor): a new segment takes
   * the next one. It never goes down, so a number is never reused, even once every segment was
   * shipped and deleted.
   */
  let lastSegment = Math.max(segments.at(-1) ?? 0, cursor.segment);
  /**
   * Where the durable data of each segment sealed since open ends: readers never go past it, even
   * before a failed segment's unsynced tail is cut. Segments of an earlier run are read up to their
   * first NUL (recovery).
   */
  const sealedEnds = new Map<number, number>();
  let active: ActiveSegment | undefined;
  /** End of the last write known durable in the active segment: readers never go past it. */
  let durableOffset = 0;
  let pending: Pending[] = [];
  /** Written batches waiting for a sync, oldest first. */
  let unconfirmed: Written[] = [];
  let writeSeq = 0;
  /** Async-mode events acknowledged but not yet written when the spool failed; written first on recovery. */
  let retained: Pending[] = [];
  let scheduled = false;
  let writing = false;
  let syncsInFlight = 0;
  /** The last write (data or zero-fill) issued on the active segment's descriptor. */
  let lastFileWrite: Promise<unknown> = Promise.resolve();
  /** Every write-and-sync and every seal under way, so that `close()` can wait for them. */
  const running = new Set<Promise<void>>();
  let failure: { reason: string; since: string } | undefined;
  let probeTimer: NodeJS.Timeout | undefined;
  let closed = false;

  /**
   * The queue every change of the spool's shape goes through, one at a time: opening a segment,
   * sealing a failed one, recovering, reading for the shipper, moving the cursor, deleting shipped
   * segments, closing. None of these waits for another queued change, so the queue cannot deadlock;
   * the appends into the active segment do not use it.
   */
  let queue: Promise<unknown> = Promise.resolve();
  function serially<T>(change: () => Promise<T>): Promise<T> {
    const run = queue.then(change);
    queue = run.catch(noop);
    return run;
  }

  /** Registers background work for `close()` to wait for. */
  function track(job: Promise<void>): void {
    running.add(job);
    void job.finally(() => running.delete(job));
  }

  /**
   * Lines are kept as text until their group is written, then encoded into one buffer of this spool,
   * reused from write to write (writes are serialised, and an io never keeps the buffer once its
   * write resolved): a fresh multi-kilobyte Buffer per event costs more than the encoding itself.
   */
  let scratch = Buffer.allocUnsafe(64 << 10);
  /**
   * The spool lines of a batch, framed straight into the reused buffer: each JSON text is encoded in
   * place and its CRC computed over the bytes written. Joining the texts into one string first
   * cost more than everything else the spool does (a DIM search page is a hundred events, ~350 KB:
   * V8 allocates a string that large outside its young generation, 1.3 ms a join on this machine).
   */
  function frame(batch: readonly Pending[]): Buffer {
    let bound = 0;
    for (const p of batch) for (const json of p.lines) bound += json.length * 3 + LINE_OVERHEAD;
    if (bound > scratch.length) scratch = Buffer.allocUnsafe(Math.max(bound, scratch.length * 2));
    let at = 0;
    for (const p of batch) for (const json of p.lines) at = frameLine(scratch, at, json);
    return scratch.subarray(0, at);
  }

  function unavailable(): ProxyError {
    return new ProxyError('ERR_AUDIT_UNAVAILABLE', 'The audit trail cannot be written; the request is refused.', {
      expose: true,
      detail: failure ? failure.reason : 'audit spool closed',
    });
  }

  /** Waits a turn of the event loop (or, on an idle spool, the group-commit delay) to gather companions. */
  function schedule(): void {
    // A running write or a full set of syncs kicks the next write when it completes.
    if (scheduled || failure || writing || syncsInFlight >= maxSyncs) return;
    scheduled = true;
    const run = () => {
      scheduled = false;
      kick();
    };
    if (delayMs > 0 && syncsInFlight === 0) setTimeout(run, delayMs);
    else setImmediate(run);
  }

  /**
   * Starts the next write if none is running and a sync slot is free. Writes are serialised (one
   * `write()` at a time, so lines never interleave); their fdatasyncs may overlap, up to
   * `maxSyncsInFlight`: on a busy disk a request then waits for one sync, not for the rest of the
   * previous one plus its own. Whatever arrives meanwhile is grouped into the next write.
   */
  function kick(): void {
    if (writing || failure || syncsInFlight >= maxSyncs || !pending.length) return;
    const batch = pending;
    pending = [];
    track(writeAndSync(batch));
  }

  async function writeAndSync(batch: Pending[]): Promise<void> {
    if (!batch.some((p) => p.lines.length > 0)) {
      // A flush barrier (or empty appends): settled with the last write still awaiting its sync.
      const last = unconfirmed.at(-1);
      if (last) last.entries.push(...batch);
      else for (const p of batch) p.resolve();
      return;
    }
    writing = true;
    syncsInFlight++;
    let file: ActiveSegment;
    let written: Written;
    try {
      const buf = frame(batch);
      // The common case takes no turn of the event loop: only a write that needs a new segment
      // waits, for the queue of shape changes.
      file = active && !(active.size > 0 && active.size + buf.length > segmentMaxBytes) ? active : await serially(openNextSegment);
      const write = io.write(file.fh, buf, file.size);
      lastFileWrite = write;
      await write;
      // The spool failed while this write was under way: its segment is being sealed, and the
      // bytes just written are cut with the rest of what was not durable.
      if (failure || file !== active) throw Object.assign(new Error('audit spool failed during a write'), { code: 'EIO' });
      stats.writes++;
      file.size += buf.length;
      written = { seq: ++writeSeq, end: file.size, count: batch.reduce((n, p) => n + p.count, 0), entries: batch };
      unconfirmed.push(written);
    } catch (err) {
      writing = false;
      syncsInFlight--;
      fail(err, batch);
      return;
    }
    // Registered before the next write may start: a rotation waits for the syncs on the old file.
    const sync = io.datasync(file.fh);
    file.syncs.add(sync);
    // Zero-filling is a write too: done while `writing` holds, so it never meets a data write.
    if (file.allocated - file.size < EXTEND_LOW_WATER) {
      const zeroFill = extend(file);
      lastFileWrite = zeroFill;
      await zeroFill;
    }
    writing = false;
    kick();
    try {
      try {
        await sync;
      } finally {
        file.syncs.delete(sync);
      }
      stats.syncs++;
      confirm(written, file);
    } catch (err) {
      fail(err);
    } finally {
      syncsInFlight--;
      kick();
    }
  }

  /** A sync returned: everything written before it was issued is durable (fdatasync semantics). */
  function confirm(upTo: Written, file: ActiveSegment): void {
    if (failure) return;
    while (unconfirmed.length && unconfirmed[0]!.seq <= upTo.seq) {
      const w = unconfirmed.shift()!;
      stats.events += w.count;
      backlog += w.count;
      for (const p of w.entries) p.resolve();
    }
    if (file === active) durableOffset = Math.max(durableOffset, upTo.end);
  }

  /**
   * Zero-fills the next stretch of the segment, past its data. Best effort: when it fails or falls
   * short (a full disk), appends simply grow the file; the write that cannot be made reports the
   * failure.
   */
  async function extend(file: ActiveSegment): Promise<void> {
    const from = Math.max(file.allocated, file.size);
    const length = Math.min(EXTEND_BYTES, segmentMaxBytes - from);
    if (length <= 0) return;
    zeros ??= Buffer.alloc(EXTEND_BYTES);
    try {
      // Megabytes of zeros: written from the thread pool, not on the event loop.
      const { bytesWritten } = await file.fh.write(zeros, 0, length, from);
      file.allocated = from + bytesWritten;
    } catch (err) {
      log?.debug({ code: (err as NodeJS.ErrnoException).code }, 'audit spool: segment not zero-filled ahead');
    }
  }

  /**
   * Seals the active segment (after the syncs still running on it, since a closed descriptor's
   * number can be reused by another file) and opens the next one. Runs in the queue, called by
   * the one write under way, so no other write and no other change of shape meets it.
   */
  async function openNextSegment(): Promise<ActiveSegment> {
    if (failure || closed) throw Object.assign(new Error('audit spool not writable'), { code: 'EIO' });
    const old = active;
    if (old) {
      await Promise.allSettled([...old.syncs]);
      // A sync of the old segment failed meanwhile: `fail()` took it over and seals it.
      if (failure) throw Object.assign(new Error('spool failed during rotation'), { code: 'EIO' });
      // Every write on it was synced: its durable data ends where its data ends.
      sealedEnds.set(old.seg, old.size);
      active = undefined;
      await old.fh.close();
    }
    const seg = ++lastSegment;
    const path = segmentPath(dir, seg);
    // Written at explicit positions (not O_APPEND): the file holds zeros past the data.
    const fh = await open(path, 'wx', 0o600);
    try {
      // The new file's directory entry must be durable too, or a crash could lose the whole segment.
      await fsyncDir(dir);
    } catch (err) {
      await fh.close().catch(noop);
      await unlink(path).catch(noop);
      throw err;
    }
    segments = [...segments, seg];
    active = { seg, fh, size: 0, allocated: 0, syncs: new Set() };
    durableOffset = 0;
    return active;
  }

  /**
   * A write or sync failed. Synchronously: the spool refuses appends, strict callers waiting for
   * their sync are refused, and the active segment is sealed at its durable end (readers never see
   * the rest). Then, in the queue: the unsynced tail is cut and the descriptor let go of.
   */
  function fail(err: unknown, batch: Pending[] = []): void {
    const first = !failure;
    if (first) {
      const code = (err as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
      failure = { reason: `audit spool cannot be written (${code}${code === 'ENOSPC' ? ': disk full' : ''})`, since: new Date().toISOString() };
      log?.error({ code }, 'audit spool write failed; strict requests are refused until it recovers');
    }
    // Strict callers are answered now (their requests get a 503) rather than left waiting for a
    // recovery that may not come; async events were acknowledged and must be kept.
    const stranded = [...unconfirmed.flatMap((w) => w.entries), ...batch, ...pending];
    unconfirmed = [];
    pending = [];
    for (const p of stranded) {
      if (p.strict) p.reject(unavailable());
      else if (p.count) retained.push(p);
    }
    if (!first) return;
    const broken = active;
    active = undefined;
    if (broken) {
      const end = durableOffset;
      sealedEnds.set(broken.seg, end);
      track(
        serially(async () => {
          // A data or zero-fill write still under way on it lands before the cut.
          await lastFileWrite.catch(noop);
          // Cut whatever part of the failed writes reached the file, so that only acknowledged
          // events remain (and a full disk gets that room back); then let go of the descriptor
          // (after a failed sync its state is unknown).
          await broken.fh.truncate(end).catch(noop);
          await Promise.allSettled([...broken.syncs]);
          await broken.fh.close().catch(noop);
        }),
      );
    }
    armProbe();
  }

  function armProbe(): void {
    if (probeTimer || closed) return;
    probeTimer = setTimeout(() => {
      probeTimer = undefined;
      track(probe());
    }, retryMs);
    probeTimer.unref();
  }

  async function probe(): Promise<void> {
    const recovered = await serially(async () => {
      if (!failure || closed) return false;
      const path = join(dir, PROBE_FILE);
      try {
        const fh = await open(path, 'w', 0o600);
        try {
          await io.write(fh, Buffer.alloc(4096), 0);
          await io.datasync(fh);
        } finally {
          await fh.close();
        }
        await unlink(path);
      } catch {
        await unlink(path).catch(noop);
        return false;
      }
      failure = undefined;
      pending = [...retained, ...pending];
      retained = [];
      return true;
    });
    if (recovered) {
      log?.info('audit spool writable again');
      kick();
    } else if (failure) {
      armProbe();
    }
  }

  /** The next unshipped events; in the queue, so the segments and the cursor hold still. */
  async function readLocked(max: number): Promise<SpoolBatch | undefined> {
    if (closed) return undefined;
    const start = { ...cursor };
    const events: AuditEvent[] = [];
    let pos = { ...cursor };
    for (const seg of segments) {
      if (seg < pos.segment) continue;
      if (seg > pos.segment) pos = { segment: seg, offset: 0 };
      const isActive = seg === active?.seg;
      // Taken now: the active segment's durable end moves on with each sync.
      const limit = isActive ? durableOffset : sealedEnds.get(seg);
      const r = await scanSegment(segmentPath(dir, seg), pos.offset, limit, (line) => {
        const ev = decodeSpoolLine(line);
        if (ev) events.push(ev);
        else stats.tornLines++;
        return events.length < max;
      });
      pos = { segment: seg, offset: r.offset };
      // Active when its limit was taken: what follows is not durable yet (or was cut by a failure
      // meanwhile, whose seal then sets where the next batch stops).
      if (events.length >= max || isActive) break;
      // A sealed segment read to its end (nothing is ever added to it again): the next batch starts
      // after it, so that it can be deleted, the last one included.
      pos = { segment: seg + 1, offset: 0 };
    }
    if (events.length === 0) {
      // Nothing to ship, but stepping over exhausted segments still lets them be deleted.
      if (pos.segment !== start.segment || pos.offset !== start.offset) await commitLocked({ events, start, end: pos });
      return undefined;
    }
    return { events, start, end: pos };
  }

  async function commitLocked(batch: SpoolBatch): Promise<void> {
    if (closed) throw new Error('audit spool closed');
    if (batch.start.segment !== cursor.segment || batch.start.offset !== cursor.offset) {
      throw new TypeError('audit spool: commit of a batch that does not start at the cursor');
    }
    await cursors.save(batch.end);
    cursor = { ...batch.end };
    backlog = Math.max(0, backlog - batch.events.length);
    // Every segment behind the cursor is fully shipped and sealed (the active one is never behind it).
    for (const seg of segments) {
      if (seg >= cursor.segment || seg === active?.seg) continue;
      try {
        await unlink(segmentPath(dir, seg));
      } catch (err) {
        // Kept in the list: the next commit tries again.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
          log?.warn({ code: (err as NodeJS.ErrnoException).code }, 'audit spool: a shipped segment could not be deleted');
          continue;
        }
      }
      segments = segments.filter((s) => s !== seg);
      sealedEnds.delete(seg);
    }
  }

  const spool: AuditSpool = {
    append(events) {
      if (closed || failure) return Promise.reject(unavailable());
      const lines = 'json' in events ? events.json : events.map((e) => JSON.stringify(e));
      const count = lines.length;
      if (mode === 'async') {
        pending.push({ lines, count, strict: false, resolve: noop, reject: noop });
        schedule();
        return Promise.resolve();
      }
      return new Promise<void>((resolve, reject) => {
        pending.push({ lines, count, strict: true, resolve, reject });
        schedule();
      });
    },

    flush() {
      if (failure) return Promise.reject(unavailable());
      if (!pending.length && !unconfirmed.length && !writing) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        pending.push({ lines: [], count: 0, strict: true, resolve, reject });
        schedule();
        kick();
      });
    },

    health() {
      if (closed) return { ok: false, reason: 'audit spool closed' };
      return failure ? { ok: false, reason: `${failure.reason} since ${failure.since}` } : { ok: true };
    },

    readBatch: (max) => serially(() => readLocked(max)),

    commit: (batch) => serially(() => commitLocked(batch)),

    backlog: () => backlog,

    stats: () => ({ ...stats, segments: segments.length, backlog }),

    async close() {
      if (closed) return;
      if (!failure) await spool.flush().catch(noop);
      closed = true;
      if (probeTimer) clearTimeout(probeTimer);
      // Writes (and the segment they may be opening), seals and probes first, then the files.
      while (running.size) await Promise.allSettled([...running]);
      await serially(async () => {
        if (active) await active.fh.close().catch(noop);
        active = undefined;
        await cursors.close();
        await releaseLock(dir);
      });
    },
  };
  return spool;
}

/**
 * Reads every valid event left in a spool directory (shipped or not), without locking it: for
 * `caregate review` on a spool and for tests. Torn or corrupt lines are counted and skipped.
 */
export async function readSpoolDir(dir: string): Promise<{ events: AuditEvent[]; tornLines: number }> {
  const events: AuditEvent[] = [];
  let tornLines = 0;
  for (const seg of await listSegments(dir)) {
    const r = await scanSegment(segmentPath(dir, seg), 0, undefined, (line) => {
      const ev = decodeSpoolLine(line);
      if (ev) events.push(ev);
      else tornLines++;
      return true;
    });
    if (r.tornTail) tornLines++;
  }
  return { events, tornLines };
}

/** CRC (8 hex digits), a space, the JSON, a newline: what a line adds to its JSON text. */
const LINE_OVERHEAD = 10;

/** One spool line: `<crc32 of the JSON's UTF-8 bytes, 8 hex> <JSON>\n`. */
export function encodeSpoolLine(event: AuditEvent): Buffer {
  const json = JSON.stringify(event);
  const buf = Buffer.allocUnsafe(json.length * 3 + LINE_OVERHEAD);
  return buf.subarray(0, frameLine(buf, 0, json));
}

/**
 * Writes the spool line of `json` into `buf` at `at` (room for `json.length * 3 + LINE_OVERHEAD`
 * bytes: UTF-8 takes at most three bytes per UTF-16 unit) and returns where the line ends. The CRC
 * is computed over the bytes written, so it is the CRC of the UTF-8 text a reader decodes.
 */
function frameLine(buf: Buffer, at: number, json: string): number {
  const start = at + 9;
  const end = start + buf.write(json, start, 'utf8');
  buf.write(crc32(buf.subarray(start, end)).toString(16).padStart(8, '0'), at, 'latin1');
  buf[at + 8] = 0x20;
  buf[end] = 0x0a;
  return end + 1;
}

/** Parses a line (without its newline); `undefined` when torn, corrupt or not an AuditEvent with an id. */
export function decodeSpoolLine(line: Buffer): AuditEvent | undefined {
  if (line.length < 11 || line[8] !== 0x20) return undefined;
  const expected = Number.parseInt(line.toString('latin1', 0, 8), 16);
  const json = line.subarray(9);
  if (!Number.isFinite(expected) || crc32(json) !== expected) return undefined;
  try {
    const ev = JSON.parse(json.toString('utf8')) as AuditEvent;
    return ev && ev.resourceType === 'AuditEvent' && typeof ev.id === 'string' ? ev : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------

function noop(): void {}

function segmentPath(dir: string, seg: number): string {
  return join(dir, `spool-${String(seg).padStart(10, '0')}.jsonl`);
}

async function listSegments(dir: string): Promise<number[]> {
  const names = await readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  return names
    .map((n) => SEGMENT_RE.exec(n)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}

interface CursorStore {
  /** The last position saved, if any slot holds a valid one. */
  position: SpoolPosition | undefined;
  save(pos: SpoolPosition): Promise<void>;
  close(): Promise<void>;
}

/**
 * The shipped position, kept in two fixed-size slot files written alternately **in place**
 * (`<crc32> {"seq":…,"segment":…,"offset":…}` padded to 128 bytes). Overwriting allocated blocks
 * needs no free space, so on a full disk the shipper can still record its progress and delete
 * shipped segments, which is what frees the disk. A slot torn by a crash fails its CRC and the other
 * (older) slot is used: that only re-sends events, which the idempotent shipment turns into no-ops.
 */
async function openCursor(dir: string): Promise<CursorStore> {
  const slots: { fh: FileHandle; seq: number; pos: SpoolPosition | undefined }[] = [];
  for (const name of CURSOR_SLOTS) {
    const path = join(dir, name);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      fh = await open(path, 'w+', 0o600);
      await fh.write(Buffer.alloc(CURSOR_RECORD_BYTES, 0x20), 0, CURSOR_RECORD_BYTES, 0);
      await fh.sync();
      await fsyncDir(dir);
    }
    const buf = Buffer.alloc(CURSOR_RECORD_BYTES);
    await fh.read(buf, 0, CURSOR_RECORD_BYTES, 0);
    slots.push({ fh, ...decodeCursor(buf) });
  }
  let seq = Math.max(...slots.map((s) => s.seq));
  const newest = slots.reduce((a, b) => (b.seq > a.seq ? b : a));
  return {
    position: newest.pos,
    async save(pos) {
      seq++;
      const slot = slots[seq % 2]!;
      const json = JSON.stringify({ seq, segment: pos.segment, offset: pos.offset });
      const record = Buffer.alloc(CURSOR_RECORD_BYTES, 0x20);
      record.write(`${crc32(Buffer.from(json)).toString(16).padStart(8, '0')} ${json}`, 0, 'latin1');
      record[CURSOR_RECORD_BYTES - 1] = 0x0a;
      await slot.fh.write(record, 0, CURSOR_RECORD_BYTES, 0);
      await slot.fh.datasync();
    },
    async close() {
      for (const s of slots) await s.fh.close().catch(() => undefined);
    },
  };
}

function decodeCursor(buf: Buffer): { seq: number; pos: SpoolPosition | undefined } {
  const text = buf.toString('latin1').trimEnd();
  const m = /^([0-9a-f]{8}) (\{.*\})$/.exec(text);
  if (!m || Number.parseInt(m[1]!, 16) !== crc32(Buffer.from(m[2]!))) return { seq: -1, pos: undefined };
  try {
    const raw = JSON.parse(m[2]!) as { seq?: unknown; segment?: unknown; offset?: unknown };
    if (!Number.isSafeInteger(raw.seq) || !Number.isSafeInteger(raw.segment) || !Number.isSafeInteger(raw.offset) || (raw.offset as number) < 0) {
      return { seq: -1, pos: undefined };
    }
    return { seq: raw.seq as number, pos: { segment: raw.segment as number, offset: raw.offset as number } };
  } catch {
    return { seq: -1, pos: undefined };
  }
}

/**
 * Where shipping resumes. Without a valid saved position, from the oldest segment: re-sending is
 * harmless (idempotent), trusting a bad position could skip events.
 */
async function startPosition(dir: string, segments: readonly number[], saved: SpoolPosition | undefined): Promise<SpoolPosition> {
  const first = { segment: segments[0] ?? 1, offset: 0 };
  if (!saved) return first;
  if (segments.includes(saved.segment)) {
    const size = (await stat(segmentPath(dir, saved.segment))).size;
    return saved.offset <= size ? saved : first;
  }
  const next = segments.find((s) => s > saved.segment);
  return next === undefined ? { segment: saved.segment, offset: 0 } : { segment: next, offset: 0 };
}

/**
 * Walks the complete lines of a segment from `start` (a line boundary) up to `end` (or EOF), calling
 * `visit(line)` until it returns false. Returns the offset after the last visited line and whether
 * the file ends with an unterminated (torn) line.
 */
async function scanSegment(
  path: string,
  start: number,
  end: number | undefined,
  visit: (line: Buffer) => boolean,
): Promise<{ offset: number; tornTail: boolean }> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { offset: start, tornTail: false };
    throw err;
  }
  try {
    const limit = end ?? (await fh.stat()).size;
    let position = start;
    let carry: Buffer = EMPTY;
    let offset = start;
    while (position < limit) {
      const want = Math.min(READ_CHUNK, limit - position);
      const chunk = Buffer.allocUnsafe(want);
      const { bytesRead } = await fh.read(chunk, 0, want, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      let data = carry.length ? Buffer.concat([carry, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
      // The first NUL ends the data: zero-filled room follows, or the torn tail of a crash.
      const nul = data.indexOf(0, carry.length);
      if (nul !== -1) data = data.subarray(0, nul);
      let lineStart = 0;
      for (let nl = data.indexOf(0x0a); nl !== -1; nl = data.indexOf(0x0a, lineStart)) {
        const line = data.subarray(lineStart, nl);
        lineStart = nl + 1;
        offset += line.length + 1;
        if (!visit(line)) return { offset, tornTail: false };
      }
      carry = Buffer.from(data.subarray(lineStart));
      if (nul !== -1) break;
    }
    return { offset, tornTail: carry.length > 0 };
  } finally {
    await fh.close();
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Spool directories open in this process. */
const openDirs = new Set<string>();

/**
 * One live process per spool directory: a second writer would interleave segments. A lock left by a
 * process that died (kill -9) is taken over.
 */
async function acquireLock(dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE);
  if (openDirs.has(resolve(dir))) throw new Error(`audit spool ${dir} is already open in this process`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(path, String(process.pid), { flag: 'wx', mode: 0o600 });
      openDirs.add(resolve(dir));
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
      // Our own pid in a lock we do not hold: a previous incarnation (a container restarted with the same pid).
      if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
        throw new Error(`audit spool ${dir} is in use by process ${holder}`);
      }
      await unlink(path).catch(() => undefined);
    }
  }
  throw new Error(`audit spool ${dir}: could not take the lock`);
}

async function releaseLock(dir: string): Promise<void> {
  await unlink(join(dir, LOCK_FILE)).catch(() => undefined);
  openDirs.delete(resolve(dir));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
