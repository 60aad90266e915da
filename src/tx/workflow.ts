// The workflow machine: a transaction the application drives step by step. Sans-I/O: every
// function takes the stored workflow and answers the next state (or a refusal); the service
// (src/tx/workflow-service.ts) reads and writes the store around it.
//
// A workflow is stored as a Tx of mode 'workflow' so the store keeps it durable on every
// backend and the engine's recovery scan finds it when it is due: its steps are branches
// (branchId = step name, in the order they ran), each with an `action` op and, once it has
// been compensated, a `compensate` op. The worker running it holds `lease` (owner = the
// claim's lease id) and `nextAttemptAtMs` equals the lease's end, so a worker that dies makes
// the workflow due exactly when its lease runs out.
//
// Phases while not final:
//   ready    wants a worker (new, handed back, lease expired, sleep over, signal arrived)
//   running  a worker holds the lease
//   sleeping a durable sleep; due when it ends
//   waiting  waiting for a signal; due at its timeout (or never, without one)
//   blocked  the code replayed differently from the record; an operator resumes it
import { backoffDelayMs } from './rounds.js';
import type { Branch, OpState, StepContext, StepResult, Tx, TxEvent, TxOptions } from './types.js';
import { isFinal } from './types.js';

export type WorkflowPhase = 'ready' | 'running' | 'sleeping' | 'waiting' | 'blocked';

export type StepOp = 'action' | 'compensate';

/** What a worker reports about one attempt of one step. */
export interface StepRecord {
  name: string;
  op: StepOp;
  /** 'retrying': this attempt failed with an error that is retried; the step stays pending. */
  status: 'succeeded' | 'failed' | 'retrying';
  /** JSON text of the value (succeeded) */
  result?: string;
  /** Why it failed (failed, retrying). */
  error?: string;
  /** Position of an action step in the workflow's sequence (0-based); checks replay order. */
  index?: number;
  /** How long this attempt took on the worker, for the step's timings. */
  durationMs?: number;
}

export type Refusal =
  | { code: 'ended'; message: string }
  | { code: 'lease-lost'; message: string }
  | { code: 'not-claimable'; message: string }
  | { code: 'step-conflict'; message: string; recorded: string[] }
  | { code: 'not-waiting'; message: string };

export type Outcome = { ok: true; tx: Tx; changed: boolean } | { ok: false; refusal: Refusal };

export interface NewWorkflow {
  gid: string;
  name: string;
  /** JSON text handed to the workflow function. */
  input: string;
  options: TxOptions;
  /** 0: no workflow-level timeout. */
  timeoutMs?: number;
}

export const workflowPhases: readonly WorkflowPhase[] = ['ready', 'running', 'sleeping', 'waiting', 'blocked'];

export function newWorkflow(spec: NewWorkflow, nowMs: number, redispatchMs: number): Tx {
  return {
    gid: spec.gid,
    mode: 'workflow',
    status: 'prepared',
    phase: 'ready',
    branches: [],
    options: { ...spec.options, timeoutToFailMs: spec.timeoutMs ?? 0 },
    createdAtMs: nowMs,
    updatedAtMs: nowMs,
    // Announced at once in memory; this is the durable fallback if that announcement is lost.
    nextAttemptAtMs: nowMs + redispatchMs,
    roundsWithoutProgress: 0,
    extra: { workflowName: spec.name, input: spec.input },
    version: 0,
    lease: null,
  };
}

export function workflowName(tx: Tx): string {
  return tx.extra?.workflowName ?? '';
}

/** Names of the recorded action steps, in order. */
export function recordedSequence(tx: Tx): string[] {
  return tx.branches.map((branch) => branch.branchId);
}

function touched(tx: Tx, nowMs: number, patch: Partial<Tx>): Tx {
  return { ...tx, ...patch, updatedAtMs: nowMs };
}

function holds(tx: Tx, leaseId: string): Refusal | null {
  if (isFinal(tx)) return { code: 'ended', message: `workflow ${tx.gid} has ended (${tx.status})` };
  if (tx.lease?.owner !== leaseId) {
    return { code: 'lease-lost', message: `lease ${leaseId} on workflow ${tx.gid} is no longer held (another worker or the coordinator took it over); stop running it` };
  }
  return null;
}

/** Whether a worker may take the workflow now. */
export function claimable(tx: Tx, nowMs: number): boolean {
  if (tx.mode !== 'workflow' || isFinal(tx)) return false;
  if (tx.phase === 'ready') return !tx.lease || tx.lease.untilMs <= nowMs;
  if (tx.phase === 'running') return !tx.lease || tx.lease.untilMs <= nowMs;
  return false;
}

/** Hands the workflow to a worker under `leaseId` until nowMs + leaseMs. */
export function claim(tx: Tx, leaseId: string, nowMs: number, leaseMs: number): Outcome {
  if (!claimable(tx, nowMs)) return { ok: false, refusal: { code: 'not-claimable', message: `workflow ${tx.gid} is ${tx.status}/${tx.phase} and not free to run` } };
  const untilMs = nowMs + leaseMs;
  return { ok: true, changed: true, tx: touched(tx, nowMs, { phase: 'running', lease: { owner: leaseId, untilMs }, nextAttemptAtMs: untilMs, roundsWithoutProgress: 0 }) };
}

/** Extends the lease of the worker running the workflow (long steps). */
export function renew(tx: Tx, leaseId: string, nowMs: number, leaseMs: number): Outcome {
  const refusal = holds(tx, leaseId);
  if (refusal) return { ok: false, refusal };
  const untilMs = nowMs + leaseMs;
  return { ok: true, changed: true, tx: touched(tx, nowMs, { lease: { owner: leaseId, untilMs }, nextAttemptAtMs: untilMs }) };
}

/** The worker gives the workflow back (shutting down): it is ready for another at once. */
export function release(tx: Tx, leaseId: string, nowMs: number): Outcome {
  const refusal = holds(tx, leaseId);
  if (refusal) return { ok: false, refusal };
  return { ok: true, changed: true, tx: touched(tx, nowMs, { phase: 'ready', lease: null, nextAttemptAtMs: nowMs }) };
}

function newStepOp(nowMs: number, record: StepRecord): OpState {
  return { url: '', status: 'pending', attempts: 0, startedAtMs: nowMs - Math.max(0, record.durationMs ?? 0) };
}

function applyAttempt(op: OpState, record: StepRecord, nowMs: number): OpState {
  if (record.status === 'retrying') return { ...op, attempts: op.attempts + 1, lastError: record.error ?? 'error' };
  const settled: OpState = { ...op, status: record.status, attempts: op.attempts + 1, settledAtMs: nowMs };
  if (record.status === 'succeeded' && record.result !== undefined) settled.result = record.result;
  if (record.status === 'failed') settled.lastError = record.error ?? 'failed';
  return settled;
}

function sameSettlement(op: OpState, record: StepRecord): boolean {
  return op.status === record.status && (record.status !== 'succeeded' || op.result === record.result);
}

/**
 * Records one attempt of a step and renews the lease. A settled step reported again the same
 * way is a retry of the report (unchanged); reported differently, or out of order, it is a
 * conflict that names both sequences.
 */
export function recordStep(tx: Tx, leaseId: string, record: StepRecord, nowMs: number, leaseMs: number): Outcome {
  const refusal = holds(tx, leaseId);
  if (refusal) return { ok: false, refusal };
  const at = tx.branches.findIndex((branch) => branch.branchId === record.name);
  const conflict = (message: string): Outcome => ({ ok: false, refusal: { code: 'step-conflict', message, recorded: recordedSequence(tx) } });
  const lease = { owner: leaseId, untilMs: nowMs + leaseMs };
  if (record.op === 'action') {
    if (at < 0) {
      if (record.index !== undefined && record.index !== tx.branches.length) {
        return conflict(`step "${record.name}" reported at position ${record.index}, but ${tx.branches.length} steps are recorded: [${recordedSequence(tx).join(', ')}]`);
      }
      if (tx.status === 'aborting') return conflict(`workflow ${tx.gid} is compensating; no new step "${record.name}" may run`);
      const branch: Branch = { branchId: record.name, ops: { action: applyAttempt(newStepOp(nowMs, record), record, nowMs) } };
      return { ok: true, changed: true, tx: touched(tx, nowMs, { branches: [...tx.branches, branch], lease, nextAttemptAtMs: lease.untilMs }) };
    }
    if (record.index !== undefined && record.index !== at) {
      return conflict(`step "${record.name}" reported at position ${record.index}, but it is recorded at position ${at}: [${recordedSequence(tx).join(', ')}]`);
    }
    const op = tx.branches[at].ops.action;
    if (op.status !== 'pending') {
      if (record.status !== 'retrying' && sameSettlement(op, record)) return { ok: true, changed: false, tx };
      return conflict(`step "${record.name}" is recorded as ${op.status}; it cannot now be ${record.status}`);
    }
    return { ok: true, changed: true, tx: touched(tx, nowMs, { branches: replaceOp(tx.branches, at, 'action', applyAttempt(op, record, nowMs)), lease, nextAttemptAtMs: lease.untilMs }) };
  }
  // Compensation: only of a step whose action succeeded; it puts the workflow in rollback.
  if (at < 0 || tx.branches[at].ops.action.status !== 'succeeded') {
    return conflict(`step "${record.name}" has no succeeded action to compensate`);
  }
  if (record.status === 'failed') return conflict(`a compensation cannot fail: report "retrying" until it succeeds (step "${record.name}")`);
  const existing = tx.branches[at].ops.compensate;
  if (existing && existing.status !== 'pending') {
    return record.status === 'succeeded' ? { ok: true, changed: false, tx } : conflict(`the compensation of "${record.name}" has succeeded already`);
  }
  const op = applyAttempt(existing ?? newStepOp(nowMs, record), record, nowMs);
  return {
    ok: true,
    changed: true,
    tx: touched(tx, nowMs, { status: 'aborting', reason: tx.reason ?? record.error, branches: replaceOp(tx.branches, at, 'compensate', op), lease, nextAttemptAtMs: lease.untilMs }),
  };
}

function replaceOp(branches: Branch[], at: number, name: StepOp, op: OpState): Branch[] {
  const next = [...branches];
  next[at] = { ...branches[at], ops: { ...branches[at].ops, [name]: op } };
  return next;
}

/** The worker marks the start of the rollback, with its reason, before the first compensation. */
export function startRollback(tx: Tx, leaseId: string, reason: string, nowMs: number, leaseMs: number): Outcome {
  const refusal = holds(tx, leaseId);
  if (refusal) return { ok: false, refusal };
  if (tx.status === 'aborting') return { ok: true, changed: false, tx };
  const untilMs = nowMs + leaseMs;
  return { ok: true, changed: true, tx: touched(tx, nowMs, { status: 'aborting', reason, lease: { owner: leaseId, untilMs }, nextAttemptAtMs: untilMs }) };
}

export type Finish = { status: 'succeeded'; output?: string } | { status: 'failed'; reason: string };

/** Ends the workflow. Reporting the same end again is a retry (unchanged). */
export function finish(tx: Tx, leaseId: string, end: Finish, nowMs: number): Outcome {
  if (isFinal(tx)) {
    if (tx.status === end.status) return { ok: true, changed: false, tx };
    return { ok: false, refusal: { code: 'ended', message: `workflow ${tx.gid} has ended ${tx.status}; it cannot now be ${end.status}` } };
  }
  const refusal = holds(tx, leaseId);
  if (refusal) return { ok: false, refusal };
  if (end.status === 'succeeded' && tx.status === 'aborting') {
    return { ok: false, refusal: { code: 'step-conflict', message: `workflow ${tx.gid} is compensating; it can only end failed`, recorded: recordedSequence(tx) } };
  }
  const extra = end.status === 'succeeded' && end.output !== undefined ? { ...tx.extra, output: end.output } : tx.extra;
  const reason = end.status === 'failed' ? end.reason : tx.reason;
  return {
    ok: true,
    changed: true,
    tx: touched(tx, nowMs, { status: end.status, phase: end.status, lease: null, nextAttemptAtMs: null, extra, ...(reason !== undefined ? { reason } : {}) }),
  };
}

/** The worker found that the code replays differently from the record: park it for an operator. */
export function block(tx: Tx, leaseId: string, reason: string, nowMs: number): Outcome {
  const refusal = holds(tx, leaseId);
  if (refusal) return { ok: false, refusal };
  return { ok: true, changed: true, tx: touched(tx, nowMs, { phase: 'blocked', reason, lease: null, nextAttemptAtMs: null }) };
}

/** An operator (after deploying fixed code) makes a blocked workflow ready again. */
export function unblock(tx: Tx, nowMs: number): Outcome {
  if (isFinal(tx) || tx.phase !== 'blocked') return { ok: false, refusal: { code: 'not-claimable', message: `workflow ${tx.gid} is ${tx.status}/${tx.phase}, not blocked` } };
  return { ok: true, changed: true, tx: touched(tx, nowMs, { phase: 'ready', nextAttemptAtMs: nowMs }) };
}

/**
 * The engine's view (a StepFunction): a workflow makes no branch calls; when it is due (its
 * worker's lease ran out, or nobody has claimed it yet) it becomes ready, and the next look is
 * put off with backoff so an unclaimed workflow costs a write per backoff interval, not a spin.
 */
export function stepWorkflow(tx: Tx, event: TxEvent, ctx: StepContext): StepResult {
  if (isDtmWorkflow(tx)) return stepDtmWorkflow(tx, event, ctx);
  if (event.type !== 'wake' || isFinal(tx)) {
    return { ok: false, tx, error: { code: 'not-allowed-in-status', message: `a workflow is driven through /v1/workflows; ${event.type} does not apply` } };
  }
  if (tx.nextAttemptAtMs === null || tx.nextAttemptAtMs > ctx.nowMs || tx.phase === 'blocked') return { ok: true, tx, calls: [] };
  if (tx.phase === 'sleeping' || tx.phase === 'waiting') {
    // The sleep is over, or the signal's timeout passed: the pending step settles, and a worker resumes it.
    const at = tx.branches.length - 1;
    const op = tx.branches[at].ops.action;
    const stop = stopReason(tx, ctx.nowMs);
    const settled: OpState = stop !== null
      ? { ...op, status: 'failed', attempts: op.attempts + 1, settledAtMs: ctx.nowMs, lastError: `WorkflowCancelledError: ${stop}` }
      : tx.phase === 'sleeping'
        ? { ...op, status: 'succeeded', attempts: op.attempts + 1, settledAtMs: ctx.nowMs }
        : { ...op, status: 'failed', attempts: op.attempts + 1, settledAtMs: ctx.nowMs, lastError: `SignalTimeoutError: no signal "${signalOf(tx.branches[at]) ?? ''}" arrived in time` };
    const ready = { ...tx, phase: 'ready', lease: null, roundsWithoutProgress: 0, updatedAtMs: ctx.nowMs, branches: replaceOp(tx.branches, at, 'action', settled) };
    return { ok: true, tx: { ...ready, nextAttemptAtMs: ctx.nowMs + backoffDelayMs(ready, ctx) }, calls: [] };
  }
  const next: Tx = {
    ...tx,
    phase: 'ready',
    lease: null,
    roundsWithoutProgress: tx.roundsWithoutProgress + 1,
    updatedAtMs: ctx.nowMs,
  };
  return { ok: true, tx: { ...next, nextAttemptAtMs: ctx.nowMs + backoffDelayMs(tx, ctx) }, calls: [] };
}

/** What a pending step waits for, kept in the branch payload (the engine never calls a workflow's branches). */
interface WaitSpec {
  kind: 'sleep' | 'signal';
  /** The signal's name (kind signal). */
  signal?: string;
}

function waitSpecOf(branch: Branch): WaitSpec | null {
  if (branch.payload === undefined) return null;
  try {
    const spec = JSON.parse(branch.payload) as WaitSpec;
    return spec.kind === 'sleep' || spec.kind === 'signal' ? spec : null;
  } catch {
    return null;
  }
}

function signalOf(branch: Branch): string | null {
  const spec = waitSpecOf(branch);
  return spec?.kind === 'signal' ? (spec.signal ?? null) : null;
}

const signalKey = (name: string) => `signal:${name}`;

/** A new wait step at the end of the record, or the refusal if the position or name is wrong. */
function appendWait(tx: Tx, leaseId: string, name: string, index: number | undefined, spec: WaitSpec, nowMs: number): Outcome | { ok: true; at: number } {
  const refusal = holds(tx, leaseId);
  if (refusal) return { ok: false, refusal };
  const at = tx.branches.findIndex((branch) => branch.branchId === name);
  if (at >= 0 || (index !== undefined && index !== tx.branches.length)) {
    return { ok: false, refusal: { code: 'step-conflict', message: `wait "${name}" reported at position ${index ?? '?'}, but the record is [${recordedSequence(tx).join(', ')}]`, recorded: recordedSequence(tx) } };
  }
  if (tx.status === 'aborting') return { ok: false, refusal: { code: 'step-conflict', message: `workflow ${tx.gid} is compensating; it cannot wait`, recorded: recordedSequence(tx) } };
  void nowMs;
  return { ok: true, at: tx.branches.length };
}

/** A durable sleep: the worker lets go, and the workflow is due again at nowMs + durationMs. */
export function sleep(tx: Tx, leaseId: string, name: string, index: number | undefined, durationMs: number, nowMs: number): Outcome {
  const spec: WaitSpec = { kind: 'sleep' };
  const placed = appendWait(tx, leaseId, name, index, spec, nowMs);
  if (!('at' in placed)) return placed;
  const branch: Branch = { branchId: name, payload: JSON.stringify(spec), ops: { action: { url: '', status: 'pending', attempts: 0, startedAtMs: nowMs } } };
  return { ok: true, changed: true, tx: touched(tx, nowMs, { branches: [...tx.branches, branch], phase: 'sleeping', lease: null, nextAttemptAtMs: capped(tx, nowMs + durationMs) }) };
}

/**
 * Waits for a signal. One sent before the wait is taken at once (the step is recorded as
 * received and the worker goes on); otherwise the worker lets go until it arrives or the
 * timeout (null: none) passes.
 */
export function waitForSignal(tx: Tx, leaseId: string, name: string, index: number | undefined, signal: string, timeoutMs: number | null, nowMs: number, leaseMs: number): Outcome {
  const spec: WaitSpec = { kind: 'signal', signal };
  const placed = appendWait(tx, leaseId, name, index, spec, nowMs);
  if (!('at' in placed)) return placed;
  const buffered = tx.extra?.[signalKey(signal)];
  if (buffered !== undefined) {
    const { [signalKey(signal)]: _taken, ...extra } = tx.extra ?? {};
    const op: OpState = { url: '', status: 'succeeded', attempts: 1, result: buffered, startedAtMs: nowMs, settledAtMs: nowMs };
    const lease = { owner: leaseId, untilMs: nowMs + leaseMs };
    return { ok: true, changed: true, tx: touched(tx, nowMs, { branches: [...tx.branches, { branchId: name, payload: JSON.stringify(spec), ops: { action: op } }], extra, lease, nextAttemptAtMs: lease.untilMs }) };
  }
  const branch: Branch = { branchId: name, payload: JSON.stringify(spec), ops: { action: { url: '', status: 'pending', attempts: 0, startedAtMs: nowMs } } };
  return { ok: true, changed: true, tx: touched(tx, nowMs, { branches: [...tx.branches, branch], phase: 'waiting', lease: null, nextAttemptAtMs: capped(tx, timeoutMs === null ? null : nowMs + timeoutMs) }) };
}

/**
 * A signal arrives: it settles the wait for it (the workflow is ready at once), or is kept
 * until the workflow waits for it. A second signal of the same name before that is dropped.
 */
export function deliverSignal(tx: Tx, signal: string, value: string, nowMs: number): Outcome & { delivered?: 'received' | 'buffered' | 'dropped' } {
  if (isFinal(tx)) return { ok: false, refusal: { code: 'ended', message: `workflow ${tx.gid} has ended (${tx.status})` } };
  const last = tx.branches[tx.branches.length - 1];
  if (tx.phase === 'waiting' && last && signalOf(last) === signal && last.ops.action.status === 'pending') {
    const op: OpState = { ...last.ops.action, status: 'succeeded', attempts: last.ops.action.attempts + 1, result: value, settledAtMs: nowMs };
    return { ok: true, changed: true, delivered: 'received', tx: touched(tx, nowMs, { branches: replaceOp(tx.branches, tx.branches.length - 1, 'action', op), phase: 'ready', nextAttemptAtMs: nowMs }) };
  }
  if (tx.extra?.[signalKey(signal)] !== undefined) return { ok: true, changed: false, delivered: 'dropped', tx };
  return { ok: true, changed: true, delivered: 'buffered', tx: touched(tx, nowMs, { extra: { ...tx.extra, [signalKey(signal)]: value } }) };
}

/**
 * Asks for the workflow to stop: the worker running it (told in its next answer) or the next
 * one to claim it fails it, compensating what it did. A sleeping or waiting workflow is made
 * ready so that happens now.
 */
export function requestCancel(tx: Tx, reason: string, nowMs: number): Outcome {
  if (isFinal(tx)) return { ok: false, refusal: { code: 'ended', message: `workflow ${tx.gid} has ended (${tx.status})` } };
  if (tx.extra?.cancelRequested !== undefined) return { ok: true, changed: false, tx };
  const extra = { ...tx.extra, cancelRequested: reason };
  if (tx.phase === 'sleeping' || tx.phase === 'waiting' || tx.phase === 'blocked') {
    const at = tx.branches.length - 1;
    const pending = tx.phase !== 'blocked' && at >= 0 && tx.branches[at].ops.action.status === 'pending';
    const branches = pending ? replaceOp(tx.branches, at, 'action', { ...tx.branches[at].ops.action, status: 'failed', settledAtMs: nowMs, lastError: `WorkflowCancelledError: ${reason}` }) : tx.branches;
    return { ok: true, changed: true, tx: touched(tx, nowMs, { extra, branches, phase: 'ready', lease: null, nextAttemptAtMs: nowMs }) };
  }
  return { ok: true, changed: true, tx: touched(tx, nowMs, { extra }) };
}

/** Why the workflow must stop, if it must: cancelled, or past its workflow-level timeout. */
export function stopReason(tx: Tx, nowMs: number): string | null {
  if (tx.extra?.cancelRequested !== undefined) return tx.extra.cancelRequested;
  if (tx.options.timeoutToFailMs > 0 && nowMs >= tx.createdAtMs + tx.options.timeoutToFailMs) return `the workflow timed out after ${tx.options.timeoutToFailMs} ms`;
  return null;
}

/** A wake time no later than the workflow-level deadline, so a timeout is noticed while it waits. */
function capped(tx: Tx, atMs: number | null): number | null {
  const deadline = tx.options.timeoutToFailMs > 0 ? tx.createdAtMs + tx.options.timeoutToFailMs : null;
  if (deadline === null) return atMs;
  return atMs === null ? deadline : Math.min(atMs, deadline);
}

// ---------------------------------------------------------------------------------------------
// DTM's workflow protocol. The application runs the workflow itself and reports each branch
// op (registerBranch with op and status) and the end (submit with req_extra.status); the
// coordinator holds no worker lease. When the workflow stops making progress (no report for a
// retry interval, with backoff), the coordinator calls the application back at the workflow's
// query_prepared URL (branch 00, op = the workflow name, body = its data) so it runs again and
// resumes from the progresses prepareWorkflow answers.

export function isDtmWorkflow(tx: Tx): boolean {
  return tx.mode === 'workflow' && tx.extra?.dtm === '1';
}

export interface NewDtmWorkflow {
  gid: string;
  name: string;
  /** custom_data.data as sent (base64 of the workflow's input bytes). */
  dataBase64: string;
  callbackUrl: string;
  options: TxOptions;
}

export function newDtmWorkflow(spec: NewDtmWorkflow, nowMs: number): Tx {
  return {
    gid: spec.gid,
    mode: 'workflow',
    status: 'prepared',
    phase: 'dtm',
    branches: [],
    options: spec.options,
    createdAtMs: nowMs,
    updatedAtMs: nowMs,
    nextAttemptAtMs: nowMs + spec.options.retryIntervalMs,
    roundsWithoutProgress: 0,
    extra: { workflowName: spec.name, input: spec.dataBase64, dtm: '1' },
    queryPreparedUrl: spec.callbackUrl,
    version: 0,
    lease: null,
  };
}

/** A branch op's outcome as DTM's client reports it; reporting again overwrites, as DTM's update does. */
export function dtmRegister(tx: Tx, branchId: string, op: string, status: 'succeeded' | 'failed', data: string, nowMs: number): Outcome {
  if (isFinal(tx)) return { ok: false, refusal: { code: 'ended', message: `workflow ${tx.gid} has ended (${tx.status}); it takes no more branches` } };
  const settled: OpState = { url: '', status, attempts: 1, result: data, startedAtMs: nowMs, settledAtMs: nowMs };
  const at = tx.branches.findIndex((branch) => branch.branchId === branchId);
  const branches = at < 0
    ? [...tx.branches, { branchId, ops: { [op]: settled } }]
    : tx.branches.map((branch, index) => (index === at ? { ...branch, ops: { ...branch.ops, [op]: { ...settled, attempts: (branch.ops[op]?.attempts ?? 0) + 1, startedAtMs: branch.ops[op]?.startedAtMs ?? nowMs } } } : branch));
  return { ok: true, changed: true, tx: touched(tx, nowMs, { branches, roundsWithoutProgress: 0, nextAttemptAtMs: nowMs + tx.options.retryIntervalMs }) };
}

/** submit with req_extra.status: the end the application decided. The same end again is accepted. */
export function dtmSubmit(tx: Tx, end: { status: 'succeeded'; resultBase64: string } | { status: 'failed'; reason: string }, nowMs: number): Outcome {
  if (isFinal(tx)) {
    if (tx.status === end.status) return { ok: true, changed: false, tx };
    return { ok: false, refusal: { code: 'ended', message: `workflow ${tx.gid} has ended ${tx.status}; it cannot now be ${end.status}` } };
  }
  const extra = end.status === 'succeeded' ? { ...tx.extra, output: end.resultBase64 } : tx.extra;
  return {
    ok: true,
    changed: true,
    tx: touched(tx, nowMs, { status: end.status, phase: end.status, lease: null, nextAttemptAtMs: null, extra, ...(end.status === 'failed' ? { reason: end.reason } : {}) }),
  };
}

/** Base64 to the text a participant body carries (DTM's data is the app's bytes, mostly JSON). */
function decodedData(base64: string | undefined): string | undefined {
  if (!base64) return undefined;
  return Buffer.from(base64, 'base64').toString('utf8');
}

function stepDtmWorkflow(tx: Tx, event: TxEvent, ctx: StepContext): StepResult {
  if (isFinal(tx)) return { ok: true, tx, calls: [] };
  if (event.type === 'results') return { ok: true, tx, calls: [] };
  if (event.type !== 'wake') {
    return { ok: false, tx, error: { code: 'not-allowed-in-status', message: `a DTM workflow is driven through prepareWorkflow, registerBranch and submit; ${event.type} does not apply` } };
  }
  if (tx.nextAttemptAtMs === null || tx.nextAttemptAtMs > ctx.nowMs || !tx.queryPreparedUrl) return { ok: true, tx, calls: [] };
  // Called back; if that does not end it, again after a longer wait.
  const next: Tx = { ...tx, roundsWithoutProgress: tx.roundsWithoutProgress + 1, updatedAtMs: ctx.nowMs };
  const payload = decodedData(tx.extra?.input);
  return {
    ok: true,
    tx: { ...next, nextAttemptAtMs: ctx.nowMs + backoffDelayMs(tx, ctx) },
    calls: [{ branchId: '00', op: workflowName(tx), url: tx.queryPreparedUrl, ...(payload !== undefined ? { payload } : {}) }],
  };
}
