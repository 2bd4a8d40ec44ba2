import { readFileSync } from 'node:fs';
import { resolve, dirname, isAbsolute } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { configSchema, type Config } from './root.js';

/** A configuration that cannot be used; `problems` each name the file, the dotted path and the fix. */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(file: string, problems: string[]) {
    super(`${file}: ${problems.length} configuration problem${problems.length === 1 ? '' : 's'}:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
    this.problems = problems.map((p) => `${file}: ${p}`);
  }
}

/** Deployment values that environment variables override (12-factor), applied before validation. */
const ENV_OVERRIDES: ReadonlyArray<{ env: string; path: readonly string[]; type: 'string' | 'int' }> = [
  { env: 'CAREGATE_HOST', path: ['server', 'host'], type: 'string' },
  { env: 'CAREGATE_PORT', path: ['server', 'port'], type: 'int' },
  { env: 'CAREGATE_PUBLIC_BASE_URL', path: ['server', 'publicBaseUrl'], type: 'string' },
  { env: 'CAREGATE_UPSTREAM_URL', path: ['upstream', 'url'], type: 'string' },
  { env: 'CAREGATE_LOG_LEVEL', path: ['logging', 'level'], type: 'string' },
  { env: 'CAREGATE_AUDIT_DIR', path: ['audit', 'spoolDir'], type: 'string' },
];

export interface LoadedConfig {
  config: Config;
  /** Absolute path of the file read. */
  file: string;
  /** Directory relative paths in the file are resolved against. */
  dir: string;
}

/** Reads, overrides from `env`, validates and freezes a configuration file. Throws ConfigError. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'}); check the path`]);
  }
  return parseConfig(text, file, env, dirname(abs));
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = {}, dir = process.cwd()): LoadedConfig {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => {
        const pos = e.linePos?.[0];
        return `${pos ? `line ${pos.line}, column ${pos.col}: ` : ''}${e.message.split('\n')[0]}`;
      }),
    );
  }
  const raw: unknown = doc.toJS() ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(file, ['the top level must be a mapping (key: value)']);
  }
  const problems: string[] = [];
  applyEnv(raw as Record<string, unknown>, env, problems);
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) problems.push(...formatIssues(parsed.error.issues));
  if (problems.length > 0 || !parsed.success) throw new ConfigError(file, problems);
  return { config: deepFreeze(parsed.data), file: resolve(file), dir };
}

function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv, problems: string[]): void {
  overrides: for (const o of ENV_OVERRIDES) {
    const v = env[o.env];
    if (v === undefined || v === '') continue;
    let value: unknown = v;
    if (o.type === 'int') {
      if (!/^\d+$/.test(v)) {
        problems.push(`${o.env}: expected an integer, got "${v}"`);
        continue;
      }
      value = Number(v);
    }
    let node = raw;
    for (const key of o.path.slice(0, -1)) {
      const next = node[key];
      if (next === undefined || next === null) node[key] = {};
      else if (typeof next !== 'object') {
        problems.push(`${o.env}: cannot override ${o.path.join('.')} because ${key} is not a mapping`);
        continue overrides;
      }
      node = node[key] as Record<string, unknown>;
    }
    node[o.path[o.path.length - 1]!] = value;
  }
}

/** zod issues → "dotted.path: what is expected" lines. */
export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map((i) => {
    const path = i.path.length === 0 ? '(top level)' : i.path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[');
    let msg = i.message;
    if (i.code === 'unrecognized_keys') {
      msg = `unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `"${k}"`).join(', ')}: remove ${i.keys.length > 1 ? 'them' : 'it'} or fix the spelling`;
    } else if (i.code === 'invalid_type') {
      msg = msg.replace(/^Invalid input: /, '');
      if ('received' in i && i.received === 'undefined') msg = `required: ${msg}`;
    }
    return `${path}: ${msg}`;
  });
}

/** Resolves a path from the config file relative to the file's directory. */
export function configPath(loaded: Pick<LoadedConfig, 'dir'>, p: string): string {
  return isAbsolute(p) ? p : resolve(loaded.dir, p);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}
