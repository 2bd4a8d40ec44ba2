import { readFileSync } from 'node:fs';
import { Agent } from 'undici';
import { ConfigError, configPath, type LoadedConfig } from '../config/load.js';

/**
 * caregate's own credential towards the upstream FHIR server (`upstream.auth`): the user's token
 * never goes there. One place builds it for the proxy, the lookups, the audit and `explain`.
 */
export function serviceCredential(loaded: LoadedConfig): Record<string, string> {
  const auth = loaded.config.upstream.auth;
  if (auth.type !== 'bearer') return {};
  const token = auth.tokenEnv ? process.env[auth.tokenEnv] : readFileSync(configPath(loaded, auth.tokenFile!), 'utf8').trim();
  if (!token) throw new ConfigError(loaded.file, [`upstream.auth.tokenEnv: the environment variable ${auth.tokenEnv} is empty`]);
  return { authorization: `Bearer ${token}` };
}

/** With `upstream.auth.type: mtls`, the fetch dispatcher that presents caregate's client certificate. */
export function upstreamDispatcher(loaded: LoadedConfig): Agent | undefined {
  const auth = loaded.config.upstream.auth;
  if (auth.type !== 'mtls') return undefined;
  return new Agent({
    connect: {
      cert: readFileSync(configPath(loaded, auth.certFile)),
      key: readFileSync(configPath(loaded, auth.keyFile)),
      ...(auth.caFile ? { ca: readFileSync(configPath(loaded, auth.caFile)) } : {}),
    },
  });
}
