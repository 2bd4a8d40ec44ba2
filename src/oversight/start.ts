import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuditEvent } from '@medplum/fhirtypes';
import type { Logger } from 'pino';
import type { ClientAddressOf } from '../http/addresses.js';
import type { Registry } from 'prom-client';
import type { ReviewSource } from '../audit/review-load.js';
import { ConfigError, configPath, type LoadedConfig } from '../config/load.js';
import { principalKey, type Principal } from '../identity/principal.js';
import { createPrincipalResolver } from '../identity/resolve.js';
import type { Policy, RoleConfig } from '../policy/config.js';
import type { CareSetResolver } from '../relate/careset.js';
import { createStaySets } from '../relate/stays.js';
import type { SharedState } from '../shared/state.js';
import type { FhirClient } from '../upstream/client.js';
import { createFormTokens } from './form-token.js';
import { openMonitor, type Monitor } from './monitor.js';
import { createReach } from './reach.js';
import { createOversightRoutes, type OversightRoute } from './routes.js';

/**
 * Wires the oversight from the configuration (the `oversight:` section, `audit.review`): the live
 * monitor (when enabled), the DIM's oversight views, and the anti-forgery tokens of the review
 * page's verdict forms. The server calls this once; the monitor is fed by its audit function.
 */
export interface OversightDeps {
  /** The client's address as the audit records it (the TCP peer, or X-Forwarded-For from `server.trustedProxies`). */
  clientAddress?: ClientAddressOf;
  loaded: LoadedConfig;
  client: FhirClient;
  careSets: CareSetResolver;
  shared: SharedState;
  trail: Extract<ReviewSource, { baseUrl: string }>;
  audit(events: AuditEvent[]): Promise<void>;
  identify(req: IncomingMessage): Promise<Principal>;
  roleOf(p: Principal): RoleConfig | undefined;
  policy(): Policy;
  publicBaseUrl: string;
  logger: Logger;
  registry: Registry;
  now: () => number;
  pseudonymSecret?: Buffer;
}

export interface Oversight {
  monitor: Monitor | undefined;
  handle(req: IncomingMessage, res: ServerResponse, route: OversightRoute): Promise<void>;
  /** The anti-forgery token of a DIM's verdict forms. */
  formToken(p: Principal): string;
}

export async function startOversight(d: OversightDeps): Promise<Oversight> {
  const { config } = d.loaded;
  const cfg = config.oversight;
  const review = config.audit.review;
  const hours = { timeZone: review.timeZone, offHoursStart: review.offHoursStart, offHoursEnd: review.offHoursEnd, weekends: review.weekends };
  let webhookSecret: string | undefined;
  if (cfg.webhook?.secretEnv) {
    webhookSecret = process.env[cfg.webhook.secretEnv];
    if (!webhookSecret) throw new ConfigError(d.loaded.file, [`oversight.webhook.secretEnv: the environment variable ${cfg.webhook.secretEnv} is not set`]);
  }
  const monitor = cfg.enabled
    ? await openMonitor({
        config: cfg,
        dir: configPath(d.loaded, cfg.dir),
        hours,
        site: config.audit.site,
        client: d.client,
        trail: d.trail,
        ...(webhookSecret ? { webhookSecret } : {}),
        logger: d.logger,
        registry: d.registry,
        now: d.now,
      })
    : undefined;
  const tokens = createFormTokens({ ...(d.pseudonymSecret ? { secret: d.pseudonymSecret } : {}), now: d.now });
  const handle = createOversightRoutes({
    ...(d.clientAddress ? { clientAddress: d.clientAddress } : {}),
    identify: d.identify,
    roleOf: d.roleOf,
    policy: d.policy,
    reach: createReach({
      client: d.client,
      policy: d.policy,
      grants: d.shared.grants,
      stays: createStaySets(d.client, d.now),
      careSets: d.careSets,
      principals: createPrincipalResolver({ client: d.client, practitionerIdentifierSystems: [], ttlSeconds: 0, max: 1, now: d.now }),
      now: d.now,
    }),
    trail: d.trail,
    review: { timeZone: review.timeZone, maxDays: review.maxDays },
    tokens,
    audit: d.audit,
    publicBaseUrl: d.publicBaseUrl,
    site: config.audit.site,
    logger: d.logger,
    now: d.now,
  });
  return { monitor, handle, formToken: (p) => tokens.issue(principalKey(p)) };
}
