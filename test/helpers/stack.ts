import { mkdtempSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/load.js';
import { startCaregate, type Caregate } from '../../src/server.js';
import { startDemoFhir } from '../../src/demo/server.js';
import { stringify } from 'yaml';
import { demoIssuerConfig, demoToken, ensureDemoSigningKey } from '../../src/demo/tokens.js';
import type { PersonaName } from '../../src/demo/personas.js';

/**
 * A whole stack for integration tests: the embedded demo FHIR engine (real medplum router) on a
 * free port, and caregate in front of it with the demo policy, a demo token issuer, and an audit
 * spool in a temporary folder.
 */
export interface Stack {
  gate: Caregate;
  /** caregate's FHIR base URL. */
  url: string;
  /** The upstream's FHIR base URL (for tests that compare, or that must not see it leak). */
  upstreamUrl: string;
  dir: string;
  token(persona: PersonaName, opts?: { scope?: string }): string;
  auth(persona: PersonaName): { authorization: string };
  close(): Promise<void>;
}

export interface StackOptions {
  patients?: number;
  /** Extra YAML appended to the caregate config (must not repeat top-level keys used here). */
  extraYaml?: string;
  /** Use this upstream instead of starting the demo engine (fault injection). */
  upstreamUrl?: string;
  /** A different policy file. */
  policyFile?: string;
  auditMode?: 'strict' | 'async';
  /** Extra keys of the `upstream:` mapping, e.g. `auth: { type: mtls, ... }`. */
  upstreamYaml?: string;
  /** Watch the policy file for changes (hot reload). */
  watchPolicy?: boolean;
  /** Extra keys of the `server:` mapping, e.g. `maxResponseBytes: 1mb`. */
  server?: string;
  /** caregate's clock (care-set and paging lifetimes, grants): a fake one lets a test move time. */
  now?: () => number;
  /** Options of the embedded demo engine: links built from forwarded headers (as HAPI behind a proxy), its base path. */
  demo?: { linksFromForwardedHeaders?: boolean; basePath?: string };
  /** The demo token issuer's keys: several instances given the same folder trust the same tokens. */
  keysDir?: string;
}

const ROOT = resolve(import.meta.dirname, '../..');

/** The `identity:` section trusting the demo token issuer whose keys are in `keysDir` (one source: demoIssuerConfig). */
export function demoIdentityYaml(keysDir: string): string {
  return stringify({ identity: { issuers: [demoIssuerConfig(keysDir)] } });
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const dir = mkdtempSync(join(tmpdir(), 'caregate-test-'));
  const keysDir = opts.keysDir ?? join(dir, 'keys');
  ensureDemoSigningKey(keysDir);
  copyFileSync(opts.policyFile ?? join(ROOT, 'config/policy.yaml'), join(dir, 'policy.yaml'));
  const demo = opts.upstreamUrl
    ? undefined
    : await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: 42, patients: opts.patients ?? 300 }, ...(opts.demo ?? {}) });
  const upstreamUrl = opts.upstreamUrl ?? demo!.url;
  const yaml = `
server: { host: 127.0.0.1, port: 0${opts.server ? `, ${opts.server}` : ''} }
upstream: { url: "${upstreamUrl}", timeoutMs: 2000, lookupTimeoutMs: 2000${opts.upstreamYaml ? `, ${opts.upstreamYaml}` : ''} }
logging: { level: silent }
${demoIdentityYaml(keysDir)}audit: { mode: ${opts.auditMode ?? 'strict'}, spoolDir: ${join(dir, 'audit')}, site: test, ship: { intervalMs: 100 } }
policy: { file: policy.yaml, watch: ${opts.watchPolicy ? 'true' : 'false'} }
${opts.extraYaml ?? ''}`;
  const loaded = parseConfig(yaml, join(dir, 'caregate.yaml'), {}, dir);
  const gate = await startCaregate({ loaded, upstreamUrl, logger: pino({ level: process.env.CAREGATE_TEST_LOG ?? 'silent' }), ...(opts.now ? { now: opts.now } : {}) });
  const token = (persona: PersonaName, o: { scope?: string } = {}) => demoToken(persona, { dir: keysDir, ...(o.scope ? { scope: o.scope } : {}) });
  return {
    gate,
    url: gate.url,
    upstreamUrl,
    dir,
    token,
    auth: (persona) => ({ authorization: `Bearer ${token(persona)}` }),
    async close() {
      await gate.close();
      await demo?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
