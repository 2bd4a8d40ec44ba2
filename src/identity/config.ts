import { z } from 'zod';
import { parseCidr } from '../http/addresses.js';

/**
 * The `identity:` section: which token issuers are trusted and how their claims map to a
 * caregate identity, which CAs issue CPS cards, and from which front proxies a forwarded client
 * certificate header is believed.
 */

/** Asymmetric JWS algorithms a resource server may accept with keys from a JWKS. */
export const ASYMMETRIC_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;
/** Shared-secret JWS algorithms: only with an explicit per-issuer secret, never with a JWKS. */
export const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'] as const;

export type AsymmetricAlgorithm = (typeof ASYMMETRIC_ALGORITHMS)[number];
export type HmacAlgorithm = (typeof HMAC_ALGORITHMS)[number];
export type JwsAlgorithm = AsymmetricAlgorithm | HmacAlgorithm;

const HMAC_SET: ReadonlySet<string> = new Set(HMAC_ALGORITHMS);
export function isHmacAlgorithm(alg: string): alg is HmacAlgorithm {
  return HMAC_SET.has(alg);
}

export const IDNATPS_SYSTEM = 'urn:oid:1.2.250.1.71.4.2.1';
export const RPPS_SYSTEM = 'https://rpps.esante.gouv.fr';

/**
 * A claim path: dot-separated member names; `[]` after a name walks every element of an array
 * (`SubjectRefPro.exercices[].codeProfession`). Member names cannot contain `.`, `[` or `]`.
 */
const claimPath = z
  .string()
  .regex(/^[^.[\]\s]+(\[\])?(\.[^.[\]\s]+(\[\])?)*$/, 'a dotted claim path such as "realm_access.roles" or "a.b[].c"');

const algorithm = z.enum([...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS], {
  error: (issue) =>
    typeof issue.input === 'string' && issue.input.toLowerCase() === 'none'
      ? '"none" is never accepted: unsigned tokens prove nothing'
      : `unsupported algorithm; use one of ${[...ASYMMETRIC_ALGORITHMS, ...HMAC_ALGORITHMS].join(', ')}`,
});

const httpsOrLoopbackUrl = z
  .string()
  .url()
  .refine((u) => {
    const url = new URL(u);
    if (url.protocol === 'https:') return true;
    // Plain HTTP only to this machine (tests, a sidecar): keys fetched in clear text could be swapped.
    return url.protocol === 'http:' && ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname);
  }, 'an https URL (http only for 127.0.0.1, ::1 or localhost)');

export const jwksOptionsSchema = z
  .object({
    timeoutMs: z.number().int().positive().default(5_000).describe('Time allowed for one JWKS fetch.'),
    cooldownMs: z
      .number()
      .int()
      .nonnegative()
      .default(30_000)
      .describe('Minimum time between two refetches triggered by an unknown kid (limits abuse by forged kids).'),
    cacheMaxAgeMs: z
      .number()
      .int()
      .positive()
      .default(600_000)
      .describe('Keys older than this are refetched before use.'),
  })
  .strict();

export const claimMappingSchema = z
  .object({
    userId: claimPath.default('sub').describe('Stable subject of the token (required string).'),
    idNatPs: claimPath
      .optional()
      .describe('Claim holding the idNatPs (PSC: "preferred_username" or "SubjectNameID").'),
    professionCodes: z
      .array(claimPath)
      .default([])
      .describe(
        'Claims holding TRE-G15 profession codes; "code^oid" values (PSC SubjectRole) keep the code. ' +
          'PSC: ["SubjectRefPro.exercices[].codeProfession", "SubjectRole"].',
      ),
    roles: z.array(claimPath).default(['realm_access.roles']).describe('Claims holding IdP roles (arrays of strings).'),
    groups: z.array(claimPath).default(['groups']).describe('Claims holding IdP groups (arrays of strings).'),
    fhirUser: claimPath.default('fhirUser').describe('SMART fhirUser claim.'),
    patient: claimPath.default('patient').describe('SMART patient launch context claim (a Patient id).'),
    scope: claimPath
      .optional()
      .describe(
        'Claim holding SMART scopes (space-separated string or array). When set, the token scopes are a ' +
          'ceiling on what the user may do (no FHIR scope = nothing); when unset, the token sets no ceiling.',
      ),
    clientId: z.array(claimPath).default(['azp', 'client_id']).describe('Claims naming the OAuth client (first found).'),
    staffId: claimPath.optional().describe('Claim holding a local staff id (people without an RPPS number).'),
    staffIdSystem: z.string().min(1).optional().describe('Identifier system of the local staff ids on Practitioner.'),
    displayName: claimPath.default('name').describe('Display name for the AuditEvent (never logged).'),
    fhirBaseUrls: z
      .array(z.string().url())
      .default([])
      .describe('When set, an absolute fhirUser URL must start with one of these bases.'),
  })
  .strict()
  .refine((c) => (c.staffId === undefined) === (c.staffIdSystem === undefined), {
    message: 'staffId and staffIdSystem go together',
    path: ['staffIdSystem'],
  });

export const issuerSchema = z
  .object({
    id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'a short identifier such as "psc" or "keycloak"')
      .describe('Name of this issuer in logs and metrics.'),
    issuer: z.string().min(1).describe('Exact `iss` value of the tokens.'),
    audience: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
      .describe('Accepted `aud` value(s): the token must name at least one.'),
    algorithms: z
      .array(algorithm)
      .min(1)
      .default(['RS256', 'ES256', 'PS256'])
      .describe('Accepted JWS algorithms (pinned; the token header cannot widen this list).'),
    hmacSecret: z.string().min(32).optional().describe('Shared secret for HS256/384/512 (at least 32 characters).'),
    hmacSecretEnv: z.string().min(1).optional().describe('Environment variable holding the HS shared secret.'),
    jwksUri: httpsOrLoopbackUrl.optional().describe("The issuer's JWKS endpoint (e.g. `{issuer}/protocol/openid-connect/certs`)."),
    jwksFile: z.string().min(1).optional().describe('A local JWKS file (read at start).'),
    jwks: jwksOptionsSchema.default(jwksOptionsSchema.parse({})),
    clockSkewSeconds: z.number().int().min(0).max(300).default(60).describe('Tolerance on exp, nbf and iat.'),
    maxTokenAgeSeconds: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('When set, tokens issued longer ago than this are refused (requires `iat`).'),
    acceptedAcr: z
      .array(z.string().min(1))
      .optional()
      .describe('When set, the token `acr` must be one of these (PSC: ["eidas1"]).'),
    claims: claimMappingSchema.default(claimMappingSchema.parse({})),
    requireCertificateBinding: z
      .boolean()
      .default(false)
      .describe('Accept only RFC 8705 certificate-bound tokens (`cnf.x5t#S256`) presented with that certificate.'),
  })
  .strict()
  .superRefine((iss, ctx) => {
    const hs = iss.algorithms.filter(isHmacAlgorithm);
    const asym = iss.algorithms.filter((a) => !isHmacAlgorithm(a));
    const secrets = Number(iss.hmacSecret !== undefined) + Number(iss.hmacSecretEnv !== undefined);
    const keySources = Number(iss.jwksUri !== undefined) + Number(iss.jwksFile !== undefined);
    if (hs.length > 0 && asym.length > 0) {
      // One issuer, one key family: mixing them is how HS/RS confusion starts.
      ctx.addIssue({ code: 'custom', path: ['algorithms'], message: 'do not mix HS* and asymmetric algorithms in one issuer' });
    }
    if (hs.length > 0) {
      if (secrets !== 1) {
        ctx.addIssue({ code: 'custom', path: ['hmacSecret'], message: 'HS* algorithms need exactly one of hmacSecret or hmacSecretEnv' });
      }
      if (keySources !== 0) {
        ctx.addIssue({ code: 'custom', path: ['jwksUri'], message: 'HS* issuers take no JWKS' });
      }
    } else {
      if (secrets !== 0) {
        ctx.addIssue({ code: 'custom', path: ['hmacSecret'], message: 'a shared secret is only allowed with HS* algorithms' });
      }
      if (keySources !== 1) {
        ctx.addIssue({ code: 'custom', path: ['jwksUri'], message: 'exactly one of jwksUri or jwksFile' });
      }
    }
  });

/** An IPv4/IPv6 address or CIDR block. */
const addressOrCidr = z.string().refine((s) => parseCidr(s) !== undefined, 'an IP address or CIDR block (10.0.0.0/8, fd00::/8)');

export const FORWARDED_FORMATS = ['nginx-escaped-pem', 'envoy-xfcc'] as const;
export type ForwardedFormat = (typeof FORWARDED_FORMATS)[number];

export const forwardedCertificateSchema = z
  .object({
    format: z
      .enum(FORWARDED_FORMATS)
      .describe('nginx `$ssl_client_escaped_cert` (URL-encoded PEM) or Envoy `x-forwarded-client-cert`.'),
    header: z
      .string()
      .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'an HTTP header name')
      .transform((h) => h.toLowerCase())
      .optional()
      .describe('Header name; defaults to "ssl-client-cert" (nginx) or "x-forwarded-client-cert" (Envoy).'),
    trustedProxies: z
      .array(addressOrCidr)
      .min(1)
      .describe('Addresses of the TLS terminators allowed to set the header; from anywhere else it is ignored.'),
  })
  .strict();

export const certificatesSchema = z
  .object({
    trustedCaFiles: z
      .array(z.string().min(1))
      .min(1)
      .describe('PEM files with the card CAs: roots and intermediates (e.g. the IGC-Santé PERSONNES chain).'),
    crlFiles: z
      .array(z.string().min(1))
      .default([])
      .describe('PEM or DER CRLs; when any is given, every certificate of a chain needs a current CRL from its issuer.'),
    issuerCommonNames: z
      .array(z.string().min(1))
      .optional()
      .describe('When set, a card must be issued directly by a CA with one of these CNs (e.g. "AC IGC-SANTE FORT PERSONNES").'),
    requestCert: z.boolean().default(true).describe('Ask TLS clients for a certificate (native mTLS).'),
    forwarded: forwardedCertificateSchema.optional().describe('Client certificate forwarded by a TLS terminator.'),
  })
  .strict();

export const identityConfigSchema = z
  .object({
    realm: z.string().regex(/^[\x20-\x21\x23-\x5b\x5d-\x7e]+$/, 'printable ASCII without quotes').default('caregate'),
    issuers: z.array(issuerSchema).default([]).describe('Trusted token issuers.'),
    certificates: certificatesSchema.optional().describe('CPS / IGC-Santé client certificates.'),
    requireCardForRoles: z
      .array(z.string().min(1))
      .default([])
      .describe('Roles (IdP or policy roles) that must present a card certificate in the same request.'),
    principalCacheTtlSeconds: z.number().int().nonnegative().default(60).describe('How long a resolved principal (Practitioner, active PractitionerRoles, Organizations) is reused. Keep it at most the care-set cache TTL: a role ended on the FHIR server outside caregate stops counting only when both expire.'),
    principalCacheMax: z.number().int().positive().default(10_000).describe('Bound on cached principals.'),
    practitionerIdentifierSystems: z
      .array(z.string().min(1))
      .min(1)
      .default([IDNATPS_SYSTEM, RPPS_SYSTEM])
      .describe(
        'Practitioner.identifier systems searched with the idNatPs; for the RPPS system the value is the idNatPs ' +
          'without its "8" prefix.',
      ),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    if (cfg.issuers.length === 0 && cfg.certificates === undefined) {
      ctx.addIssue({ code: 'custom', path: ['issuers'], message: 'configure at least one issuer or identity.certificates' });
    }
    const ids = new Set<string>();
    const isses = new Set<string>();
    cfg.issuers.forEach((iss, i) => {
      if (ids.has(iss.id)) ctx.addIssue({ code: 'custom', path: ['issuers', i, 'id'], message: `duplicate issuer id "${iss.id}"` });
      // The unverified `iss` picks the keys: two entries with one `iss` would make that choice ambiguous.
      if (isses.has(iss.issuer)) {
        ctx.addIssue({ code: 'custom', path: ['issuers', i, 'issuer'], message: `issuer "${iss.issuer}" is configured twice` });
      }
      ids.add(iss.id);
      isses.add(iss.issuer);
    });
  });

export type IdentityConfig = z.infer<typeof identityConfigSchema>;
export type IdentityConfigInput = z.input<typeof identityConfigSchema>;
export type IssuerConfig = z.infer<typeof issuerSchema>;
export type IssuerConfigInput = z.input<typeof issuerSchema>;
export type ClaimMapping = z.infer<typeof claimMappingSchema>;
export type CertificatesConfig = z.infer<typeof certificatesSchema>;
export type CertificatesConfigInput = z.input<typeof certificatesSchema>;
export type ForwardedCertificateConfig = z.infer<typeof forwardedCertificateSchema>;

/** Default header name per forwarded format. */
export function forwardedHeaderName(f: ForwardedCertificateConfig): string {
  return f.header ?? (f.format === 'envoy-xfcc' ? 'x-forwarded-client-cert' : 'ssl-client-cert');
}
