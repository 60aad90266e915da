// Zod schemas for the API boundary, built from the configured limits, and the mapping of
// zod issues to problem fields.
import { BlockList, isIP } from 'node:net';
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
    .refine(isHttpUrl, 'must be an absolute http:// or https:// URL')
    .superRefine((value, context) => {
      const refused = refusedAddressOf(value);
      if (refused) context.addIssue({ code: 'custom', message: `points at ${refused}: the coordinator does not call link-local or cloud metadata addresses` });
    });
}

export function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}

/**
 * Addresses a branch URL may not name: whoever can create a transaction would otherwise make
 * the coordinator fetch a cloud instance's credentials (169.254.169.254, fd00:ec2::254) or
 * reach link-local hosts. IPv4-mapped IPv6 forms are matched too (BlockList does that), and
 * the URL parser has already turned 0xa9.0xfe…, 2852039166 and the like into dotted quads.
 * Only literal addresses are checked: a host name is resolved when the call is made.
 */
export const refusedBranchAddresses = ['169.254.0.0/16', 'fe80::/10', 'fd00:ec2::254/128', '64:ff9b::a9fe:0/112'] as const;

const refusedAddresses = new BlockList();
for (const cidr of refusedBranchAddresses) {
  const [address, bits] = cidr.split('/');
  refusedAddresses.addSubnet(address, Number(bits), isIP(address) === 4 ? 'ipv4' : 'ipv6');
}

/** The refused address a URL's host is, or null (also for anything that is not a URL). */
export function refusedAddressOf(value: string): string | null {
  let host: string;
  try {
    host = new URL(value).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return null;
  }
  const family = isIP(host);
  if (family === 0) return null;
  return refusedAddresses.check(host, family === 4 ? 'ipv4' : 'ipv6') ? host : null;
}

/** Characters of a header name (RFC 9110 token). */
const headerNamePattern = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/**
 * Headers describing the connection rather than the request (RFC 9110 §7.6.1), the framing
 * headers, and `expect`/`host`: the HTTP client (undici) refuses most of them outright, which
 * would fail every call of the transaction forever, and the others would change where or how
 * a call is sent.
 */
const connectionHeaderNames = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'http2-settings', 'content-length', 'expect', 'host']);

/** Why a header may not be set on branch calls, or null when it may. */
export function refusedHeaderReason(name: string): string | null {
  const lower = name.toLowerCase();
  if (connectionHeaderNames.has(lower)) return 'is managed by the HTTP client (it concerns the connection or the framing), so it cannot be set on branch calls';
  if (lower === 'content-type' || lower.startsWith('tandem-')) return 'is set by Tandem on every branch call, so it cannot be overridden';
  return null;
}

/** A header name a request may ask the coordinator to send (or forward) on branch calls. */
export const branchHeaderNameSchema = z
  .string()
  .regex(headerNamePattern, 'must be a valid header name')
  .superRefine((name, context) => {
    const reason = refusedHeaderReason(name);
    if (reason) context.addIssue({ code: 'custom', message: reason });
  });

export function optionSchemas(limits: Limits) {
  return {
    timeoutToFailMs: z.number().int('must be a whole number').min(0, 'must not be negative').max(limits.timeoutToFailMsMax, `at most ${limits.timeoutToFailMsMax} (timeoutToFailMsMax)`),
    requestTimeoutMs: z.number().int('must be a whole number').min(1, 'must be positive').max(limits.requestTimeoutMsMax, `at most ${limits.requestTimeoutMsMax} (requestTimeoutMsMax)`),
    retryIntervalMs: z.number().int('must be a whole number').min(limits.retryIntervalMsMin, `at least ${limits.retryIntervalMsMin} (retryIntervalMsMin)`).max(limits.retryIntervalMsMax, `at most ${limits.retryIntervalMsMax} (retryIntervalMsMax)`),
    delayMs: z.number().int('must be a whole number').min(0, 'must not be negative').max(limits.messageDelayMsMax, `at most ${limits.messageDelayMsMax} (messageDelayMsMax)`),
    retryLimit: z.number().int('must be a whole number').min(0, 'must not be negative').max(limits.retryLimitMax, `at most ${limits.retryLimitMax} (retryLimitMax)`),
    // Refusals are reported on the header itself (`branchHeaders.<name>`), not on its key.
    branchHeaders: z.record(z.string(), z.string().regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'must be a valid header value: no CR, LF, NUL or other control characters')).superRefine((headers, context) => {
      for (const name of Object.keys(headers)) {
        const parsed = branchHeaderNameSchema.safeParse(name);
        if (!parsed.success) context.addIssue({ code: 'custom', path: [name], message: parsed.error.issues[0]?.message ?? 'must be a valid header name' });
      }
    }),
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

/**
 * Whether JSON text nests arrays and objects deeper than `depthMax`. One pass with a counter,
 * no recursion, so it is safe on any input; text that is not JSON is left for the parser to
 * refuse (brackets inside strings are skipped, escapes included).
 */
export function jsonDeeperThan(text: string, depthMax: number): boolean {
  if (text.length <= depthMax) return false;
  let depth = 0;
  let inString = false;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (inString) {
      if (code === 0x5c) index++; // backslash: the next character is escaped
      else if (code === 0x22) inString = false;
    } else if (code === 0x22) {
      inString = true;
    } else if (code === 0x5b || code === 0x7b) {
      depth++;
      if (depth > depthMax) return true;
    } else if (code === 0x5d || code === 0x7d) {
      depth--;
    }
  }
  return false;
}
