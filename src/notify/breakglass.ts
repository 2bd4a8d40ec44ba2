import { randomUUID } from 'node:crypto';
import type { AuditEvent, Bundle, CareTeam, Consent, Encounter, PractitionerRole } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import { CaregateSubtype, DcmSubtype } from '../audit/codes.js';
import { notificationEvent, notificationStatuses } from '../audit/notification-event.js';
import { literalRef, periodCovers } from '../relate/careset.js';
import { applying, oppositionsOf } from '../relate/oppositions.js';
import type { FhirClient } from '../upstream/client.js';
import type { BreakGlassNotificationsConfig } from './config.js';
import { isGrantedOpening, openingCommunications, openingOf, openingWebhookBody, type Opening } from './messages.js';

/**
 * Told after an emergency access: each break-the-glass opening produces a notification for the
 * patient and for her attending physician (FHIR `Communication` resources written to the upstream
 * with caregate's credential, or a webhook), and an AuditEvent saying it was sent, or not yet.
 *
 * The emergency access never waits for it: the opening hands it over once its start event is
 * durable, and it is sent in the background, retried with backoff until it succeeds.
 *
 * The outbox is the audit trail itself. A start event is durable (strict spool) before the grant is
 * used, and the notification event that follows a successful send is durable too; an opening whose
 * trail holds no `sent` notification is unsent. So nothing is kept beside the trail: after a
 * restart (or on another instance) `reconcile()` reads the recent start events and notification
 * events from the trail and sends what is missing. Every write is idempotent (Communications have
 * ids derived from the start event's, the webhook gets `Idempotency-Key`), so sending twice, from
 * a retry or from two instances, leaves one notification. The DIM's review reads the same events:
 * sent, failed (retrying), or pending (no notification event yet).
 */
export interface BreakGlassNotifier {
  /** Queues the notification of an opening whose start event is durable. Never throws, never waits. */
  notify(opening: Opening): void;
  /** Reads the trail for recent openings without a sent notification and queues them; returns how many. */
  reconcile(): Promise<number>;
  start(): void;
  stop(): Promise<void>;
  /** Openings whose notification is being sent or waits for a retry. */
  readonly pending: number;
}

export interface BreakGlassNotifierOptions {
  /** The upstream, with caregate's credential: stays, teams, roles, and the Communications written. */
  client: FhirClient;
  /** Where the audit trail is read (the upstream, or the audit server); absent: no reconciliation. */
  trail?: FhirClient;
  /** Appends AuditEvents to the spool; resolves once durable. */
  audit(events: AuditEvent[]): Promise<void>;
  config: () => BreakGlassNotificationsConfig;
  /** Encounter statuses of a current stay (the policy's). */
  encounterStatuses: () => readonly string[];
  site: string;
  logger: Logger;
  now?: () => number;
  fetch?: typeof fetch;
}

interface Job {
  opening: Opening;
  attempts: number;
  nextAt: number;
  failureRecorded: boolean;
  running: boolean;
}

export function createBreakGlassNotifier(opts: BreakGlassNotifierOptions): BreakGlassNotifier {
  const now = opts.now ?? Date.now;
  const doFetch = opts.fetch ?? fetch;
  const jobs = new Map<string, Job>();
  let timer: NodeJS.Timeout | undefined;
  let reconciler: NodeJS.Timeout | undefined;
  let stopped = false;
  const running = new Set<Promise<void>>();

  function schedule(): void {
    if (stopped) return;
    clearTimeout(timer);
    const due = [...jobs.values()].filter((j) => !j.running).map((j) => j.nextAt);
    if (due.length === 0) return;
    timer = setTimeout(tick, Math.max(0, Math.min(...due) - now()));
    timer.unref();
  }

  function tick(): void {
    const t = now();
    for (const job of jobs.values()) {
      if (job.running || job.nextAt > t) continue;
      job.running = true;
      const p = attempt(job).finally(() => {
        job.running = false;
        running.delete(p);
        schedule();
      });
      running.add(p);
    }
  }

  async function attempt(job: Job): Promise<void> {
    const cfg = opts.config();
    const o = job.opening;
    try {
      const attending = cfg.recipients.includes('attending') ? await attendingOf(o) : [];
      const to = { patient: cfg.recipients.includes('patient'), attending };
      let communications: string[] = [];
      if (cfg.channel === 'communication') communications = await writeCommunications(o, to, cfg);
      else if (cfg.channel === 'webhook') await postWebhook(o, to, cfg);
      const recipients = [...(to.patient ? ['patient'] : []), ...(attending.length ? ['attending'] : [])];
      await record(o, { status: 'sent', channel: cfg.channel === 'webhook' ? 'webhook' : 'communication', recipients, communications });
      jobs.delete(o.eventId);
      opts.logger.info({ event: o.eventId, channel: cfg.channel, attempts: job.attempts + 1 }, 'break-the-glass notification sent');
    } catch (err) {
      job.attempts++;
      const failure = failureCode(err);
      const delay = Math.min(cfg.retry.maxMs, cfg.retry.initialMs * 2 ** Math.min(job.attempts - 1, 20));
      job.nextAt = now() + delay;
      opts.logger.warn({ event: o.eventId, failure, attempts: job.attempts, retryInMs: delay }, 'break-the-glass notification failed; retrying');
      if (!job.failureRecorded) {
        // The DIM sees it failing (and retried) before it succeeds; best effort, the trail may be down too.
        try {
          await record(o, { status: 'failed', channel: cfg.channel === 'webhook' ? 'webhook' : 'communication', recipients: cfg.recipients, failure });
          job.failureRecorded = true;
        } catch {
          // Logged above; the next failure tries to record it again.
        }
      }
    }
  }

  /**
   * The attending physicians of the patient: of her current stay, else of her active care teams;
   * never the opener, and never one she opposed (the message speaks of her record).
   */
  async function attendingOf(o: Opening): Promise<string[]> {
    const cfg = opts.config().attending;
    const t = now();
    const found = new Set<string>();
    const encounters = await opts.client.searchAll<Encounter>(
      'Encounter',
      { patient: `Patient/${o.patient}`, status: opts.encounterStatuses().join(','), _count: '100' },
      5,
    );
    for (const enc of encounters) {
      if (!periodCovers(enc.period, t)) continue;
      for (const part of enc.participant ?? []) {
        const ref = literalRef(part.individual);
        if (!ref || !periodCovers(part.period, t)) continue;
        if (!(part.type ?? []).some((cc) => cc.coding?.some((c) => c.code && cfg.encounterParticipantTypes.includes(c.code)))) continue;
        const practitioner = await practitionerOf(ref);
        if (practitioner) found.add(practitioner);
      }
    }
    if (found.size === 0 && cfg.careTeamRoles.length > 0) {
      const teams = await opts.client.searchAll<CareTeam>('CareTeam', { patient: `Patient/${o.patient}`, status: 'active', _count: '100' }, 5);
      for (const team of teams) {
        if (!periodCovers(team.period, t)) continue;
        for (const part of team.participant ?? []) {
          const roles = (part.role ?? []).flatMap((cc) => cc.coding ?? []).map((c) => `${c.system}|${c.code}`);
          const ref = literalRef(part.member);
          if (!ref || !periodCovers(part.period, t) || !roles.some((r) => cfg.careTeamRoles.includes(r))) continue;
          const practitioner = await practitionerOf(ref);
          if (practitioner) found.add(practitioner);
        }
      }
    }
    found.delete(o.practitioner);
    if (found.size === 0) return [];
    const consents = await opts.client.searchAll<Consent>('Consent', { patient: `Patient/${o.patient}`, status: 'active', _count: '100' }, 5);
    const recorded = consents.flatMap(oppositionsOf);
    const out: string[] = [];
    for (const practitioner of found) {
      if (recorded.length > 0 && applying(recorded, await refsOf(practitioner), t).length > 0) continue;
      out.push(practitioner);
    }
    return out.sort();
  }

  /** The references an opposition may name a practitioner by: herself, her active roles, their services. */
  async function refsOf(practitioner: string): Promise<Set<string>> {
    const roles = await opts.client.searchAll<PractitionerRole>('PractitionerRole', { practitioner, active: 'true', _count: '100' }, 5);
    const refs = new Set([practitioner]);
    for (const r of roles) {
      if (r.id) refs.add(`PractitionerRole/${r.id}`);
      const org = literalRef(r.organization);
      if (org) refs.add(org);
    }
    return refs;
  }

  async function practitionerOf(ref: string): Promise<string | undefined> {
    if (ref.startsWith('Practitioner/')) return ref;
    if (!ref.startsWith('PractitionerRole/')) return undefined;
    const role = await opts.client.read<PractitionerRole>('PractitionerRole', ref.slice('PractitionerRole/'.length));
    const p = literalRef(role?.practitioner);
    return role?.active !== false && p?.startsWith('Practitioner/') ? p : undefined;
  }

  /** PUTs the Communications (ids derived from the start event: a retry rewrites them). */
  async function writeCommunications(o: Opening, to: { patient: boolean; attending: string[] }, cfg: BreakGlassNotificationsConfig): Promise<string[]> {
    const comms = openingCommunications(o, to, { language: cfg.language, timeZone: cfg.timeZone }, now());
    if (comms.length === 0) return [];
    const bundle: Bundle = {
      resourceType: 'Bundle',
      type: 'batch',
      entry: comms.map((c) => ({ resource: c, request: { method: 'PUT', url: `Communication/${c.id}` } })),
    };
    const answer = await opts.client.batch(bundle);
    const statuses = (answer.entry ?? []).map((e) => e.response?.status ?? '');
    if (statuses.length !== comms.length || !statuses.every((s) => /^2\d\d/.test(s))) {
      throw new Error(`communication write answered ${statuses.join(',') || 'nothing'}`);
    }
    return comms.map((c) => `Communication/${c.id}`);
  }

  async function postWebhook(o: Opening, to: { patient: boolean; attending: string[] }, cfg: BreakGlassNotificationsConfig): Promise<void> {
    const hook = cfg.webhook!;
    const res = await doFetch(hook.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': o.eventId, ...hook.headers },
      body: JSON.stringify(openingWebhookBody(o, to)),
      signal: AbortSignal.timeout(hook.timeoutMs),
    });
    await res.arrayBuffer();
    if (res.status < 200 || res.status >= 300) throw new Error(`webhook answered HTTP ${res.status}`);
  }

  async function record(o: Opening, n: { status: 'sent' | 'failed'; channel: 'communication' | 'webhook'; recipients: readonly string[]; communications?: string[]; failure?: string }): Promise<void> {
    await opts.audit([
      notificationEvent({
        id: randomUUID(),
        requestId: `notification-${randomUUID()}`,
        recorded: new Date(now()).toISOString(),
        site: opts.site,
        patients: [o.patient],
        of: o.eventId,
        ...n,
      }),
    ]);
  }

  function enqueue(opening: Opening): boolean {
    if (stopped || jobs.has(opening.eventId) || opts.config().channel === 'none') return false;
    jobs.set(opening.eventId, { opening, attempts: 0, nextAt: now(), failureRecorded: false, running: false });
    return true;
  }

  async function reconcile(): Promise<number> {
    if (!opts.trail || opts.config().channel === 'none') return 0;
    const since = new Date(now() - opts.config().reconcile.days * 86_400_000).toISOString();
    const search = (subtype: { system: string; code: string }) =>
      opts.trail!.searchAll<AuditEvent>('AuditEvent', { subtype: `${subtype.system}|${subtype.code}`, date: `ge${since}`, _count: '500' }, 20);
    const [starts, notifications] = await Promise.all([search(DcmSubtype.emergencyOverrideStarted), search(CaregateSubtype.breakGlassNotification)]);
    const status = notificationStatuses(notifications);
    let queued = 0;
    for (const e of starts) {
      if (!e.id || status.get(e.id) === 'sent' || !isGrantedOpening(e)) continue;
      const opening = openingOf(e);
      if (opening && enqueue(opening)) queued++;
    }
    if (queued > 0) schedule();
    return queued;
  }

  return {
    notify(opening) {
      if (enqueue(opening)) schedule();
    },
    reconcile,
    start() {
      const run = () => {
        reconcile().catch((err: unknown) => opts.logger.warn({ failure: failureCode(err) }, 'break-the-glass notifications: the trail could not be read'));
      };
      run();
      reconciler = setInterval(run, opts.config().reconcile.intervalMs);
      reconciler.unref();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      clearInterval(reconciler);
      await Promise.allSettled([...running]);
    },
    get pending() {
      return jobs.size;
    },
  };
}

/** An error as a code for logs and the trail: never a message, which could quote data. */
function failureCode(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown; message?: unknown };
  if (typeof e?.code === 'string') return e.code;
  if (typeof e?.message === 'string' && /^(communication write|webhook) answered [\w ,]+$/.test(e.message)) return e.message;
  return typeof e?.name === 'string' ? e.name : 'error';
}
