// The workflow API under /v1/workflows and /v1/workflow-tasks: start a workflow, look at it,
// and the worker protocol (claim by long poll, record steps, heartbeat, finish). See
// docs/workflows.md.
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Limits } from '../config.js';
import type { OpState, Tx } from '../tx/types.js';
import { isFinal, globalStatuses } from '../tx/types.js';
import { WorkflowNotFoundError, WorkflowRefusedError, WorkflowTooLargeError, type WorkflowService } from '../tx/workflow-service.js';
import { decodeCursor, type Store } from '../store/store.js';
import { conflict, invalid, notFound, ProblemError, tooLarge } from './problem.js';
import { gidSchema, parseOrThrow } from './validation.js';
import { newGid } from './native-api.js';

export interface WorkflowApiDeps {
  workflows: WorkflowService;
  store: Store;
  limits: Limits;
}

export interface StepOpView {
  status: OpState['status'];
  attempts: number;
  result?: unknown;
  lastError?: string;
  startedAtMs?: number;
  settledAtMs?: number;
  durationMs?: number;
}

export interface WorkflowView {
  workflowId: string;
  name: string;
  status: Tx['status'];
  phase: string;
  reason?: string;
  input: unknown;
  output?: unknown;
  createdAtMs: number;
  updatedAtMs: number;
  nextAttemptAtMs: number | null;
  /** The worker running it (the part of the lease id before the slash), until when. */
  lease: { worker: string; untilMs: number } | null;
  steps: Array<{ name: string; index: number; action: StepOpView; compensate?: StepOpView }>;
}

function parsed(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function opView(op: OpState): StepOpView {
  return {
    status: op.status,
    attempts: op.attempts,
    ...(op.result !== undefined ? { result: parsed(op.result) } : {}),
    ...(op.lastError !== undefined ? { lastError: op.lastError } : {}),
    ...(op.startedAtMs !== undefined ? { startedAtMs: op.startedAtMs } : {}),
    ...(op.settledAtMs !== undefined ? { settledAtMs: op.settledAtMs } : {}),
    ...(op.startedAtMs !== undefined && op.settledAtMs !== undefined ? { durationMs: op.settledAtMs - op.startedAtMs } : {}),
  };
}

export function workflowView(tx: Tx): WorkflowView {
  const output = parsed(tx.extra?.output);
  return {
    workflowId: tx.gid,
    name: tx.extra?.workflowName ?? '',
    status: tx.status,
    phase: tx.phase,
    ...(tx.reason !== undefined ? { reason: tx.reason } : {}),
    input: parsed(tx.extra?.input),
    ...(output !== undefined ? { output } : {}),
    createdAtMs: tx.createdAtMs,
    updatedAtMs: tx.updatedAtMs,
    nextAttemptAtMs: tx.nextAttemptAtMs,
    lease: tx.lease && !isFinal(tx) ? { worker: tx.lease.owner.split('/')[0], untilMs: tx.lease.untilMs } : null,
    steps: tx.branches.map((branch, index) => ({
      name: branch.branchId,
      index,
      action: opView(branch.ops.action ?? { url: '', status: 'pending', attempts: 0 }),
      ...(branch.ops.compensate ? { compensate: opView(branch.ops.compensate) } : {}),
    })),
  };
}

/** What a claim hands a worker: the workflow, its record, and the lease it runs under. */
export function taskView(tx: Tx, leaseId: string, leaseMs: number) {
  return { ...workflowView(tx), leaseId, leaseMs };
}

export function workflowSchemas(limits: Limits) {
  const name = z.string().min(1, 'must not be empty').max(limits.branchIdLengthMax, `at most ${limits.branchIdLengthMax} characters (branchIdLengthMax)`);
  const leaseId = z.string().min(1, 'must not be empty').max(512);
  const text = z.string().max(limits.workflowValueBytesMax, `at most ${limits.workflowValueBytesMax} characters (workflowValueBytesMax)`);
  const waitMs = z.coerce.number().int('must be a whole number').min(0, 'must not be negative');
  return {
    gid: gidSchema(limits),
    start: z.object({
      workflowId: gidSchema(limits).optional(),
      name,
      input: z.unknown().optional(),
      timeoutMs: z.number().int().min(0).max(limits.timeoutToFailMsMax, `at most ${limits.timeoutToFailMsMax} (timeoutToFailMsMax)`).optional(),
    }).strict(),
    claim: z.object({
      workerId: z.string().min(1, 'must not be empty').max(128).regex(/^[^/]+$/, 'must not contain "/"'),
      workflows: z.array(name).max(1000).optional(),
      waitMs: waitMs.max(limits.workflowClaimWaitMsMax, `at most ${limits.workflowClaimWaitMsMax} (workflowClaimWaitMsMax)`).optional(),
    }).strict(),
    lease: z.object({ leaseId }).strict(),
    step: z.object({
      leaseId,
      name,
      op: z.enum(['action', 'compensate']),
      status: z.enum(['succeeded', 'failed', 'retrying']),
      result: z.unknown().optional(),
      error: text.optional(),
      index: z.number().int().min(0).optional(),
      durationMs: z.number().min(0).max(1e12).optional(),
    }).strict(),
    rollback: z.object({ leaseId, reason: text }).strict(),
    finish: z.discriminatedUnion('status', [
      z.object({ leaseId, status: z.literal('succeeded'), output: z.unknown().optional() }).strict(),
      z.object({ leaseId, status: z.literal('failed'), reason: text }).strict(),
    ]),
    block: z.object({ leaseId, reason: text }).strict(),
    sleep: z.object({ leaseId, name, index: z.number().int().min(0).optional(), durationMs: z.number().int().min(0).max(limits.timeoutToFailMsMax, `at most ${limits.timeoutToFailMsMax} (timeoutToFailMsMax)`) }).strict(),
    wait: z.object({
      leaseId,
      name,
      index: z.number().int().min(0).optional(),
      signal: name,
      timeoutMs: z.number().int().min(0).max(limits.timeoutToFailMsMax, `at most ${limits.timeoutToFailMsMax} (timeoutToFailMsMax)`).optional(),
    }).strict(),
    signal: z.object({ value: z.unknown().optional() }).strict(),
    signalName: name,
    cancel: z.object({ reason: text.optional() }).strict(),
    getQuery: z.object({ waitMs: waitMs.max(limits.resultWaitMsMax, `at most ${limits.resultWaitMsMax} (resultWaitMsMax)`).optional() }),
    list: z.object({
      status: z.enum(globalStatuses).optional(),
      cursor: z.string().max(512).optional(),
      limit: z.coerce.number().int().min(1).max(limits.listLimitMax, `at most ${limits.listLimitMax} (listLimitMax)`).optional(),
    }),
  };
}

/** A JSON value as stored text, within workflowValueBytesMax. */
function valueText(value: unknown, field: string, limits: Limits): string | undefined {
  if (value === undefined) return undefined;
  const text = JSON.stringify(value);
  if (Buffer.byteLength(text) > limits.workflowValueBytesMax) throw tooLarge(`${field} is over workflowValueBytesMax (${limits.workflowValueBytesMax} bytes) as JSON`, field);
  return text;
}

/** Machine refusals and service errors as problems. */
async function answering<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof WorkflowNotFoundError) throw notFound(error.message);
    if (error instanceof WorkflowTooLargeError) throw tooLarge(error.message);
    if (error instanceof WorkflowRefusedError) {
      const problem = conflict(error.message, `workflow-${error.refusal.code}`).problem;
      if (error.refusal.code === 'step-conflict') problem.recorded = error.refusal.recorded;
      throw new ProblemError(problem);
    }
    throw error;
  }
}

export function registerWorkflowApi(app: FastifyInstance, deps: WorkflowApiDeps): void {
  const { workflows, store, limits } = deps;
  const s = workflowSchemas(limits);
  type IdParams = { Params: { id: string } };
  const idOf = (params: { id: string }) => parseOrThrow(s.gid, params.id, ['workflowId']);

  app.post('/v1/workflows', async (request, reply) => {
    const body = parseOrThrow(s.start, request.body ?? {});
    const input = valueText(body.input ?? null, 'input', limits) ?? 'null';
    const { tx, created } = await answering(() => workflows.start({ gid: body.workflowId ?? newGid(), name: body.name, input, ...(body.timeoutMs !== undefined ? { timeoutMs: body.timeoutMs } : {}) }));
    return reply.code(created ? 201 : 200).send(workflowView(tx));
  });

  app.get('/v1/workflows', async (request) => {
    const query = parseOrThrow(s.list, request.query);
    if (query.cursor && !decodeCursor(query.cursor)) throw invalid([{ field: 'cursor', message: 'is not a cursor this API handed out' }]);
    const page = await store.list({ mode: 'workflow', limit: query.limit ?? 50, ...(query.status ? { status: query.status } : {}), ...(query.cursor ? { cursor: query.cursor } : {}) });
    return { items: page.items.map(({ gid, status, phase, createdAtMs, updatedAtMs, branchCount }) => ({ workflowId: gid, status, phase, createdAtMs, updatedAtMs, stepCount: branchCount })), nextCursor: page.nextCursor };
  });

  // With waitMs: a long poll that answers as soon as the workflow ends.
  app.get<IdParams>('/v1/workflows/:id', async (request) => {
    const id = idOf(request.params);
    const query = parseOrThrow(s.getQuery, request.query);
    const tx = query.waitMs ? await workflows.waitForEnd(id, query.waitMs) : await workflows.get(id);
    if (!tx) throw notFound(`no workflow ${id}`);
    return { ...workflowView(tx), history: await store.history(id) };
  });

  app.post('/v1/workflow-tasks/claim', async (request, reply) => {
    const body = parseOrThrow(s.claim, request.body ?? {});
    // A worker that hangs up stops waiting: its claim must not take a workflow nobody will run.
    const gone = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) gone.abort();
    });
    const claimed = await workflows.claim(body.workerId, body.workflows ?? null, body.waitMs ?? 0, gone.signal);
    if (!claimed) return reply.code(204).send();
    if (gone.signal.aborted) {
      await workflows.release(claimed.tx.gid, claimed.leaseId).catch(() => undefined);
      return reply.code(204).send();
    }
    return { ...taskView(claimed.tx, claimed.leaseId, limits.workflowLeaseMs), stop: workflows.stopReason(claimed.tx) };
  });

  app.post<IdParams>('/v1/workflows/:id/steps', async (request) => {
    const id = idOf(request.params);
    const body = parseOrThrow(s.step, request.body ?? {});
    const result = valueText(body.result, 'result', limits);
    const tx = await answering(() =>
      workflows.recordStep(id, body.leaseId, {
        name: body.name,
        op: body.op,
        status: body.status,
        ...(result !== undefined ? { result } : {}),
        ...(body.error !== undefined ? { error: body.error } : {}),
        ...(body.index !== undefined ? { index: body.index } : {}),
        ...(body.durationMs !== undefined ? { durationMs: body.durationMs } : {}),
      }),
    );
    return { leaseUntilMs: tx.lease?.untilMs ?? null, stepCount: tx.branches.length, stop: workflows.stopReason(tx) };
  });

  app.post<IdParams>('/v1/workflows/:id/heartbeat', async (request) => {
    const id = idOf(request.params);
    const body = parseOrThrow(s.lease, request.body ?? {});
    const tx = await answering(() => workflows.renew(id, body.leaseId));
    return { leaseUntilMs: tx.lease?.untilMs ?? null, stop: workflows.stopReason(tx) };
  });

  app.post<IdParams>('/v1/workflows/:id/release', async (request) => {
    const id = idOf(request.params);
    const body = parseOrThrow(s.lease, request.body ?? {});
    return workflowView(await answering(() => workflows.release(id, body.leaseId)));
  });

  app.post<IdParams>('/v1/workflows/:id/rollback', async (request) => {
    const id = idOf(request.params);
    const body = parseOrThrow(s.rollback, request.body ?? {});
    return workflowView(await answering(() => workflows.startRollback(id, body.leaseId, body.reason)));
  });

  app.post<IdParams>('/v1/workflows/:id/finish', async (request) => {
    const id = idOf(request.params);
    const body = parseOrThrow(s.finish, request.body ?? {});
    const end = body.status === 'succeeded'
      ? { status: 'succeeded' as const, ...(body.output !== undefined ? { output: valueText(body.output, 'output', limits) } : {}) }
      : { status: 'failed' as const, reason: body.reason };
    return workflowView(await answering(() => workflows.finish(id, body.leaseId, end)));
  });

  app.post<IdParams>('/v1/workflows/:id/block', async (request) => {
    const id = idOf(request.params);
    const body = parseOrThrow(s.block, request.body ?? {});
    return workflowView(await answering(() => workflows.block(id, body.leaseId, body.reason)));
  });

  // The worker lets go until the sleep is over; the engine makes it ready then.
  app.post<IdParams>('/v1/workflows/:id/sleep', async (request) => {
    const id = idOf(request.params);
    const body = parseOrThrow(s.sleep, request.body ?? {});
    return workflowView(await answering(() => workflows.sleep(id, body.leaseId, body.name, body.index, body.durationMs)));
  });

  // Answers with the value if the signal came already (the worker goes on), else the worker lets go.
  app.post<IdParams>('/v1/workflows/:id/wait', async (request) => {
    const id = idOf(request.params);
    const body = parseOrThrow(s.wait, request.body ?? {});
    const tx = await answering(() => workflows.waitForSignal(id, body.leaseId, body.name, body.index, body.signal, body.timeoutMs ?? null));
    const step = tx.branches.find((branch) => branch.branchId === body.name);
    const received = step?.ops.action.status === 'succeeded';
    return { received, ...(received ? { value: parsed(step?.ops.action.result) ?? null } : {}) };
  });

  app.post<{ Params: { id: string; name: string } }>('/v1/workflows/:id/signals/:name', async (request) => {
    const id = idOf(request.params);
    const signal = parseOrThrow(s.signalName, request.params.name, ['name']);
    const body = parseOrThrow(s.signal, request.body ?? {});
    const value = valueText(body.value ?? null, 'value', limits) ?? 'null';
    const { delivered } = await answering(() => workflows.signal(id, signal, value));
    return { delivered };
  });

  app.post<IdParams>('/v1/workflows/:id/cancel', async (request) => {
    const id = idOf(request.params);
    const body = parseOrThrow(s.cancel, request.body ?? {});
    return workflowView(await answering(() => workflows.cancel(id, body.reason ?? 'cancelled')));
  });

  app.post<IdParams>('/v1/workflows/:id/resume', async (request) => {
    const id = idOf(request.params);
    return workflowView(await answering(() => workflows.unblock(id)));
  });
}
