import type { OperationOutcome } from '@medplum/fhirtypes';
import { ProxyError, type IssueType } from './errors.js';

const GENERIC_MESSAGE = 'The request could not be processed.';

/** Builds a single-issue OperationOutcome. */
export function operationOutcome(
  severity: 'fatal' | 'error' | 'warning' | 'information',
  code: IssueType,
  text: string,
  diagnostics?: string,
): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity,
        code,
        details: { text },
        ...(diagnostics === undefined ? {} : { diagnostics }),
      },
    ],
  };
}

/**
 * The only serializer of errors to clients. Unexposed errors become a generic `exception`;
 * their message and detail never leave the process except through logs and the AuditEvent.
 */
export function outcomeFor(err: unknown): { status: number; headers: Record<string, string>; body: OperationOutcome } {
  if (err instanceof ProxyError) {
    const text = err.expose ? err.message : GENERIC_MESSAGE;
    return {
      status: err.status,
      headers: err.headers,
      body: operationOutcome('error', err.expose ? err.issue : 'exception', text, err.expose ? err.diagnostics : undefined),
    };
  }
  return { status: 500, headers: {}, body: operationOutcome('error', 'exception', GENERIC_MESSAGE) };
}
