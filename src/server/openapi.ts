// The OpenAPI 3.1 document served at /openapi.json. Request bodies are generated from the same
// zod schemas that validate requests, so the document cannot drift from the checks.
import { z } from 'zod';
import type { Limits } from '../config.js';
import { modes } from '../tx/types.js';
import { nativeSchemas } from './native-api.js';

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

function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  return z.toJSONSchema(schema, { unrepresentable: 'any', io: 'input' }) as Record<string, unknown>;
}

const problems = {
  '400': { description: 'Invalid request; `errors` names each bad field', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
  '404': { description: 'No such transaction', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
  '409': { description: 'Not allowed in the current state, or the gid is taken', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
  '413': { description: 'Body larger than requestBodyBytesMax', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
  '503': { description: 'Overloaded or the store is unavailable; retry', content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } } },
};

const txResponse = { description: 'The transaction', content: { 'application/json': { schema: { $ref: '#/components/schemas/Transaction' } } } };
const gidParam = { name: 'gid', in: 'path', required: true, schema: { type: 'string' } };

export function openApiDocument(limits: Limits): Record<string, unknown> {
  const s = nativeSchemas(limits);
  const branchSchemas = Object.fromEntries(modes.map((mode) => [`${mode}Branch`, jsonSchema(s.branchOf(mode))]));
  return {
    openapi: '3.1.0',
    info: {
      title: 'Tandem coordinator',
      version: '0.1.0',
      description: 'Durable global transactions (saga, tcc, 2pc, 3pc). A DTM-compatible API is also served under /api/dtmsvr/.',
    },
    paths: {
      '/v1/gids': { post: { summary: 'Make a new unique gid', responses: { '200': { description: 'A gid', content: { 'application/json': { schema: { type: 'object', properties: { gid: { type: 'string' } } } } } } } } },
      '/v1/transactions': {
        post: {
          summary: 'Create a transaction. Saga, 2pc and 3pc start at once; tcc opens prepared and waits for branches and submit.',
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/CreateTransaction' } } } },
          responses: { '201': txResponse, ...problems },
        },
        get: {
          summary: 'List transactions, newest first',
          parameters: ['status', 'mode', 'cursor', 'limit'].map((name) => ({ name, in: 'query', required: false, schema: { type: name === 'limit' ? 'integer' : 'string' } })),
          responses: { '200': { description: 'A page', content: { 'application/json': { schema: { type: 'object', properties: { items: { type: 'array', items: { type: 'object' } }, nextCursor: { type: ['string', 'null'] } } } } } }, '400': problems['400'] },
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
          summary: 'Register a TCC branch (before calling its Try)',
          parameters: [gidParam],
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/tccBranch' } } } },
          responses: { '200': { description: 'Registered' }, ...problems },
        },
      },
      '/v1/transactions/{gid}/submit': { post: { summary: 'Submit (TCC: confirm all)', parameters: [gidParam, { name: 'wait', in: 'query', schema: { enum: ['true', 'false'] } }], responses: { '200': txResponse, ...problems } } },
      '/v1/transactions/{gid}/abort': { post: { summary: 'Abort (TCC: cancel all; saga/2pc/3pc before their decision)', parameters: [gidParam], responses: { '200': txResponse, ...problems } } },
      '/healthz': { get: { summary: 'Liveness', responses: { '200': { description: 'ok' } } } },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'text/plain exposition format' } } } },
    },
    components: {
      schemas: {
        CreateTransaction: jsonSchema(s.create),
        ...branchSchemas,
        Transaction: tx,
        Problem: problem,
      },
    },
  };
}
