import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/policy/load.js';

describe('a loaded policy', () => {
  const loaded = parsePolicy(readFileSync(resolve(import.meta.dirname, '../../config/policy.yaml'), 'utf8'), 'policy.yaml');

  it('is frozen at every depth: nothing in the process can change the policy in force without a reload', () => {
    const clinician = loaded.policy.roles.find((r) => r.id === 'clinician')!;
    expect(() => (loaded.policy.roles as unknown as unknown[]).push({})).toThrow(TypeError);
    expect(() => (clinician.operations as string[]).push('export')).toThrow(TypeError);
    expect(() => ((clinician as { breakGlass: boolean }).breakGlass = true)).toThrow(TypeError);
    expect(() => ((loaded.policy.careRelationships.cache as { ttlSeconds: number }).ttlSeconds = 9999)).toThrow(TypeError);
  });

  it('has a revision that changes with its text', () => {
    const other = parsePolicy(readFileSync(resolve(import.meta.dirname, '../../config/policy.yaml'), 'utf8').replace('ttlSeconds: 60', 'ttlSeconds: 61'), 'policy.yaml');
    expect(other.revision).not.toBe(loaded.revision);
  });
});
