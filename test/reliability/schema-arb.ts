/**
 * fast-check arbitraries derived from JSON Schema (the request body schemas of the operator's own
 * /openapi.json), so the fuzzer follows the published contract rather than a hand-copied one.
 *
 * `valueOf(schema)` produces values that satisfy the schema's structural rules (types, required and
 * optional properties, patterns, enums, ranges, map key patterns, array sizes). Semantic rules the
 * schema cannot state (blue_green needs two slots, ports unique across apps...) are not followed, so
 * a share of these values is refused with a 400 by design.
 */
import fc from 'fast-check';

/** The JSON Schema subset the operator's OpenAPI document uses. */
export interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  propertyNames?: { pattern?: string; not?: { enum?: unknown[] } };
  minProperties?: number;
  maxProperties?: number;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  format?: string;
  minimum?: number;
  maximum?: number;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
}

/** Patterns are compiled with the `u` flag, as ajv does. */
function patternArb(pattern: string, minLength: number, maxLength: number): fc.Arbitrary<string> {
  const re = new RegExp(pattern, 'u');
  return fc
    .stringMatching(re, { size: 'small' })
    .filter((s) => s.length >= minLength && s.length <= maxLength && re.test(s));
}

/** Integers biased to the edges of their range (where off-by-one bugs live). */
function integerArb(min: number, max: number): fc.Arbitrary<number> {
  const edges = [min, max, min + 1, max - 1].filter((x) => x >= min && x <= max);
  return fc.oneof({ weight: 3, arbitrary: fc.integer({ min, max }) }, { weight: 1, arbitrary: fc.constantFrom(...edges) });
}

/** An arbitrary of values valid against `schema` (structurally; see module comment). */
export function valueOf(schema: JsonSchema, depth = 0): fc.Arbitrary<unknown> {
  if (schema.const !== undefined) return fc.constant(schema.const);
  if (schema.enum) return fc.constantFrom(...schema.enum);
  const alts = schema.anyOf ?? schema.oneOf;
  if (alts) return fc.oneof(...alts.map((s) => valueOf(s, depth)));
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'null':
      return fc.constant(null);
    case 'boolean':
      return fc.boolean();
    case 'integer':
      return integerArb(schema.minimum ?? -(2 ** 31), schema.maximum ?? 2 ** 31 - 1);
    case 'number':
      return fc.double({ min: schema.minimum ?? -1e9, max: schema.maximum ?? 1e9, noNaN: true });
    case 'string': {
      const min = schema.minLength ?? 0;
      const max = Math.min(schema.maxLength ?? 64, 256);
      if (schema.pattern) return patternArb(schema.pattern, min, max);
      return fc.string({ minLength: min, maxLength: Math.max(min, Math.min(max, 32)), unit: 'grapheme' });
    }
    case 'array': {
      const items = schema.items ? valueOf(schema.items, depth + 1) : fc.anything();
      const minLength = schema.minItems ?? 0;
      return fc.array(items, { minLength, maxLength: Math.max(minLength, Math.min(schema.maxItems ?? 4, 4)) });
    }
    case 'object':
    default:
      return objectArb(schema, depth);
  }
}

function objectArb(schema: JsonSchema, depth: number): fc.Arbitrary<unknown> {
  const props = schema.properties ?? {};
  if (Object.keys(props).length > 0) {
    const required = new Set(schema.required ?? []);
    const model: Record<string, fc.Arbitrary<unknown>> = {};
    for (const [k, s] of Object.entries(props)) model[k] = valueOf(s, depth + 1);
    return fc.record(model, { requiredKeys: [...required].filter((k) => k in props) });
  }
  if (typeof schema.additionalProperties === 'object') {
    const forbidden = new Set((schema.propertyNames?.not?.enum ?? []).map(String));
    const keyPattern = schema.propertyNames?.pattern;
    const key = keyPattern ? patternArb(keyPattern, 1, 63).filter((k) => !forbidden.has(k)) : fc.string({ minLength: 1, maxLength: 16 });
    const minKeys = schema.minProperties ?? 0;
    return fc.dictionary(key, valueOf(schema.additionalProperties, depth + 1), {
      minKeys,
      maxKeys: Math.max(minKeys, Math.min(schema.maxProperties ?? 3, 3)),
      noNullPrototype: true,
    });
  }
  return fc.constant({});
}
