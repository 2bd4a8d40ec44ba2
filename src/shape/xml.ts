import { createRequire } from 'node:module';
import { ProxyError } from '../http/errors.js';

// The `fhir` package is CommonJS with no types; load it once.
const require = createRequire(import.meta.url);
const { Fhir } = require('fhir') as { Fhir: new () => { objToXml(o: unknown): string } };
const converter = new Fhir();

/**
 * Converts an already judged JSON body to FHIR XML. Only filtered JSON is ever converted: the
 * upstream is always asked for JSON, so unfiltered XML bytes cannot reach a client.
 */
export function toXml(body: unknown): string {
  try {
    return converter.objToXml(body);
  } catch {
    throw new ProxyError('ERR_NOT_ACCEPTABLE', 'This answer cannot be converted to FHIR XML; ask for application/fhir+json.', {
      detail: 'xml conversion failed',
    });
  }
}
