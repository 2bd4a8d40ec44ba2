import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderReviewHtml, type RenderOptions } from './report-html.js';
import { reviewCsvFiles } from './review-csv.js';
import { loadAuditEvents, loadVerdictEvents, type ReviewSource } from './review-load.js';
import { buildReviewModel, DEFAULT_HOURS, type ReviewModel, type ReviewOptions } from './review-model.js';
import { resolveBound } from './review-time.js';

/**
 * DIM review of the audit trail, end to end: loads the trail for a period (review-load.ts), computes
 * the review (review-model.ts), renders the HTML report (report-html.ts) and the CSV files
 * (review-csv.ts), in memory or written to a directory for `caregate review`.
 */

export interface RunReviewOptions extends ReviewReportOptions {
  /** Directory that receives `report.html` and the CSV files (created owner-only: they hold PHI). */
  outDir: string;
}

/** The inputs of a review: the period and settings, and where the trail is read from. */
export interface ReviewReportOptions extends ReviewOptions {
  source: ReviewSource;
}

/**
 * Loads the trail for the period and renders the review in memory: the model, the HTML page and the
 * CSV files by name. For the admin views caregate serves to the DIM (pass the CSP `nonce`).
 */
export async function reviewReport(
  opts: ReviewReportOptions,
  render: RenderOptions = {},
): Promise<{ model: ReviewModel; html: string; csv: Record<string, string> }> {
  const timeZone = opts.hours?.timeZone ?? DEFAULT_HOURS.timeZone;
  const from = resolveBound(opts.from, 'start', timeZone);
  const to = resolveBound(opts.to, 'end', timeZone);
  if (Date.parse(from) > Date.parse(to)) throw new TypeError('review: `from` is after `to`');
  // The verdicts on the period's break-the-glass openings may have been given after it.
  const [events, verdicts] = await Promise.all([loadAuditEvents(opts.source, from, to), loadVerdictEvents(opts.source, from)]);
  const inPeriod = new Set(events.map((e) => e.id));
  const model = buildReviewModel([...events, ...verdicts.filter((v) => !inPeriod.has(v.id))], { ...opts, from, to });
  const csv = reviewCsvFiles(model);
  const html = renderReviewHtml(model, render.nav ? { ...render, nav: { ...render.nav, files: Object.keys(csv) } } : render);
  return { model, html, csv };
}

/** `caregate review`: loads the trail for the period, writes `report.html` and the CSV files. */
export async function runReview(opts: RunReviewOptions): Promise<{ model: ReviewModel; files: string[] }> {
  const { model, html, csv } = await reviewReport(opts);
  await mkdir(opts.outDir, { recursive: true, mode: 0o700 });
  const outputs: Record<string, string> = { 'report.html': html, ...csv };
  const files: string[] = [];
  for (const [name, content] of Object.entries(outputs)) {
    const path = join(opts.outDir, name);
    await writeFile(path, content, { mode: 0o600 });
    files.push(path);
  }
  return { model, files };
}
