#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { loadConfig, configPath, ConfigError } from './config/load.js';
import { loadPolicy } from './policy/load.js';
import { createLogger } from './ops/logger.js';
import { startCaregate } from './server.js';
import { PERSONAS, type PersonaName } from './demo/personas.js';

const USAGE = `caregate: the medical-secrecy access proxy for FHIR R4 servers

Usage:
  caregate serve [--config FILE]            run the proxy (default config/caregate.yaml)
  caregate check-config [FILE]              validate a configuration and its policy file
  caregate demo-fhir [--port N] [--patients N] [--seed N]
                                            run the embedded demo FHIR server on its own
  caregate demo-token --as PERSONA [--config FILE]
                                            print a token of the demo hospital (${Object.keys(PERSONAS).join(', ')})
  caregate explain (--as PERSONA | --token JWT) [--config FILE] [--policy FILE] [--json]
                  [--body FILE] [--header 'Name: value'] METHOD URL
                                            why a request would be permitted or refused (nothing is forwarded)
  caregate test-policy CASES [--policy FILE] [--config FILE]
                                            run policy test cases through the proxy in front of the demo hospital
  caregate check-upstream [--config FILE]   what caregate needs to know of the FHIR server (links, attachments, compartments)
  caregate backfill-binaries [--config FILE] [--dry-run]
                                            give Binaries without securityContext the resource that points at them
  caregate review --from DATE --to DATE [--out DIR] [--patient ID] [--config FILE]
                                            write the DIM review report (HTML + CSV)
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'check-config':
      return checkConfig(rest);
    case 'demo-fhir': {
      const { runDemoFhirCli } = await import('./demo/server.js');
      const demo = await runDemoFhirCli(rest);
      const stop = () => void demo.close().then(() => process.exit(0));
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
      return new Promise<number>(() => {});
    }
    case 'demo-token':
      return demoTokenCmd(rest);
    case 'explain': {
      const { runExplainCli } = await import('./tools/explain.js');
      return runExplainCli(rest);
    }
    case 'test-policy': {
      const { runTestPolicyCli } = await import('./tools/test-policy.js');
      return runTestPolicyCli(rest);
    }
    case 'check-upstream': {
      const { runCheckUpstreamCli } = await import('./tools/check-upstream.js');
      return runCheckUpstreamCli(rest);
    }
    case 'backfill-binaries': {
      const { runBackfillBinariesCli } = await import('./tools/backfill-binaries.js');
      return runBackfillBinariesCli(rest);
    }
    case 'review': {
      const { runReviewCli } = await import('./audit/review-cli.js');
      return runReviewCli(rest);
    }
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

function configArg(rest: string[]): string {
  const { values, positionals } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' } }, allowPositionals: true, strict: false });
  return (values.config as string | undefined) ?? positionals[0] ?? 'config/caregate.yaml';
}

function checkConfig(rest: string[]): number {
  const file = configArg(rest);
  try {
    const loaded = loadConfig(file);
    const pol = loadPolicy(configPath(loaded, loaded.config.policy.file));
    process.stdout.write(`${file}: valid. Policy ${pol.file}: valid (revision ${pol.revision}, ${pol.policy.roles.length} roles).\n`);
    return 0;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.problems.join('\n')}\n`);
      return 1;
    }
    throw err;
  }
}

async function serve(rest: string[]): Promise<number> {
  const file = configArg(rest);
  let loaded;
  try {
    loaded = loadConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`caregate cannot start:\n${err.problems.join('\n')}\n`);
      return 1;
    }
    throw err;
  }
  const { config } = loaded;
  const logger = createLogger(config.logging.level);
  let upstreamUrl = config.upstream.url;
  let stopDemo: (() => Promise<void>) | undefined;
  if (upstreamUrl === null) {
    const { ensureDemoSigningKey } = await import('./demo/tokens.js');
    const { startDemoFhir } = await import('./demo/server.js');
    ensureDemoSigningKey(configPath(loaded, config.demo.keysDir));
    // The demo PKI (test card CA, CRL, a CPS-shaped card, a server certificate) must exist before a
    // configuration that uses it (config/examples/demo-mtls.yaml) builds its TLS listener.
    const { ensureDemoPki } = await import('./demo/pki.js');
    await ensureDemoPki(configPath(loaded, config.demo.pkiDir));
    const demo = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: config.demo.seed, patients: config.demo.patients }, linksFromForwardedHeaders: config.demo.linksFromForwardedHeaders, logger });
    upstreamUrl = demo.url;
    stopDemo = demo.close;
  }
  let gate;
  try {
    gate = await startCaregate({ loaded, upstreamUrl: upstreamUrl!, logger });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`caregate cannot start:\n${err.problems.join('\n')}\n`);
      await stopDemo?.();
      return 1;
    }
    throw err;
  }
  process.stderr.write(`caregate listening on ${gate.url}\n`);
  if (stopDemo) await printDemoBanner(gate.url, configPath(loaded, config.demo.keysDir), configPath(loaded, config.demo.pkiDir));

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) return;
    closing = true;
    logger.info({ signal }, 'shutting down: draining requests, flushing the audit spool');
    await gate.close();
    await stopDemo?.();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    gate.reloadPolicy();
  });
  return new Promise(() => {});
}

async function printDemoBanner(url: string, keysDir: string, pkiDir: string): Promise<void> {
  const { demoToken, demoCurl } = await import('./demo/tokens.js');
  const lines = [
    '',
    `caregate is running in front of the demo hospital: ${url}`,
    '',
    'Call it as one of the demo hospital’s people (tokens valid 8 hours; `caregate demo-token --as <name>` prints more):',
    '',
  ];
  const examples: Array<[PersonaName, string]> = [
    ['clinician', `${url}/Patient/pat-dupont`],
    ['nurse', `${url}/Observation?patient=pat-dupont&_count=5`],
    ['surgeon', `${url}/Patient/pat-dupont`],
    ['dim', `${url}/Patient?_count=3`],
    ['patient', `${url}/Observation?_count=3`],
  ];
  for (const [persona, target] of examples) {
    lines.push(`  # ${PERSONAS[persona].description}`);
    lines.push(`  ${demoCurl({ url: target, token: demoToken(persona, { dir: keysDir }) })}`);
    lines.push('');
  }
  const root = url.replace(/\/fhir$/, '');
  lines.push(
    `Health: ${root}/healthz   Metrics: ${root}/metrics   Break-the-glass page: ${root}/caregate/break-glass   DIM review: ${root}/caregate/review`,
    '',
    `CPS card over mutual TLS: a test card for Dr Martin is in ${pkiDir}. Run`,
    '  npx caregate serve --config config/examples/demo-mtls.yaml',
    `and call it with  curl --cacert ${pkiDir}/server-ca.pem --cert ${pkiDir}/clinician-card.pem --key ${pkiDir}/clinician-card-key.pem https://localhost:8443/fhir/Patient/pat-dupont`,
    '',
  );
  process.stdout.write(lines.join('\n'));
}

async function demoTokenCmd(rest: string[]): Promise<number> {
  const { values } = parseArgs({ args: rest, options: { as: { type: 'string' }, config: { type: 'string', short: 'c' } }, strict: true });
  const persona = values.as as PersonaName | undefined;
  if (!persona || !(persona in PERSONAS)) {
    process.stderr.write(`--as must be one of: ${Object.keys(PERSONAS).join(', ')}\n`);
    return 2;
  }
  const loaded = loadConfig(values.config ?? 'config/caregate.yaml');
  const { demoToken } = await import('./demo/tokens.js');
  process.stdout.write(`${demoToken(persona, { dir: configPath(loaded, loaded.config.demo.keysDir) })}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`caregate: ${(err as Error).message}\n`);
    process.exit(1);
  },
);

