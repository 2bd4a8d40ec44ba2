import { parseArgs } from 'node:util';
import { configPath, loadConfig } from '../config/load.js';
import { runReview } from './review.js';

/**
 * `caregate review --from 2026-11-01 --to 2026-11-30 [--out DIR] [--patient ID] [--source spool|fhir] [--config FILE]`
 * Reads the trail for the period from the spool (default) or the audit FHIR server, writes report.html and CSV files.
 */
export async function runReviewCli(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      out: { type: 'string', default: 'review' },
      patient: { type: 'string' },
      source: { type: 'string', default: 'spool' },
      config: { type: 'string', short: 'c', default: 'config/caregate.yaml' },
    },
    strict: true,
  });
  if (!values.from || !values.to) {
    process.stderr.write('caregate review: --from and --to are required (YYYY-MM-DD or ISO instants)\n');
    return 2;
  }
  const loaded = loadConfig(values.config!);
  const { config } = loaded;
  let source: Parameters<typeof runReview>[0]['source'];
  if (values.source === 'fhir') {
    const base = config.audit.ship.target === 'url' ? config.audit.ship.url : config.upstream.url;
    if (!base) {
      process.stderr.write('caregate review: --source fhir needs upstream.url or audit.ship.url in the configuration\n');
      return 2;
    }
    source = { baseUrl: base, ...(config.audit.ship.headers ? { headers: config.audit.ship.headers } : {}) };
  } else {
    source = { spoolDir: configPath(loaded, config.audit.spoolDir) };
  }
  const { model, files } = await runReview({
    from: values.from,
    to: values.to,
    outDir: values.out!,
    source,
    ...(values.patient ? { patient: values.patient } : {}),
    hours: {
      timeZone: config.audit.review.timeZone,
      offHoursStart: config.audit.review.offHoursStart,
      offHoursEnd: config.audit.review.offHoursEnd,
      weekends: config.audit.review.weekends,
    },
    unusual: {
      minPatients: config.audit.review.unusualMinPatients,
      ...(config.audit.review.unusualThreshold !== undefined ? { threshold: config.audit.review.unusualThreshold } : {}),
    },
  });
  process.stdout.write(`${model.totals?.events ?? ''} events reviewed; wrote:\n${files.map((f) => `  ${f}`).join('\n')}\n`);
  return 0;
}
