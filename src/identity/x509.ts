/**
 * The one entry point to `@peculiar/x509` in caregate: it loads the metadata polyfill the library
 * needs first, and pins the crypto provider to Node's WebCrypto. Import `x509` from here, never
 * from `@peculiar/x509` directly (module evaluation order matters).
 */
import './reflect-metadata.js';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
