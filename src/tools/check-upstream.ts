import { parseArgs } from 'node:util';
import type { Bundle, CapabilityStatement, DocumentReference } from '@medplum/fhirtypes';
import { ConfigError, loadConfig, type LoadedConfig } from '../config/load.js';
import { tryParseJsonStrict } from '../fhir/json.js';
import { serviceCredential, upstreamDispatcher } from '../upstream/credential.js';
import { toolingUpstream } from './explain.js';

/**
 * `caregate check-upstream`: what an operator checks before putting caregate in front of a FHIR
 * server, asked of the server itself with caregate's own credential and the forwarded headers
 * caregate sends: the FHIR version; on which base the server builds its paging links (and whether
 * caregate will recognise it); whether attachments are stored with a securityContext, and whether
 * the standard search finds their DocumentReference; whether compartment searches and $everything
 * answer. It prints findings and what to configure; no data (counts and URLs of bases only).
 */
export interface UpstreamFinding {
  check: string;
  ok: boolean;
  detail: string;
}

interface Probe {
  get(path: string): Promise<{ status: number; json: unknown }>;
}

export async function checkUpstream(
  upstreamUrl: string,
  opts: { publicBaseUrl: string; aliases: readonly string[]; forwardedHeaders: boolean; headers?: Record<string, string>; dispatcher?: unknown },
): Promise<UpstreamFinding[]> {
  const base = upstreamUrl.replace(/\/+$/, '');
  const pub = new URL(opts.publicBaseUrl);
  const headers: Record<string, string> = {
    accept: 'application/fhir+json',
    ...(opts.forwardedHeaders ? { 'x-forwarded-proto': pub.protocol.replace(':', ''), 'x-forwarded-host': pub.host, forwarded: `proto=${pub.protocol.replace(':', '')};host=${pub.host}` } : {}),
    ...opts.headers,
  };
  const probe: Probe = {
    async get(path) {
      const res = await fetch(`${base}${path}`, { headers, signal: AbortSignal.timeout(10_000), ...(opts.dispatcher ? { dispatcher: opts.dispatcher } : {}) } as RequestInit);
      const parsed = tryParseJsonStrict(Buffer.from(await res.arrayBuffer()));
      return { status: res.status, json: parsed.ok ? parsed.value : undefined };
    },
  };
  const known = [base, opts.publicBaseUrl.replace(/\/+$/, ''), ...opts.aliases.map((a) => a.replace(/\/+$/, ''))];
  const out: UpstreamFinding[] = [];
  const add = (check: string, ok: boolean, detail: string) => out.push({ check, ok, detail });

  const meta = await probe.get('/metadata').catch(() => undefined);
  const cs = meta?.json as CapabilityStatement | undefined;
  if (!meta || meta.status !== 200 || cs?.resourceType !== 'CapabilityStatement') {
    add('capability statement', false, `GET /metadata did not answer a CapabilityStatement (status ${meta?.status ?? 'none'}): check upstream.url and upstream.auth`);
    return out;
  }
  add('FHIR version', /^4\.0\./.test(cs.fhirVersion ?? ''), `fhirVersion ${cs.fhirVersion ?? 'absent'} (caregate enforces FHIR R4, 4.0.x)`);

  const page = await probe.get('/Patient?_count=1');
  const links = ((page.json as Bundle | undefined)?.link ?? []).map((l) => l.url ?? '');
  const bases = [...new Set(links.map((u) => baseOf(u)).filter((b): b is string => b !== undefined))];
  const unknown = bases.filter((b) => !known.some((k) => b === k));
  if (page.status !== 200) add('paging links', false, `GET /Patient?_count=1 answered ${page.status}`);
  else if (links.length === 0) add('paging links', true, 'the server answered without links (nothing to page)');
  else if (unknown.length > 0) {
    add('paging links', false, `links are built on ${unknown.join(', ')}, a base caregate does not know: add it to upstream.publicBaseAliases, or paging links will be dropped`);
  } else add('paging links', true, `links are built on ${bases.join(', ')}: caregate recognises them and seals them for each user`);

  const docs = await probe.get('/DocumentReference?_count=20');
  const refs = ((docs.json as Bundle<DocumentReference> | undefined)?.entry ?? [])
    .flatMap((e) => e.resource?.content ?? [])
    .map((c) => c.attachment?.url ?? '')
    .filter((u) => /(?:^|\/)Binary\/[A-Za-z0-9\-.]+$/.test(u));
  if (refs.length === 0) add('attachments', true, 'no DocumentReference with a Binary attachment among the first 20');
  else {
    let without = 0;
    let found = 0;
    for (const url of refs) {
      const id = url.slice(url.lastIndexOf('/') + 1);
      const bin = await probe.get(`/Binary/${id}`);
      if (bin.status === 200 && (bin.json as { securityContext?: unknown } | undefined)?.securityContext === undefined) {
        without++;
        const owners = await probe.get(`/DocumentReference?location=${encodeURIComponent(`Binary/${id}`)},${encodeURIComponent(`${base}/Binary/${id}`)}&_count=1`);
        if (((owners.json as Bundle | undefined)?.entry ?? []).length > 0) found++;
      }
    }
    if (without === 0) add('attachments', true, `the ${refs.length} Binaries sampled carry a securityContext: each is judged by its own content`);
    else if (found === without) {
      add('attachments', true, `${without} of ${refs.length} Binaries sampled have no securityContext; DocumentReference?location= finds their owner (one lookup per Binary, cached). caregate backfill-binaries would save the lookups`);
    } else {
      add('attachments', false, `${without - found} Binaries sampled have no securityContext and DocumentReference?location= does not find their owner: they will be refused. Run caregate backfill-binaries, or configure upstream.binaryOwnerSearches`);
    }
  }

  const patientId = ((page.json as Bundle | undefined)?.entry ?? [])[0]?.resource?.id;
  if (patientId) {
    const comp = await probe.get(`/Patient/${encodeURIComponent(patientId)}/Observation?_count=1`);
    add('compartment search', comp.status === 200, `GET Patient/<id>/Observation answered ${comp.status}${comp.status === 200 ? '' : ': clients that use compartments will get this status through caregate'}`);
    const all = await probe.get(`/Patient/${encodeURIComponent(patientId)}/$everything?_count=1`);
    add('$everything', all.status === 200, `GET Patient/<id>/$everything answered ${all.status}`);
  }
  return out;
}

/** The base of a link: what precedes the resource type or the query. */
function baseOf(url: string): string | undefined {
  const m = /^(https?:\/\/[^?]*?)(?:\/[A-Z][A-Za-z]+(?:[/?]|$)|\/?\?|\/_page|\/$|$)/.exec(url);
  return m?.[1]?.replace(/\/+$/, '');
}

const USAGE = `Usage: caregate check-upstream [--config FILE]

  Asks the FHIR server, with caregate's own credential and forwarded headers, what caregate needs to
  know: FHIR version, the base of its paging links, how attachments are stored, compartment searches.
`;

export async function runCheckUpstreamCli(argv: readonly string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: [...argv], options: { config: { type: 'string', short: 'c' } }, strict: true }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  let loaded: LoadedConfig;
  try {
    loaded = loadConfig(values.config ?? 'config/caregate.yaml');
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.problems.join('\n')}\n`);
      return 1;
    }
    throw err;
  }
  const { config } = loaded;
  const upstream = await toolingUpstream(loaded);
  const dispatcher = upstreamDispatcher(loaded);
  try {
    const publicBaseUrl = config.server.publicBaseUrl ?? `http://localhost:${config.server.port}${config.server.basePath === '/' ? '' : config.server.basePath}`;
    const findings = await checkUpstream(upstream.url, {
      publicBaseUrl,
      aliases: config.upstream.publicBaseAliases,
      forwardedHeaders: config.upstream.forwardedHeaders,
      headers: serviceCredential(loaded),
      ...(dispatcher ? { dispatcher } : {}),
    });
    for (const f of findings) process.stdout.write(`${f.ok ? 'ok  ' : 'FIX '} ${f.check}: ${f.detail}\n`);
    return findings.every((f) => f.ok) ? 0 : 1;
  } finally {
    await dispatcher?.close();
    await upstream.close();
  }
}
