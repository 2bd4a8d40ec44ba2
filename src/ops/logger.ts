import { pino, type Logger } from 'pino';

/**
 * Application logs: JSON lines with request ids, interaction kinds, resource types, decision
 * reasons and timings. Never names, identifiers, query values, bodies or tokens: those belong
 * in the AuditEvent only. The redact list is a second line of defence for fields that must never
 * appear even by mistake.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'caregate' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'req.headers.authorization',
          'req.headers.cookie',
          'headers.authorization',
          'authorization',
          'token',
          'query',
          'body',
          '*.query',
          '*.body',
        ],
        censor: '[redacted]',
      },
    },
    destination as never,
  );
}

export type { Logger };
