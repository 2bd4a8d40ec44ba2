import { describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { auditExamples, renderAuditExample } from '../../scripts/audit-examples.js';

/**
 * The example AuditEvents of the documentation are made by the real builder
 * (scripts/audit-examples.ts, `npm run docs:audit-examples`): the committed files must be exactly
 * what it produces now, so that a change of the builder cannot leave the documentation behind.
 */
const ROOT = resolve(import.meta.dirname, '../..');
const DIR = join(ROOT, 'docs/audit-examples');

describe('audit: documented example events', () => {
  const examples = auditExamples();

  it('commits exactly the example files the generator writes, byte for byte (npm run docs:audit-examples)', async () => {
    expect((await readdir(DIR)).filter((f) => f.endsWith('.json')).sort()).toEqual(examples.map((e) => e.file).sort());
    for (const e of examples) expect(await readFile(join(DIR, e.file), 'utf8'), e.file).toBe(renderAuditExample(e));
  });

  it('is deterministic: two runs give the same events', () => {
    expect(auditExamples()).toEqual(examples);
  });

  it('links every example from docs/AUDIT.md and shows the granted read inline as generated', async () => {
    const doc = await readFile(join(ROOT, 'docs/AUDIT.md'), 'utf8');
    for (const e of examples) expect(doc, e.file).toContain(`(audit-examples/${e.file})`);
    const read = examples.find((e) => e.file === 'granted-read.json')!;
    expect(doc).toContain(`\`\`\`json\n${renderAuditExample(read)}\`\`\``);
  });
});
