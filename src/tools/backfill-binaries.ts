import { parseArgs } from 'node:util';
import type { Binary, Resource } from '@medplum/fhirtypes';
import { ConfigError, loadConfig } from '../config/load.js';
import { createFhirClient, type FhirClient } from '../upstream/client.js';
import { serviceCredential, upstreamDispatcher } from '../upstream/credential.js';
import { attachmentUrls } from '../relate/binary-owners.js';
import { toolingUpstream } from './explain.js';

/**
 * `caregate backfill-binaries`: gives every Binary stored without `securityContext` the reference
 * of the one resource that points at it (its DocumentReference, DiagnosticReport or Media), on the
 * FHIR server itself, with caregate's service credential. After it, every such Binary is judged by
 * its own content, with no lookup of its owner at each read (docs/POLICY.md, "Attachments").
 *
 * A Binary pointed at by several resources is left as it is, and counted: `securityContext` holds
 * one reference, and choosing one would hide the others' patients. Nothing of the data is printed:
 * counts only.
 */
export interface BackfillResult {
  /** Resources read that may point at a Binary. */
  scanned: number;
  /** Binaries given a securityContext (or that would be, with `dryRun`). */
  updated: number;
  /** Binaries that already had one. */
  alreadySet: number;
  /** Binaries pointed at by more than one resource: left for a person to decide. */
  shared: number;
  /** Attachment URLs naming a Binary the server does not hold. */
  missing: number;
}

const OWNER_TYPES = ['DocumentReference', 'DiagnosticReport', 'Media'] as const;
const BINARY_URL = /(?:^|\/)Binary\/([A-Za-z0-9\-.]{1,64})$/;

export async function backfillBinaries(client: FhirClient, opts: { dryRun?: boolean; localBases: readonly string[]; maxPages?: number }): Promise<BackfillResult> {
  const owners = new Map<string, Set<string>>();
  let scanned = 0;
  for (const type of OWNER_TYPES) {
    const resources = await client.searchAll<Resource>(type, { _count: '500' }, opts.maxPages ?? 10_000);
    for (const r of resources) {
      scanned++;
      if (!r.id) continue;
      for (const url of attachmentUrls(r)) {
        const m = BINARY_URL.exec(url);
        if (!m) continue;
        const prefix = url.slice(0, url.length - m[0].length);
        if (prefix !== '' && !opts.localBases.includes(prefix)) continue;
        let set = owners.get(m[1]!);
        if (!set) owners.set(m[1]!, (set = new Set()));
        set.add(`${type}/${r.id}`);
      }
    }
  }
  const result: BackfillResult = { scanned, updated: 0, alreadySet: 0, shared: 0, missing: 0 };
  for (const [id, refs] of owners) {
    const binary = await client.read<Binary>('Binary', id);
    if (!binary) {
      result.missing++;
      continue;
    }
    if (binary.securityContext !== undefined) {
      result.alreadySet++;
      continue;
    }
    if (refs.size !== 1) {
      result.shared++;
      continue;
    }
    if (!opts.dryRun) await client.update({ ...binary, id, securityContext: { reference: [...refs][0]! } });
    result.updated++;
  }
  return result;
}

const USAGE = `Usage: caregate backfill-binaries [--config FILE] [--dry-run]

  Gives each Binary stored without securityContext the reference of the one DocumentReference,
  DiagnosticReport or Media that points at it, on the FHIR server, with caregate's own credential.
  Prints counts only. --dry-run writes nothing.
`;

/** `caregate backfill-binaries …`; returns the exit code. */
export async function runBackfillBinariesCli(argv: readonly string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: [...argv], options: { config: { type: 'string', short: 'c' }, 'dry-run': { type: 'boolean' } }, strict: true }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  try {
    const loaded = loadConfig(values.config ?? 'config/caregate.yaml');
    const upstream = await toolingUpstream(loaded);
    const dispatcher = upstreamDispatcher(loaded);
    try {
      const { config } = loaded;
      const client = createFhirClient({
        baseUrl: upstream.url,
        headers: serviceCredential(loaded),
        timeoutMs: config.upstream.timeoutMs,
        aliases: config.upstream.publicBaseAliases,
        ...(dispatcher ? { dispatcher } : {}),
      });
      const localBases = [upstream.url, ...(config.server.publicBaseUrl ? [config.server.publicBaseUrl] : []), ...config.upstream.publicBaseAliases];
      const r = await backfillBinaries(client, { dryRun: values['dry-run'] === true, localBases });
      process.stdout.write(
        `${r.scanned} resources scanned; ${r.updated} Binaries ${values['dry-run'] ? 'would be' : 'were'} given a securityContext; ` +
          `${r.alreadySet} had one; ${r.shared} are shared by several resources (left as they are); ${r.missing} named Binaries are missing.\n`,
      );
      return 0;
    } finally {
      await dispatcher?.close();
      await upstream.close();
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.problems.join('\n')}\n`);
      return 1;
    }
    throw err;
  }
}
