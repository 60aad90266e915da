// Zod schemas for the API boundary, built from the configured limits, and the mapping of
// zod issues to problem fields.
import { z } from 'zod';
import type { Limits } from '../config.js';
import { invalid, fieldPath } from './problem.js';

/** Letters, digits and _ . : -, but not `.` or `..`, which URL paths would resolve away. */
export const gidPattern = /^(?!\.\.?$)[A-Za-z0-9_.:-]+$/;

export function gidSchema(limits: Limits) {
  return z
    .string()
    .min(1, 'must not be empty')
    .max(limits.gidLengthMax, `at most ${limits.gidLengthMax} characters (gidLengthMax)`)
    .regex(gidPattern, 'only letters, digits and _ . : - are allowed (and not . or .. alone)');
}

export function branchIdSchema(limits: Limits) {
  return z
    .string()
    .min(1, 'must not be empty')
    .max(limits.branchIdLengthMax, `at most ${limits.branchIdLengthMax} characters (branchIdLengthMax)`)
    .regex(gidPattern, 'only letters, digits and _ . : - are allowed (and not . or .. alone)');
}

export function httpUrlSchema(limits: Limits) {
  return z
    .string()
    .max(limits.urlLengthMax, `at most ${limits.urlLengthMax} characters (urlLengthMax)`)
    .refine(isHttpUrl, 'must be an absolute http:// or https:// URL');
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}

export function optionSchemas(limits: Limits) {
  return {
    timeoutToFailMs: z.number().int('must be a whole number').min(0, 'must not be negative').max(limits.timeoutToFailMsMax, `at most ${limits.timeoutToFailMsMax} (timeoutToFailMsMax)`),
    requestTimeoutMs: z.number().int('must be a whole number').min(1, 'must be positive').max(limits.requestTimeoutMsMax, `at most ${limits.requestTimeoutMsMax} (requestTimeoutMsMax)`),
    retryIntervalMs: z.number().int('must be a whole number').min(limits.retryIntervalMsMin, `at least ${limits.retryIntervalMsMin} (retryIntervalMsMin)`).max(limits.retryIntervalMsMax, `at most ${limits.retryIntervalMsMax} (retryIntervalMsMax)`),
    retryLimit: z.number().int('must be a whole number').min(0, 'must not be negative').max(limits.retryLimitMax, `at most ${limits.retryLimitMax} (retryLimitMax)`),
    branchHeaders: z.record(
      z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be a valid header name'),
      z.string().regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'must be a valid header value'),
    ),
  };
}

/** Parses `input` or throws a 400 problem naming every bad field. */
export function parseOrThrow<T>(schema: z.ZodType<T>, input: unknown, prefix: ReadonlyArray<PropertyKey> = []): T {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw invalid(
    result.error.issues.flatMap((issue) =>
      // A strict object reports unknown keys on the object itself; name each key instead.
      issue.code === 'unrecognized_keys'
        ? issue.keys.map((key) => ({ field: fieldPath([...prefix, ...issue.path, key]), message: 'is not a known field' }))
        : [{ field: fieldPath([...prefix, ...issue.path]), message: issue.message }],
    ),
  );
}

/** Payloads are JSON in the native API and travel as their JSON text. */
export function payloadText(payload: unknown): string | undefined {
  return payload === undefined ? undefined : JSON.stringify(payload);
}
