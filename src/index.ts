/**
 * caregate as a library: what an operator's own launcher or a test harness needs to start the
 * proxy from a configuration, build its stages, or check a policy. The command line (cli.ts) is
 * the usual way in.
 */
export { startCaregate, type Caregate, type CaregateOptions } from './server.js';
export { buildStages, type BuiltStages, type StageEnv } from './stages.js';
export { loadConfig, parseConfig, ConfigError, type LoadedConfig } from './config/load.js';
export { loadPolicy, parsePolicy, type LoadedPolicy } from './policy/load.js';
export { decide, type DecideInput } from './policy/decide.js';
export type { Decision, DecisionReason, Obligation } from './policy/decision.js';
export type { RequestState } from './state.js';
