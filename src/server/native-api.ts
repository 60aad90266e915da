// The native JSON API under /v1.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Limits } from '../config.js';
import type { Engine } from '../tx/engine.js';
import type { WorkflowService } from '../tx/workflow-service.js';
import { globalStatuses, modes, type Branch, type HistoryEntry, type Mode, type Tx } from '../tx/types.js';
import { decodeCursor, encodeCursor, type Store } from '../store/store.js';
import type { TxView } from '../shared/views.js';
import { conflict, fieldPath, invalid, notFound, problemOfError, ProblemError, type FieldError, type Problem } from './problem.js';
import type { NewTx } from '../tx/machine.js';
import { isBrokerTarget, type BrokerName } from '../messaging/types.js';
import { opsOfMode, registersBranches, startsAtOnce, toBranch, toNewTx, type BranchRequest } from './tx-request.js';
import { branchIdSchema, gidSchema, httpUrlSchema, isHttpUrl, jsonDeeperThan, optionSchemas, parseOrThrow, payloadText } from './validation.js';

let gidCounter = 0;

/**
 * A new gid: 8 base-36 characters of the millisecond clock, a 4-character counter, then 12 hex
 * characters of randomness. Gids made in order land next to each other in the stores' indexes,
 * which keeps each group commit to a few pages; randomUUID draws on buffered entropy, unlike a
 * synchronous randomBytes call per request.
 */
export function newGid(): string {
  gidCounter = (gidCounter + 1) % 1_679_616; // 36^4
  return `${Date.now().toString(36).padStart(8, '0')}${gidCounter.toString(36).padStart(4, '0')}${randomUUID().slice(-12)}`;
}

export interface ApiDeps {
  engine: Engine;
  store: Store;
  limits: Limits;
  /** Brokers message steps may publish to (the coordinator has a connection for each). */
  brokers?: ReadonlySet<BrokerName>;
  /** Durable workflows (also DTM's workflow protocol on the DTM API); off when absent. */
  workflows?: WorkflowService;
}

export function nativeSchemas(limits: Limits) {
  const url = httpUrlSchema(limits);
  const options = optionSchemas(limits);
  const step = stepTargetSchema(limits);
  const branchBase = { branchId: branchIdSchema(limits).optional(), payload: z.unknown().optional() };
  const branchSchemaOf = (mode: Mode) =>
    z.object({
      ...branchBase,
      ...Object.fromEntries(opsOfMode[mode].map((op) => [op, mode === 'msg' ? step : url])),
      ...(mode === 'saga' ? { dependsOn: z.array(branchIdSchema(limits)).max(limits.branchCountMax).optional() } : {}),
    }).strict();
  // Built once: schema construction costs more than validation.
  const branchSchemas = Object.fromEntries(modes.map((mode) => [mode, branchSchemaOf(mode)])) as Record<Mode, ReturnType<typeof branchSchemaOf>>;
  const branchOf = (mode: Mode) => branchSchemas[mode];
  const gid = gidSchema(limits);
  const create = z
    .object({
      gid: gidSchema(limits).optional(),
      mode: z.enum(modes, { message: `must be one of ${modes.join(', ')}` }),
      branches: z.array(z.unknown()).optional(),
      concurrent: z.boolean().optional(),
      timeoutToFailMs: options.timeoutToFailMs.optional(),
      requestTimeoutMs: options.requestTimeoutMs.optional(),
      retryIntervalMs: options.retryIntervalMs.optional(),
      retryLimit: options.retryLimit.optional(),
      delayMs: options.delayMs.optional(),
      branchHeaders: options.branchHeaders.optional(),
      queryPrepared: url.optional(),
      waitResult: z.boolean().optional(),
    })
    .strict();
  const register = branchOf('tcc');
  // An XA branch is one URL; the coordinator calls it with op=commit or op=rollback.
  const registerXa = z.object({ ...branchBase, url }).strict();
  const list = z.object({
    status: z.enum(globalStatuses).optional(),
    mode: z.enum(modes).optional(),
    cursor: z.string().max(512).optional(),
    /** Only transactions created before this instant: the console's age filter. */
    createdBefore: z.iso.datetime({ offset: true, message: 'must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z' }).optional(),
    limit: z.coerce.number().int().min(1).max(limits.listLimitMax, `at most ${limits.listLimitMax} (listLimitMax)`).optional(),
  });
  const waitQuery = z.object({ wait: z.enum(['true', 'false']).optional() });
  const resultQuery = z.object({
    timeoutMs: z.coerce.number().int('must be a whole number').min(0, 'must not be negative').max(limits.resultWaitMsMax, `at most ${limits.resultWaitMsMax} (resultWaitMsMax)`).optional(),
  });
  const batch = z
    .object({
      transactions: z
        .array(z.unknown())
        .min(1, 'must hold at least one transaction')
        .max(limits.batchTransactionsMax, `at most ${limits.batchTransactionsMax} transactions (batchTransactionsMax)`),
    })
    .strict();
  return { create, batch, register, registerXa, list, branchOf, waitQuery, resultQuery, gid };
}

type BranchInput = Record<string, unknown> & { branchId?: string; payload?: unknown; dependsOn?: string[] };

function xaBranchInput(input: { url: string; branchId?: string; payload?: unknown }): BranchInput {
  const { url, ...rest } = input;
  return { ...rest, commit: url, rollback: url };
}

/** A message step: an HTTP endpoint, or a broker target (checked further in toNewTx). */
function stepTargetSchema(limits: Limits) {
  const url = httpUrlSchema(limits);
  return z
    .string()
    .max(limits.urlLengthMax, `at most ${limits.urlLengthMax} characters (urlLengthMax)`)
    .superRefine((value, context) => {
      if (isBrokerTarget(value)) return;
      const parsed = url.safeParse(value);
      if (parsed.success) return;
      // An http(s) URL the URL check refused says why; anything else gets the list of forms.
      const message = isHttpUrl(value) ? parsed.error.issues[0]?.message : undefined;
      context.addIssue({ code: 'custom', message: message ?? 'must be an absolute http(s) URL, rabbitmq:<exchange>/<routingKey> or jetstream:<subject>' });
    });
}

function toBranchRequest(mode: Mode, input: BranchInput): BranchRequest {
  const urls: Record<string, string> = {};
  for (const op of opsOfMode[mode]) urls[op] = input[op] as string;
  return {
    ...(input.branchId !== undefined ? { branchId: input.branchId } : {}),
    urls,
    ...(input.payload !== undefined ? { payload: payloadText(input.payload) } : {}),
    ...(input.dependsOn ? { dependsOn: input.dependsOn } : {}),
  };
}

export function registerNativeApi(app: FastifyInstance, deps: ApiDeps): void {
  const { engine, store, limits } = deps;
  const brokers = deps.brokers ?? new Set<BrokerName>();
  const s = nativeSchemas(limits);

  app.post('/v1/gids', async () => ({ gid: newGid() }));

  /** A validated create request as the engine takes it; throws a 400 naming fields under `prefix`. */
  const toCreate = (input: unknown, prefix: ReadonlyArray<string | number>) => {
    const body = parseOrThrow(s.create, input ?? {}, prefix);
    const mode = body.mode;
    const branchInputs = (body.branches ?? []).map((branch, index) =>
      parseOrThrow(s.branchOf(mode), branch, [...prefix, 'branches', index]) as BranchInput,
    );
    const errors: FieldError[] = [];
    if (body.concurrent !== undefined && (mode === '2pc' || mode === '3pc')) {
      errors.push({ field: 'concurrent', message: 'only saga, msg, tcc and xa take concurrent (2pc and 3pc always call every branch at once)' });
    }
    if (body.queryPrepared !== undefined && mode !== 'msg') errors.push({ field: 'queryPrepared', message: 'only messages (mode msg) have a queryPrepared URL' });
    if (errors.length > 0) throw prefixed(invalid(errors), prefix);
    const txRequest = {
      gid: body.gid ?? newGid(),
      mode,
      branches: branchInputs.map((branch) => toBranchRequest(mode, branch)),
      concurrent: body.concurrent ?? false,
      timeoutToFailMs: body.timeoutToFailMs,
      requestTimeoutMs: body.requestTimeoutMs,
      retryIntervalMs: body.retryIntervalMs,
      retryLimit: body.retryLimit,
      branchHeaders: body.branchHeaders,
      queryPreparedUrl: body.queryPrepared,
      delayMs: body.delayMs,
      brokers,
    };
    let spec: NewTx;
    try {
      spec = toNewTx(txRequest, limits);
    } catch (error) {
      throw error instanceof ProblemError ? prefixed(error, prefix) : error;
    }
    return { spec, submit: startsAtOnce(txRequest), waitResult: body.waitResult ?? false };
  };

  app.post('/v1/transactions', async (request, reply) => {
    const { spec, submit, waitResult } = toCreate(request.body, []);
    const tx = await engine.create(spec, { submit, waitForRound: waitResult, traceparent: request.traceparent });
    return reply.code(201).send(txView(tx, limits.jsonDepthMax));
  });

  // Many transactions in one request, so a busy producer pays one HTTP exchange (and shares one
  // group commit) for many messages. Every item is validated before anything is written; a bad
  // one fails the whole request with 400. Items then succeed or fail on their own (a gid taken,
  // the coordinator overloaded): each answer item carries the transaction or its problem.
  app.post('/v1/transactions/batch', async (request) => {
    const body = parseOrThrow(s.batch, request.body ?? {});
    const creates = body.transactions.map((item, index) => toCreate(item, ['transactions', index]));
    const errors: FieldError[] = [];
    const seen = new Set<string>();
    creates.forEach((create, index) => {
      if (create.waitResult) errors.push({ field: `transactions[${index}].waitResult`, message: 'is not available in a batch; wait with GET /v1/transactions/:gid/result' });
      if (seen.has(create.spec.gid)) errors.push({ field: `transactions[${index}].gid`, message: `gid ${create.spec.gid} appears twice in the batch` });
      seen.add(create.spec.gid);
    });
    if (errors.length > 0) throw invalid(errors);
    const outcomes = await Promise.allSettled(creates.map((create) => engine.create(create.spec, { submit: create.submit, waitForRound: false, traceparent: request.traceparent })));
    return {
      items: outcomes.map((outcome, index) =>
        outcome.status === 'fulfilled' ? txView(outcome.value, limits.jsonDepthMax) : { gid: creates[index].spec.gid, problem: batchItemProblem(outcome.reason) },
      ),
    };
  });

  app.get('/v1/transactions', async (request) => {
    const query = parseOrThrow(s.list, request.query);
    if (query.cursor !== undefined && !decodeCursor(query.cursor)) throw invalid([{ field: 'cursor', message: 'is not a cursor this API gave out' }]);
    if (query.cursor !== undefined && query.createdBefore !== undefined) {
      throw invalid([{ field: 'createdBefore', message: 'goes with the first page only; the cursor carries it on' }]);
    }
    const { createdBefore, ...rest } = query;
    // A cursor just past every gid at that instant: the stores' paging then does the rest.
    const cursor = createdBefore !== undefined ? encodeCursor(Date.parse(createdBefore), '') : query.cursor;
    const page = await store.list({ ...rest, ...(cursor !== undefined ? { cursor } : {}), limit: query.limit ?? 20 });
    return {
      items: page.items.map((item) => ({ ...item, ...times(item) })),
      nextCursor: page.nextCursor,
    };
  });

  app.get<{ Params: { gid: string } }>('/v1/transactions/:gid', async (request) => {
    const gid = parseOrThrow(s.gid, request.params.gid, ['gid']);
    const tx = await store.get(gid);
    if (!tx) throw notFound(`no transaction has gid ${gid}`);
    return { ...txView(tx, limits.jsonDepthMax), history: historyView(await store.history(gid)) };
  });

  // Long poll: answers as soon as the transaction ends, or with its current state at timeoutMs.
  app.get<{ Params: { gid: string } }>('/v1/transactions/:gid/result', async (request) => {
    const gid = parseOrThrow(s.gid, request.params.gid, ['gid']);
    const query = parseOrThrow(s.resultQuery, request.query);
    const tx = await engine.waitForEnd(gid, query.timeoutMs ?? Math.min(30_000, limits.resultWaitMsMax));
    if (!tx) throw notFound(`no transaction has gid ${gid}`);
    return txView(tx, limits.jsonDepthMax);
  });

  app.post<{ Params: { gid: string } }>('/v1/transactions/:gid/branches', async (request) => {
    const gid = parseOrThrow(s.gid, request.params.gid, ['gid']);
    const tx = await store.get(gid);
    if (!tx) throw notFound(`no transaction has gid ${gid}`);
    if (!registersBranches(tx.mode)) throw conflict(`transaction ${gid} is a ${tx.mode}; only tcc and xa transactions take registered branches`, 'not-allowed-in-status');
    const input = (tx.mode === 'xa' ? xaBranchInput(parseOrThrow(s.registerXa, request.body ?? {})) : parseOrThrow(s.register, request.body ?? {})) as BranchInput;
    const errors: FieldError[] = [];
    const branch = toBranch(
      { ...toBranchRequest(tx.mode, input), branchId: input.branchId ?? '' },
      tx.branches.length,
      { mode: tx.mode },
      limits,
      'body',
      errors,
    );
    if (errors.length > 0) throw invalid(errors);
    const outcome = await engine.apply(gid, { type: 'register', branch, branchCountMax: limits.branchCountMax }, { waitForRound: false });
    const registered = settleOutcome(gid, outcome);
    // The step appended ours last, in the same serialized section that saved it.
    return { gid, branchId: registered.branches[registered.branches.length - 1].branchId, status: registered.status };
  });

  for (const action of ['submit', 'abort'] as const) {
    app.post<{ Params: { gid: string } }>(`/v1/transactions/:gid/${action}`, async (request) => {
      const gid = parseOrThrow(s.gid, request.params.gid, ['gid']);
      const query = parseOrThrow(s.waitQuery, request.query);
      const event = action === 'submit' ? { type: 'submit' as const } : { type: 'abort' as const, reason: 'aborted by the application' };
      const outcome = await engine.apply(gid, event, { waitForRound: query.wait === 'true' });
      const tx = settleOutcome(gid, outcome);
      // A TCC or XA submit that came after the deadline rolled the transaction back: not a success.
      if (action === 'submit' && registersBranches(tx.mode) && (tx.status === 'aborting' || tx.status === 'failed')) {
        throw conflict(`transaction ${gid} is ${tx.status}, not submitted: ${tx.reason ?? 'it was rolled back'}`, 'not-allowed-in-status');
      }
      return txView(tx, limits.jsonDepthMax);
    });
  }

}

/** Field names of a nested request's problems, under the item's place in the batch. */
function prefixed(error: ProblemError, prefix: ReadonlyArray<string | number>): ProblemError {
  if (prefix.length === 0 || !error.problem.errors) return error;
  const path = fieldPath(prefix);
  return invalid(error.problem.errors.map((fieldError) => ({ ...fieldError, field: `${path}.${fieldError.field}` })));
}

/** What one failed batch item answers: the problem a single create would have got. */
function batchItemProblem(error: unknown): Problem {
  const known = problemOfError(error);
  if (known) return known.problem;
  return { type: 'urn:tandem:problem:internal', title: 'Internal error', status: 500, detail: error instanceof Error ? error.message : String(error) };
}

function settleOutcome(gid: string, outcome: Awaited<ReturnType<Engine['apply']>>): Tx {
  if (outcome.kind === 'not-found') throw notFound(`no transaction has gid ${gid}`);
  if (outcome.kind === 'refused' && outcome.error.code === 'branch-limit') throw invalid([{ field: 'body', message: outcome.error.message }]);
  if (outcome.kind === 'refused') throw conflict(outcome.error.message, outcome.error.code);
  return outcome.tx;
}

function times(item: { createdAtMs: number; updatedAtMs: number; nextAttemptAtMs: number | null }) {
  return {
    createdAt: new Date(item.createdAtMs).toISOString(),
    updatedAt: new Date(item.updatedAtMs).toISOString(),
    nextAttemptAt: item.nextAttemptAtMs === null ? null : new Date(item.nextAttemptAtMs).toISOString(),
  };
}

/**
 * What readers see of a transaction. Header values never leave the coordinator (they are
 * often credentials): only their names are shown. Answer excerpts in `lastError` and the
 * history stay; the README says who can read them.
 */
export function txView(tx: Tx, jsonDepthMax: number): TxView {
  const { branchHeaders, ...options } = tx.options;
  return {
    gid: tx.gid,
    mode: tx.mode,
    status: tx.status,
    phase: tx.phase,
    ...(tx.reason ? { reason: tx.reason } : {}),
    ...times(tx),
    options: { ...options, branchHeaderNames: Object.keys(branchHeaders) },
    branches: tx.branches.map((branch) => branchView(branch, jsonDepthMax)),
  };
}

function branchView(branch: Branch, jsonDepthMax: number) {
  return {
    branchId: branch.branchId,
    ...(branch.payload !== undefined ? { payload: parseIfJson(branch.payload, jsonDepthMax) } : {}),
    ...(branch.dependsOn ? { dependsOn: branch.dependsOn } : {}),
    ops: branch.ops,
  };
}

/**
 * A payload as JSON when it is JSON, else as its text. A raw payload from the DTM API may nest
 * deeper than any request body could; parsed, it would overflow the answer's serializer.
 */
function parseIfJson(text: string, jsonDepthMax: number): unknown {
  if (jsonDeeperThan(text, jsonDepthMax)) return text;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function historyView(entries: HistoryEntry[]) {
  return entries.map((entry) => ({ at: new Date(entry.atMs).toISOString(), status: entry.status, phase: entry.phase, ...(entry.reason ? { reason: entry.reason } : {}) }));
}
