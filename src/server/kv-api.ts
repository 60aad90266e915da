// The versioned key-value API: GET/PUT/DELETE /v1/kv/<key> (the key is the rest of the path, so
// it may contain slashes) and GET /v1/kv?prefix=&limit=&cursor= to list. A put or delete with
// `expectedVersion` succeeds only if the key is at that version (0: the key must not exist);
// otherwise 409 with the current version, so the client can read again and retry.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Limits } from '../config.js';
import type { KvOutcome } from '../kv/kv.js';
import type { KvStore } from '../kv/store.js';
import { conflict, notFound, ProblemError, tooLarge, unavailable } from './problem.js';
import { parseOrThrow } from './validation.js';

export interface KvApiDeps {
  kv: KvStore;
  limits: Limits;
}

const noControlCharacters = /^[^\x00-\x1f\x7f]*$/;

export function kvSchemas(limits: Limits) {
  const key = z
    .string()
    .min(1, 'must not be empty')
    .regex(noControlCharacters, 'must not contain control characters')
    .refine((value) => Buffer.byteLength(value, 'utf8') <= limits.kvKeyBytesMax, `at most ${limits.kvKeyBytesMax} UTF-8 bytes (kvKeyBytesMax)`);
  const expectedVersion = z.number({ message: 'must be a number' }).int('must be a whole number').min(0, 'must not be negative');
  const put = z
    .object({ value: z.unknown().refine((value) => value !== undefined, 'is required'), expectedVersion: expectedVersion.optional() })
    .strict();
  const deleteQuery = z.object({ expectedVersion: z.coerce.number({ message: 'must be a number' }).int('must be a whole number').min(0, 'must not be negative').optional() }).strict();
  const list = z
    .object({
      prefix: z.string().regex(noControlCharacters, 'must not contain control characters').refine((value) => Buffer.byteLength(value, 'utf8') <= limits.kvKeyBytesMax, `at most ${limits.kvKeyBytesMax} UTF-8 bytes (kvKeyBytesMax)`).optional(),
      cursor: z.string().max(limits.kvKeyBytesMax * 4).optional(),
      limit: z.coerce.number({ message: 'must be a number' }).int('must be a whole number').min(1, 'must be at least 1').max(limits.kvListLimitMax, `at most ${limits.kvListLimitMax} (kvListLimitMax)`).optional(),
    })
    .strict();
  return { key, put, deleteQuery, list };
}

export function registerKvApi(app: FastifyInstance, deps: KvApiDeps): void {
  const { kv, limits } = deps;
  const s = kvSchemas(limits);
  const keyOf = (request: FastifyRequest<{ Params: { '*': string } }>) => parseOrThrow(s.key, request.params['*'], ['key']);

  app.get('/v1/kv', async (request) => {
    const query = parseOrThrow(s.list, request.query);
    const page = await kv.list({ prefix: query.prefix ?? '', after: query.cursor ?? null, limit: query.limit ?? 100 });
    return { items: page.items.map(entryView), nextCursor: page.nextCursor };
  });

  app.get<{ Params: { '*': string } }>('/v1/kv/*', async (request) => {
    const key = keyOf(request);
    const entry = await kv.get(key);
    if (!entry) throw notFound(`no key ${JSON.stringify(key)}`);
    return entryView(entry);
  });

  app.put<{ Params: { '*': string } }>('/v1/kv/*', async (request) => {
    const key = keyOf(request);
    const body = parseOrThrow(s.put, request.body ?? {});
    const valueJson = JSON.stringify(body.value);
    if (Buffer.byteLength(valueJson, 'utf8') > limits.kvValueBytesMax) {
      throw tooLarge(`the value is larger than kvValueBytesMax (${limits.kvValueBytesMax} bytes as JSON)`, 'value');
    }
    const outcome = await kv.write({ type: 'put', key, valueJson, expectedVersion: body.expectedVersion ?? null });
    if (!outcome.ok) throw problemOf(outcome);
    return { key, version: outcome.version, created: outcome.type === 'put' && outcome.created };
  });

  app.delete<{ Params: { '*': string } }>('/v1/kv/*', async (request) => {
    const key = keyOf(request);
    const query = parseOrThrow(s.deleteQuery, request.query);
    const outcome = await kv.write({ type: 'delete', key, expectedVersion: query.expectedVersion ?? null });
    if (!outcome.ok) throw problemOf(outcome);
    return { key, deleted: true, version: outcome.version };
  });
}

function entryView(entry: { key: string; valueJson: string; version: number }) {
  return { key: entry.key, value: JSON.parse(entry.valueJson) as unknown, version: entry.version };
}

function problemOf(outcome: Extract<KvOutcome, { ok: false }>): ProblemError {
  switch (outcome.reason) {
    case 'conflict': {
      const error = conflict(
        outcome.currentVersion === 0
          ? `key ${JSON.stringify(outcome.key)} does not exist, so it is not at the expected version`
          : `key ${JSON.stringify(outcome.key)} is at version ${outcome.currentVersion}, not the expected one`,
        'version-conflict',
      );
      error.problem.currentVersion = outcome.currentVersion;
      return error;
    }
    case 'not-found':
      return notFound(`no key ${JSON.stringify(outcome.key)}`);
    case 'full':
      return unavailable('the key-value store holds kvKeysMax keys already');
  }
}
