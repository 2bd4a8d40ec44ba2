import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { parseDocument } from 'yaml';
import { ConfigError, formatIssues } from '../config/load.js';
import { policySchema, type Policy } from './config.js';

export interface LoadedPolicy {
  policy: Policy;
  file: string;
  /** sha256 of the file's bytes: the policy revision recorded in AuditEvents and logs. */
  revision: string;
}

/** Reads and validates a policy file; throws ConfigError naming the file and each dotted path. */
export function loadPolicy(file: string): LoadedPolicy {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read the policy file (${(err as NodeJS.ErrnoException).code ?? 'error'}); check policy.file`]);
  }
  return parsePolicy(text, file);
}

export function parsePolicy(text: string, file: string): LoadedPolicy {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length) {
    throw new ConfigError(file, doc.errors.map((e) => `${e.linePos?.[0] ? `line ${e.linePos[0].line}: ` : ''}${e.message.split('\n')[0]}`));
  }
  const parsed = policySchema.safeParse(doc.toJS() ?? {});
  if (!parsed.success) throw new ConfigError(file, formatIssues(parsed.error.issues));
  return {
    policy: deepFreeze(parsed.data),
    file,
    revision: createHash('sha256').update(text).digest('hex').slice(0, 16),
  };
}

/**
 * Freezes the policy and everything in it: the stages read it at every request and must never
 * change it (a stray write into a role's lists would change the policy in force without a reload,
 * an audit event, or a revision).
 */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
