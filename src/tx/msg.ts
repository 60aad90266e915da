// Two-phase messages. The app prepares the message (status prepared, with its steps and a
// queryPrepared URL), runs its local transaction, which also writes a barrier row, then
// submits. Submitted steps are delivered at least once, in order (one at a time unless the
// message is concurrent), retried with backoff until acknowledged: a message cannot be taken
// back once the app's transaction committed, so a step's refusal is retried like any error.
// A message still prepared when timeoutToFailMs passes makes the coordinator ask queryPrepared:
// committed → deliver; rolled back (FAILURE) → the message fails; still running (ONGOING) or
// no answer → ask again after a backoff.
// A message with a delay (DTM's custom_data `delay`) waits in phase `delay` until its
// notBeforeMs, a time kept in the transaction itself, so the hold survives restarts.
import {
  assert,
  deadlinePassed,
  isEarlyWake,
  pendingCalls,
  refuse,
  scheduleNext,
  settle,
  transition,
  unchanged,
} from './rounds.js';
import type { BranchCall, CallResult, StepContext, StepFunction, StepResult, Tx } from './types.js';
import { ops, queryPreparedBranchId } from '../shared/protocol.js';

const msgOps = ops.msg;

export const stepMsg: StepFunction = (tx, event, ctx) => {
  switch (event.type) {
    case 'submit':
      if (tx.status === 'prepared') return startDelivery(tx, ctx.nowMs + (event.delayMs ?? tx.options.delayMs ?? 0), ctx);
      if (tx.status === 'submitted' || tx.status === 'succeeded') return unchanged(tx);
      return refuse(tx, 'not-allowed-in-status', `cannot submit a message in status ${tx.status}: ${tx.reason ?? 'it failed'}`);
    case 'abort':
      if (tx.status === 'prepared') return scheduleNext(transition(tx, 'failed', 'done', ctx, event.reason), [], true, ctx);
      if (tx.status === 'failed') return unchanged(tx);
      return refuse(tx, 'not-allowed-in-status', `cannot abort a message in status ${tx.status}: it was submitted`);
    case 'register':
      return refuse(tx, 'not-allowed-in-status', 'message steps are given when the message is prepared');
    case 'wake':
      return onWake(tx, ctx);
    case 'results':
      return onResults(tx, event.results, ctx);
  }
};

function onWake(tx: Tx, ctx: StepContext): StepResult {
  if (isEarlyWake(tx, ctx)) return unchanged(tx);
  if (tx.status === 'prepared') {
    if (!deadlinePassed(tx, ctx)) return unchanged(tx);
    return queryPrepared(tx, ctx);
  }
  if (tx.status === 'submitted' && tx.phase === 'delay') return startDelivery(tx, tx.notBeforeMs ?? ctx.nowMs, ctx);
  if (tx.status === 'submitted') return deliver(tx, false, ctx);
  return unchanged(tx);
}

/** Delivers now, or holds the steps in phase `delay` until `notBeforeMs`. */
function startDelivery(tx: Tx, notBeforeMs: number, ctx: StepContext, reason?: string): StepResult {
  if (ctx.nowMs >= notBeforeMs) return deliver(transition(tx, 'submitted', 'deliver', ctx, reason), true, ctx);
  const held = tx.phase === 'delay' ? tx : { ...transition(tx, 'submitted', 'delay', ctx, reason), notBeforeMs };
  return { ok: true, tx: { ...held, nextAttemptAtMs: notBeforeMs }, calls: [] };
}

function queryPrepared(tx: Tx, ctx: StepContext): StepResult {
  if (!tx.queryPreparedUrl) {
    // Only a message created without queryPrepared could get here, and those are submitted at once.
    return scheduleNext(transition(tx, 'failed', 'done', ctx, 'not submitted within timeoutToFailMs and no queryPrepared URL to ask'), [], true, ctx);
  }
  const call: BranchCall = { branchId: queryPreparedBranchId, op: msgOps.queryPrepared, url: tx.queryPreparedUrl };
  const asking = tx.phase === 'query-prepared' ? tx : transition(tx, 'prepared', 'query-prepared', ctx);
  return scheduleNext(asking, [call], false, ctx);
}

function onResults(tx: Tx, results: CallResult[], ctx: StepContext): StepResult {
  if (tx.status === 'prepared') {
    const answer = results.find((result) => result.op === msgOps.queryPrepared);
    if (!answer) return unchanged(tx);
    return onQueryAnswer(tx, answer, ctx);
  }
  // Answers can only be for calls of the deliver phase; nothing is called while held.
  if (tx.status !== 'submitted' || tx.phase !== 'deliver') return unchanged(tx);
  const settled = settle(tx, results.filter((result) => result.op === msgOps.action), () => false);
  return deliver({ ...tx, branches: settled.branches }, settled.progressed, ctx, false);
}

function onQueryAnswer(tx: Tx, answer: CallResult, ctx: StepContext): StepResult {
  switch (answer.outcome) {
    case 'success':
      // With no submit to count from, the delay counts from when the message was prepared (as in DTM).
      return startDelivery(tx, tx.createdAtMs + (tx.options.delayMs ?? 0), ctx, 'queryPrepared: the local transaction committed');
    case 'failure':
      return scheduleNext(transition(tx, 'failed', 'done', ctx, `queryPrepared: the local transaction rolled back${answer.detail ? ` (${answer.detail})` : ''}`), [], true, ctx);
    case 'ongoing':
    case 'transient':
      // Asked again after the backoff; each unanswered round lengthens it.
      return scheduleNext({ ...tx, reason: `queryPrepared: ${answer.outcome}${answer.detail ? ` (${answer.detail})` : ''}` }, [], false, ctx);
  }
}

/**
 * Calls the steps due: the first unacknowledged one, or every unacknowledged one when the
 * message is concurrent. `callNow` is false right after answers without progress, so that
 * the retry waits for the backoff.
 */
function deliver(tx: Tx, progressed: boolean, ctx: StepContext, callNow = true): StepResult {
  const pending = tx.branches.filter((branch) => branch.ops[msgOps.action].status !== 'succeeded');
  if (pending.length === 0) return scheduleNext(transition(tx, 'succeeded', 'done', ctx), [], true, ctx);
  assert(pending.every((branch) => branch.ops[msgOps.action].status === 'pending'), 'message steps never fail');
  const due = tx.options.concurrent ? new Set(pending.map((branch) => branch.branchId)) : new Set([pending[0].branchId]);
  const calls = callNow || progressed ? pendingCalls(tx, msgOps.action, (branch) => due.has(branch.branchId)) : [];
  return scheduleNext(tx, calls, progressed, ctx);
}
