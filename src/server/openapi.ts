// The OpenAPI 3.1 document served at /openapi.json. Request bodies are generated from the same
// zod schemas that validate requests, so the document cannot drift from the checks.
import { z } from 'zod';
import type { Limits } from '../config.js';
import { lockModes } from '../locks/manager.js';
import { modes } from '../tx/types.js';
import { tandemVersion } from '../shared/version.js';
import { notServed } from './dtm-api.js';
import { dtmSchemas } from './dtm-shapes.js';
import { kvSchemas } from './kv-api.js';
import { lockSchemas } from './locks-api.js';
import { nativeSchemas } from './native-api.js';
import { registrySchemas } from './registry-api.js';
import { operatorSchemas } from './operator-api.js';

type Schema = Record<string, unknown>;

const problem = {
  type: 'object',
  required: ['type', 'title', 'status', 'detail'],
  properties: {
    type: { type: 'string' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    errors: { type: 'array', items: { type: 'object', properties: { field: { type: 'string' }, message: { type: 'string' } } } },
  },
};

const op = {
  type: 'object',
  properties: {
    url: { type: 'string' },
    status: { enum: ['pending', 'succeeded', 'failed'] },
    attempts: { type: 'integer' },
    lastError: { type: 'string' },
  },
};

const tx = {
  type: 'object',
  properties: {
    gid: { type: 'string' },
    mode: { enum: [...modes] },
    status: { enum: ['prepared', 'submitted', 'aborting', 'succeeded', 'failed'] },
    phase: { type: 'string' },
    reason: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    nextAttemptAt: { type: ['string', 'null'], format: 'date-time' },
    options: { type: 'object' },
    branches: {
      type: 'array',
      items: { type: 'object', properties: { branchId: { type: 'string' }, payload: {}, dependsOn: { type: 'array', items: { type: 'string' } }, ops: { type: 'object', additionalProperties: op } } },
    },
    history: { type: 'array', items: { type: 'object', properties: { at: { type: 'string' }, status: { type: 'string' }, phase: { type: 'string' }, reason: { type: 'string' } } } },
  },
};

const registration = {
  type: 'object',
  properties: {
    service: { type: 'string' },
    instanceId: { type: 'string' },
    url: { type: 'string' },
    weight: { type: 'integer' },
    ttlMs: { type: 'integer' },
    expiresAtMs: { type: 'integer', description: 'Epoch milliseconds' },
  },
};

const lease = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    leaseId: { type: 'string', description: 'The holder\'s proof: send it to renew and release' },
    token: { type: 'integer', description: 'Fencing token: greater than every token granted before it' },
    mode: { enum: [...lockModes] },
    permits: { type: 'integer', description: 'Semaphores only' },
    owner: { type: 'string' },
    sessionId: { type: 'string', description: 'Session-bound leases only' },
    ttlMs: { type: 'integer', description: 'Leases not bound to a session only' },
    ttlRemainingMs: { type: 'integer' },
    waitedMs: { type: 'number' },
    elapsedMs: { type: 'number' },
  },
};

const lockState = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    kind: { enum: ['rw', 'semaphore', null], description: 'null when nobody holds or waits for the lock' },
    permits: { type: ['integer', 'null'] },
    holders: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          owner: { type: 'string' },
          mode: { enum: [...lockModes] },
          token: { type: 'integer' },
          sessionBound: { type: 'boolean' },
          grantedAt: { type: 'string', format: 'date-time' },
          expiresAt: { type: 'string', format: 'date-time' },
          ttlRemainingMs: { type: 'integer' },
        },
      },
    },
    waiters: {
      type: 'array',
      items: { type: 'object', properties: { owner: { type: 'string' }, mode: { enum: [...lockModes] }, fair: { type: 'boolean' }, waitedMs: { type: 'integer' }, waitRemainingMs: { type: 'integer' } } },
    },
  },
};

const session = {
  type: 'object',
  properties: { sessionId: { type: 'string' }, owner: { type: 'string' }, ttlMs: { type: 'integer' }, ttlRemainingMs: { type: 'integer' }, elapsedMs: { type: 'number' } },
};

const kvEntry = { type: 'object', required: ['key', 'value', 'version'], properties: { key: { type: 'string' }, value: {}, version: { type: 'integer' } } };

const auditEntry = {
  type: 'object',
  properties: {
    seq: { type: 'integer' },
    at: { type: 'string', format: 'date-time' },
    actor: { type: ['string', 'null'], description: "The API token's name; null when authentication is off" },
    remoteAddress: { type: 'string' },
    action: { enum: ['force-stop', 'retry-now'] },
    gid: { type: 'string' },
    reason: { type: 'string' },
    compensate: { type: 'boolean' },
    outcome: { enum: ['applied', 'refused', 'not-found'] },
    detail: { type: 'string' },
  },
};

const dtmAnswer = {
  type: 'object',
  required: ['dtm_result'],
  properties: { dtm_result: { enum: ['SUCCESS', 'FAILURE', 'ONGOING'] }, message: { type: 'string' } },
};

const dtmQueryAnswer = {
  type: 'object',
  properties: {
    transaction: { type: ['object', 'null'], description: 'DTM\'s trans_global row; null for an unknown gid' },
    branches: { type: 'array', items: { type: 'object', description: 'One DTM trans_branch_op row per branch op' } },
  },
};

/** The input JSON Schema of a zod schema; `$schema` is dropped since the document names the dialect. */
function jsonSchema(schema: z.ZodType): Schema {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { unrepresentable: 'any', io: 'input' }) as Schema;
  return rest;
}

/** One query parameter per property of a zod object schema. */
function queryParameters(schema: z.ZodType): Schema[] {
  const generated = jsonSchema(schema) as { properties?: Record<string, Schema>; required?: string[] };
  return Object.entries(generated.properties ?? {}).map(([name, property]) => ({
    name,
    in: 'query',
    required: generated.required?.includes(name) ?? false,
    schema: property,
  }));
}

function pathParameter(name: string, schema: Schema, description?: string): Schema {
  return { name, in: 'path', required: true, schema, ...(description ? { description } : {}) };
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const jsonBody = (schemaName: string, description?: string) => ({ required: true, ...(description ? { description } : {}), content: { 'application/json': { schema: ref(schemaName) } } });
const json = (description: string, schema: Schema) => ({ description, content: { 'application/json': { schema } } });
const problemAnswer = (description: string) => ({ description, content: { 'application/problem+json': { schema: ref('Problem') } } });

const problems = {
  '400': problemAnswer('Invalid request; `errors` names each bad field'),
  '404': problemAnswer('No such transaction'),
  '409': problemAnswer('Not allowed in the current state, or the gid is taken'),
  '413': problemAnswer('Body larger than requestBodyBytesMax'),
  '503': problemAnswer('Overloaded or the store is unavailable; retry'),
};

const txResponse = { description: 'The transaction', content: { 'application/json': { schema: ref('Transaction') } } };
const gidParam = { name: 'gid', in: 'path', required: true, schema: { type: 'string' } };

function transactionPaths(limits: Limits): Schema {
  return {
    '/v1/gids': { post: { summary: 'Make a new unique gid', responses: { '200': { description: 'A gid', content: { 'application/json': { schema: { type: 'object', properties: { gid: { type: 'string' } } } } } } } } },
    '/v1/transactions': {
      post: {
        summary: 'Create a transaction. Saga, 2pc, 3pc and msg without queryPrepared start at once; tcc, xa and msg with queryPrepared open prepared and wait for submit.',
        requestBody: jsonBody('CreateTransaction'),
        responses: { '201': txResponse, ...problems },
      },
      get: {
        summary: 'List transactions, newest first',
        parameters: ['status', 'mode', 'cursor', 'limit'].map((name) => ({ name, in: 'query', required: false, schema: { type: name === 'limit' ? 'integer' : 'string' } })),
        responses: { '200': { description: 'A page', content: { 'application/json': { schema: { type: 'object', properties: { items: { type: 'array', items: { type: 'object' } }, nextCursor: { type: ['string', 'null'] } } } } } }, '400': problems['400'] },
      },
    },
    '/v1/transactions/batch': {
      post: {
        summary: `Create up to batchTransactionsMax (${limits.batchTransactionsMax}) transactions; every item is validated first (a bad one fails the request, nothing written), then each is created on its own`,
        requestBody: jsonBody('CreateTransactionBatch'),
        responses: {
          '200': { description: 'One item per transaction: the transaction, or { gid, problem } when it alone failed (gid taken, overloaded)', content: { 'application/json': { schema: { type: 'object', properties: { items: { type: 'array', items: { type: 'object' } } } } } } },
          '400': problems['400'],
          '413': problems['413'],
        },
      },
    },
    '/v1/transactions/{gid}': { get: { summary: 'One transaction with its branches and history', parameters: [gidParam], responses: { '200': txResponse, '404': problems['404'] } } },
    '/v1/transactions/{gid}/result': {
      get: {
        summary: 'Wait (long poll) until the transaction ends, or timeoutMs passes',
        parameters: [gidParam, { name: 'timeoutMs', in: 'query', required: false, schema: { type: 'integer', maximum: limits.resultWaitMsMax } }],
        responses: { '200': txResponse, '404': problems['404'] },
      },
    },
    '/v1/transactions/{gid}/branches': {
      post: {
        summary: 'Register a TCC branch (before calling its Try) or an XA branch (before calling its action)',
        parameters: [gidParam],
        requestBody: { required: true, content: { 'application/json': { schema: { oneOf: [ref('tccBranch'), ref('XaRegistration')] } } } },
        responses: { '200': { description: 'Registered' }, ...problems },
      },
    },
    '/v1/transactions/{gid}/submit': { post: { summary: 'Submit (TCC: confirm all; XA: commit all; msg: deliver)', parameters: [gidParam, { name: 'wait', in: 'query', schema: { enum: ['true', 'false'] } }], responses: { '200': txResponse, ...problems } } },
    '/v1/transactions/{gid}/abort': { post: { summary: 'Abort (TCC: cancel all; XA: roll back all; msg while prepared; saga/2pc/3pc before their decision)', parameters: [gidParam], responses: { '200': txResponse, ...problems } } },
  };
}

function operatorPaths(limits: Limits): Schema {
  const s = operatorSchemas(limits);
  const acted = json('The transaction after the action, and its audit entry', { type: 'object', properties: { transaction: ref('Transaction'), audit: ref('AuditEntry') } });
  return {
    '/v1/transactions/{gid}/force-stop': {
      post: {
        summary: 'Operator: end the transaction as failed now (compensate false: nothing more is called) or roll it back the way its mode does (compensate true); needs role admin; audited',
        parameters: [gidParam],
        requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(s.forceStop) } } },
        responses: { '200': acted, ...problems },
      },
    },
    '/v1/transactions/{gid}/retry-now': {
      post: {
        summary: 'Operator: call what is pending now, with the backoff reset; audited',
        parameters: [gidParam],
        requestBody: { required: false, content: { 'application/json': { schema: jsonSchema(s.retryNow) } } },
        responses: { '200': acted, ...problems },
      },
    },
    '/v1/transaction-counts': {
      get: {
        summary: 'Unfinished transactions in the store by status (null on stores that cannot count them from an index: PostgreSQL), and those this coordinator works on now',
        responses: { '200': json('Counts', { type: 'object', properties: { unfinished: { type: ['object', 'null'] }, activeInThisCoordinator: { type: 'integer' } } }) },
      },
    },
    '/v1/audit': {
      get: {
        summary: 'Operator actions, newest first (the newest auditEntriesMax; the audit file keeps all)',
        parameters: queryParameters(s.audit),
        responses: { '200': json('A page of entries', { type: 'object', properties: { items: { type: 'array', items: ref('AuditEntry') }, nextBefore: { type: ['integer', 'null'] }, file: { type: 'boolean' } } }), '400': problems['400'] },
      },
    },
    '/v1/stuck': {
      get: {
        summary: `Unfinished transactions retrying or aborting longer than a threshold (default 60000 ms) or with a call failed attemptsMin times (default 5), grouped by branch URL; reads at most stuckScanMax (${limits.stuckScanMax}) transactions, newest first`,
        parameters: queryParameters(s.stuck),
        responses: { '200': { description: 'Groups by URL; complete is false when the scan stopped at stuckScanMax' }, '400': problems['400'] },
      },
    },
    '/ui/': { get: { summary: 'The web console (static page and modules; no token needed to load it)', responses: { '200': { description: 'text/html' } } } },
  };
}

function registryPaths(limits: Limits): Schema {
  const service = pathParameter('service', jsonSchema(registrySchemas(limits).service), 'A DNS label; branch URLs may name it in place of a host');
  return {
    '/v1/services': {
      get: {
        summary: 'Every service with its live instances',
        responses: { '200': json('Live instances by service', { type: 'object', properties: { services: { type: 'object', additionalProperties: { type: 'array', items: ref('Registration') } } } }) },
      },
    },
    '/v1/services/{service}': {
      get: {
        summary: 'The live instances of one service',
        parameters: [service],
        responses: {
          '200': json('The instances', { type: 'object', properties: { service: { type: 'string' }, instances: { type: 'array', items: ref('Registration') } } }),
          '400': problems['400'],
          '404': problemAnswer('The service has no live instance'),
        },
      },
    },
    '/v1/services/{service}/instances': {
      post: {
        summary: 'Register an instance, or refresh it (heartbeat) by registering again before ttlMs passes',
        parameters: [service],
        requestBody: jsonBody('RegisterInstance'),
        responses: {
          '200': json('The registration', ref('Registration')),
          '400': problems['400'],
          '413': problems['413'],
          '503': problemAnswer('Too many services or instances registered; retry'),
        },
      },
    },
    '/v1/services/{service}/instances/{instanceId}': {
      delete: {
        summary: 'Deregister an instance',
        parameters: [service, pathParameter('instanceId', { type: 'string' })],
        responses: { '204': { description: 'Deregistered' }, '400': problems['400'], '404': problemAnswer('The service has no such instance') },
      },
    },
  };
}

function lockPaths(limits: Limits): Schema {
  const s = lockSchemas(limits);
  const name = pathParameter('name', jsonSchema(s.name));
  const sessionId = pathParameter('sessionId', jsonSchema(s.id));
  const noSession = problemAnswer('No live session has this id');
  const notHolder = problemAnswer('No live lease with this leaseId holds the lock (type urn:tandem:problem:not-holder)');
  return {
    '/v1/locks/{name}': {
      get: { summary: 'Holders and waiters of a lock', parameters: [name], responses: { '200': json('The lock', ref('LockState')), '400': problems['400'] } },
    },
    '/v1/locks/{name}/acquire': {
      post: {
        summary: 'Acquire an exclusive, shared or semaphore lease; waits up to waitMs for it, answering the moment it is granted',
        parameters: [name],
        requestBody: jsonBody('AcquireLock', 'Checked beyond this schema: ttlMs is required unless sessionId is given, and not allowed with it; permits is required for mode semaphore and allowed for no other mode.'),
        responses: {
          '200': json('Granted', ref('Lease')),
          '400': problems['400'],
          '404': noSession,
          '409': problemAnswer('Not granted: lock-busy (held, or waitMs passed), lock-kind-mismatch, lease-id-taken, superseded or cancelled (see type)'),
          '413': problems['413'],
          '503': problemAnswer('Too many waiters, leases or sessions, or the store is unavailable; retry'),
        },
      },
    },
    '/v1/locks/{name}/renew': {
      post: {
        summary: 'Extend a lease, by its own ttlMs or a new one',
        parameters: [name],
        requestBody: jsonBody('RenewLock'),
        responses: {
          '200': json('Renewed', { type: 'object', properties: { name: { type: 'string' }, token: { type: 'integer' }, ttlRemainingMs: { type: 'integer' }, elapsedMs: { type: 'number' } } }),
          '400': problems['400'],
          '409': notHolder,
          '413': problems['413'],
          '503': problems['503'],
        },
      },
    },
    '/v1/locks/{name}/release': {
      post: {
        summary: 'Release a lease; the next waiter is granted at once',
        parameters: [name],
        requestBody: jsonBody('ReleaseLock'),
        responses: {
          '200': json('Released', { type: 'object', properties: { name: { type: 'string' }, released: { const: true } } }),
          '400': problems['400'],
          '409': notHolder,
          '413': problems['413'],
          '503': problems['503'],
        },
      },
    },
    '/v1/sessions': {
      post: {
        summary: 'Open a session: leases bound to it live until it is closed or misses its keepalives',
        requestBody: jsonBody('OpenSession'),
        responses: { '201': json('The session', ref('Session')), '400': problems['400'], '413': problems['413'], '503': problemAnswer('Too many sessions, or the store is unavailable; retry') },
      },
    },
    '/v1/sessions/{sessionId}/keepalive': {
      post: { summary: 'Keep a session alive for another ttlMs', parameters: [sessionId], responses: { '200': json('The session', ref('Session')), '400': problems['400'], '404': noSession, '503': problems['503'] } },
    },
    '/v1/sessions/{sessionId}': {
      delete: {
        summary: 'Close a session and release every lease bound to it',
        parameters: [sessionId],
        responses: {
          '200': json('Closed', { type: 'object', properties: { closed: { const: true }, releasedLeases: { type: 'integer' } } }),
          '400': problems['400'],
          '404': noSession,
          '503': problems['503'],
        },
      },
    },
  };
}

function kvPaths(limits: Limits): Schema {
  const s = kvSchemas(limits);
  const key = pathParameter('key', jsonSchema(s.key), 'The rest of the path: a key may contain slashes');
  const versionConflict = problemAnswer('The key is not at expectedVersion (type urn:tandem:problem:version-conflict; `currentVersion` says where it is, 0 if absent)');
  return {
    '/v1/kv': {
      get: {
        summary: 'List entries in key order',
        parameters: queryParameters(s.list),
        responses: {
          '200': json('A page', { type: 'object', properties: { items: { type: 'array', items: ref('KvEntry') }, nextCursor: { type: ['string', 'null'] } } }),
          '400': problems['400'],
        },
      },
    },
    '/v1/kv/{key}': {
      get: { summary: 'Read a key', parameters: [key], responses: { '200': json('The entry', ref('KvEntry')), '400': problems['400'], '404': problemAnswer('No such key') } },
      put: {
        summary: 'Write a key; with expectedVersion, only if the key is at that version (0: only if absent)',
        parameters: [key],
        requestBody: jsonBody('KvPut'),
        responses: {
          '200': json('Written', { type: 'object', properties: { key: { type: 'string' }, version: { type: 'integer' }, created: { type: 'boolean' } } }),
          '400': problems['400'],
          '409': versionConflict,
          '413': problemAnswer('Body larger than requestBodyBytesMax, or value larger than kvValueBytesMax'),
          '503': problemAnswer('The store holds kvKeysMax keys already, or is unavailable; retry'),
        },
      },
      delete: {
        summary: 'Delete a key; with expectedVersion, only if the key is at that version',
        parameters: [key, ...queryParameters(s.deleteQuery)],
        responses: {
          '200': json('Deleted', { type: 'object', properties: { key: { type: 'string' }, deleted: { const: true }, version: { type: 'integer' } } }),
          '400': problems['400'],
          '404': problemAnswer('No such key'),
          '409': versionConflict,
          '503': problems['503'],
        },
      },
    },
  };
}

/** DTM's own refusals are JSON with dtm_result, not problems: its SDKs read them that way. */
function dtmPaths(limits: Limits): Schema {
  const s = dtmSchemas(limits);
  const dtmProblem = problemAnswer('Malformed request: a problem that also carries dtm_result FAILURE and message');
  const success = json('dtm_result SUCCESS', ref('DtmAnswer'));
  const refused = json('dtm_result FAILURE with a message: refused in the current status', ref('DtmAnswer'));
  const transCall = (summary: string, extra: Schema = {}) => ({
    post: { summary, requestBody: jsonBody('DtmTrans'), responses: { '200': success, '400': dtmProblem, '409': refused, ...extra, '413': problems['413'], '503': problems['503'] } },
  });
  const branchCall = (summary: string) => ({
    post: { summary, requestBody: jsonBody('DtmBranch'), responses: { '200': success, '400': dtmProblem, '409': refused, '413': problems['413'], '503': problems['503'] } },
  });
  return {
    '/api/dtmsvr/newGid': { get: { summary: 'Make a new unique gid', responses: { '200': json('A gid', { type: 'object', properties: { gid: { type: 'string' }, dtm_result: { const: 'SUCCESS' } } }) } } },
    '/api/dtmsvr/prepare': transCall('Open a TCC or XA transaction, or prepare a msg or a saga (repeating it while prepared is fine)'),
    '/api/dtmsvr/submit': transCall('Start a saga, or confirm a prepared TCC transaction', {
      '425': json('dtm_result ONGOING: with wait_result, the transaction has not ended yet and is being retried', ref('DtmAnswer')),
    }),
    '/api/dtmsvr/abort': transCall('Cancel a prepared TCC transaction'),
    '/api/dtmsvr/registerBranch': branchCall('Register a TCC branch\'s confirm and cancel, or an XA branch\'s url (registering it again is a no-op)'),
    '/api/dtmsvr/registerTccBranch': branchCall('Older SDKs\' name for registerBranch'),
    '/api/dtmsvr/registerXaBranch': branchCall('Older SDKs\' name for registerBranch'),
    '/api/dtmsvr/query': {
      get: { summary: 'One transaction and its branch ops in DTM\'s shape', parameters: queryParameters(s.query), responses: { '200': json('The transaction', ref('DtmQuery')), '400': dtmProblem, '503': problems['503'] } },
    },
    '/api/dtmsvr/all': {
      get: {
        summary: 'List transactions newest first, paged by position (next_position of the previous page; "" at the end)',
        parameters: queryParameters(s.list),
        responses: {
          '200': json('A page', { type: 'object', properties: { transactions: { type: 'array', items: { type: 'object' } }, next_position: { type: 'string' } } }),
          '400': dtmProblem,
          '503': problems['503'],
        },
      },
    },
    '/api/dtmsvr/forceStop': {
      post: { summary: 'End an unfinished transaction as failed, calling nothing more; body {gid}', requestBody: jsonBody('DtmGid'), responses: { '200': success, '400': dtmProblem, '409': refused, '503': problems['503'] } },
    },
    '/api/dtmsvr/resetNextCronTime': {
      post: { summary: 'Retry one unfinished transaction\'s pending calls now; body {gid}', requestBody: jsonBody('DtmGid'), responses: { '200': success, '400': dtmProblem, '409': refused, '503': problems['503'] } },
    },
    '/api/dtmsvr/resetCronTime': {
      get: {
        summary: 'Retry now every submitted or aborting transaction whose next attempt is more than `timeout` seconds away; looks at `limit` of them per call',
        parameters: queryParameters(s.resetCron),
        responses: { '200': json('Counts', { type: 'object', properties: { has_remaining: { type: 'boolean' }, succeed_count: { type: 'integer' } } }), '400': dtmProblem },
      },
    },
    '/api/dtmsvr/version': { get: { summary: 'The server\'s version', responses: { '200': json('Version', { type: 'object', properties: { version: { type: 'string' } } }) } } },
    ...Object.fromEntries(
      notServed.map((route) => [
        `/api/dtmsvr/${route.path.replace(/:([A-Za-z]+)/g, '{$1}')}`,
        { [route.method.toLowerCase()]: { summary: `Not served: ${route.why}`, responses: { '501': problemAnswer('Not served by Tandem; the detail says what to use instead') } } },
      ]),
    ),
    '/api/ping': { get: { summary: 'DTM\'s liveness probe (any method)', responses: { '200': json('pong', { type: 'object', properties: { msg: { const: 'pong' } } }) } } },
  };
}

export function openApiDocument(limits: Limits): Record<string, unknown> {
  const s = nativeSchemas(limits);
  const branchSchemas = Object.fromEntries(modes.map((mode) => [`${mode}Branch`, jsonSchema(s.branchOf(mode))]));
  const locks = lockSchemas(limits);
  const dtm = dtmSchemas(limits);
  return {
    openapi: '3.1.0',
    info: {
      title: 'Tandem coordinator',
      version: tandemVersion,
      description: 'Durable global transactions (saga, tcc, 2pc, 3pc, xa, two-phase messages), a service registry, distributed locks with sessions, and a versioned key-value store. A DTM-compatible API is also served under /api/dtmsvr/. The lock, session and key-value routes are served only when the coordinator runs with them.',
    },
    paths: {
      ...transactionPaths(limits),
      ...operatorPaths(limits),
      ...registryPaths(limits),
      ...lockPaths(limits),
      ...kvPaths(limits),
      ...dtmPaths(limits),
      '/healthz': { get: { summary: 'Liveness', responses: { '200': { description: 'ok' } } } },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'text/plain exposition format' } } } },
      '/api/metrics': { get: { summary: 'Prometheus metrics, where DTM serves them', responses: { '200': { description: 'text/plain exposition format' } } } },
    },
    components: {
      schemas: {
        CreateTransaction: jsonSchema(s.create),
        CreateTransactionBatch: jsonSchema(s.batch),
        XaRegistration: jsonSchema(s.registerXa),
        ...branchSchemas,
        Transaction: tx,
        RegisterInstance: jsonSchema(registrySchemas(limits).registration),
        Registration: registration,
        AcquireLock: jsonSchema(locks.acquire),
        RenewLock: jsonSchema(locks.renew),
        ReleaseLock: jsonSchema(locks.release),
        OpenSession: jsonSchema(locks.openSession),
        Lease: lease,
        LockState: lockState,
        Session: session,
        KvPut: jsonSchema(kvSchemas(limits).put),
        KvEntry: kvEntry,
        DtmTrans: jsonSchema(dtm.trans),
        DtmBranch: jsonSchema(dtm.branch),
        DtmGid: jsonSchema(dtm.gidOnly),
        DtmAnswer: dtmAnswer,
        DtmQuery: dtmQueryAnswer,
        Problem: problem,
        AuditEntry: auditEntry,
      },
    },
  };
}
