import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadConfig, ConfigError } from '../../src/config/load.js';
import { formatCaseResults, loadPolicyCases, runPolicyCases, runTestPolicyCli, type CaseResult, type PolicyCase } from '../../src/tools/test-policy.js';
import { parsePolicy } from '../../src/policy/load.js';

/**
 * The demo policy's own cases (config/policy-cases.yaml) run through caregate in front of the demo
 * hospital; every case must pass. Then the runner itself: a changed policy is caught, a wrong case
 * is reported with what it got, a malformed cases file is refused at its dotted path.
 */
const ROOT = resolve(import.meta.dirname, '../..');
const CASES_FILE = join(ROOT, 'config/policy-cases.yaml');
const POLICY_FILE = join(ROOT, 'config/policy.yaml');
const loaded = loadConfig(join(ROOT, 'config/caregate.yaml'), {});
const cases = loadPolicyCases(CASES_FILE);

describe('config/policy-cases.yaml against config/policy.yaml', () => {
  let results: CaseResult[];
  beforeAll(async () => {
    results = await runPolicyCases({ cases, policyFile: POLICY_FILE, loaded, patients: 100 });
  }, 60_000);

  it('covers every role of the demo policy', () => {
    const roles = parsePolicy(readFileSync(POLICY_FILE, 'utf8'), POLICY_FILE).policy.roles.map((r) => r.id);
    const rules = new Set(cases.map((c) => c.expect.rule?.split('.')[0]));
    expect(roles.filter((r) => !rules.has(r))).toEqual([]);
  });

  cases.forEach((c, i) => {
    it(c.name, () => {
      const r = results[i]!;
      expect(r.name).toBe(c.name);
      expect(r.problems, `got ${JSON.stringify(r.got)}`).toEqual([]);
      expect(r.ok).toBe(true);
    });
  });
});

describe('the policy test runner', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'caregate-cases-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const recentStay: PolicyCase = {
    name: 'a stay that ended 3 days ago is within the window',
    as: 'clinician',
    credential: 'token',
    request: { method: 'GET', url: '/Patient/pat-fx-enc-recent' },
    expect: { effect: 'permit', status: 200, reason: 'care-relationship' },
  };
  const wrong: PolicyCase = {
    name: 'a wrong expectation',
    as: 'surgeon',
    credential: 'token',
    request: { method: 'GET', url: '/Patient/pat-dupont' },
    expect: { effect: 'permit', rule: 'clinician.care-team' },
  };

  it('catches a candidate policy that changes a decision, and reports what each failing case got', async () => {
    const candidate = join(dir, 'candidate.yaml');
    writeFileSync(candidate, readFileSync(POLICY_FILE, 'utf8').replace('finishedWithinDays: 30', 'finishedWithinDays: 1'));
    const results = await runPolicyCases({ cases: [recentStay, wrong], policyFile: candidate, loaded, patients: 20 });
    expect(results.map((r) => r.ok)).toEqual([false, false]);
    expect(results[0]!.problems).toEqual(['effect: expected permit, got deny', 'status: expected 200, got 403', 'reason: expected care-relationship, got no-care-relationship']);
    expect(results[1]!.problems).toEqual(['effect: expected permit, got deny']);
    expect(results[1]!.got).toMatchObject({ status: 403, effect: 'deny', reason: 'no-care-relationship', rule: 'clinician.care-team', error: 'ERR_FORBIDDEN' });
    const text = formatCaseResults(results);
    expect(text).toContain('FAIL  a wrong expectation');
    expect(text).toContain('got: deny 403 reason no-care-relationship rule clinician.care-team error ERR_FORBIDDEN');
    expect(text.trimEnd().split('\n').at(-1)).toBe('0 passed, 2 failed');
  }, 60_000);

  it('prints a line per case and the summary, and exits 1 on a failure (command line)', async () => {
    const config = join(dir, 'caregate.yaml');
    writeFileSync(
      config,
      readFileSync(join(ROOT, 'config/caregate.yaml'), 'utf8').replace('patients: 2000', 'patients: 20').replace('file: policy.yaml', `file: ${POLICY_FILE}`),
    );
    const file = join(dir, 'two.yaml');
    writeFileSync(
      file,
      [
        'cases:',
        '  - { name: her patient, as: clinician, request: { method: GET, url: /Patient/pat-dupont }, expect: { effect: permit, status: 200 } }',
        '  - { name: wrongly expected, as: surgeon, request: { method: GET, url: /Patient/pat-dupont }, expect: { effect: permit } }',
      ].join('\n'),
    );
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
      out.push(String(chunk));
      return true;
    });
    try {
      expect(await runTestPolicyCli([file, '--config', config])).toBe(1);
    } finally {
      spy.mockRestore();
    }
    const text = out.join('');
    expect(text).toContain('  ok    her patient');
    expect(text).toContain('  FAIL  wrongly expected');
    expect(text.trimEnd().split('\n').at(-1)).toBe('1 passed, 1 failed');
  }, 60_000);

  it('answers usage errors with exit code 2', async () => {
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(await runTestPolicyCli([])).toBe(2);
      expect(await runTestPolicyCli(['a.yaml', 'b.yaml'])).toBe(2);
      expect(await runTestPolicyCli(['a.yaml', '--polcy', 'x'])).toBe(2);
    } finally {
      spy.mockRestore();
    }
  });

  it('refuses a cases file with mistakes, at their dotted paths', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      [
        'cases:',
        '  - name: typo in the persona',
        '    as: surgeom',
        '    request: { method: GET, url: /Patient/pat-dupont }',
        '    expect: { effect: deny }',
        '  - name: misspelt expectations',
        '    as: nurse',
        '    request: { method: GET, url: /Patient/pat-dupont }',
        '    expect: { effect: allow, stauts: 403 }',
        '  - name: a card for a persona without one',
        '    as: nurse',
        '    credential: card',
        '    request: { method: GET, url: /Patient/pat-dupont }',
        '    expect: { effect: deny }',
      ].join('\n'),
    );
    let err: unknown;
    try {
      loadPolicyCases(bad);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems.join('\n');
    expect(problems).toMatch(/cases\[0\]\.as|cases\.0\.as/);
    expect(problems).toMatch(/cases\[1\]\.expect\.effect|cases\.1\.expect\.effect/);
    expect(problems).toMatch(/stauts/);
    expect(problems).toMatch(/cases\[2\]\.credential: the demo hospital has a CPS card for the clinician persona only/);
  });
});
