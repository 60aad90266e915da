// Saga: each branch has an action and a compensation. Branches form a DAG through
// `dependsOn` (a sequential saga is the chain 1 → 2 → … → n). An action runs once every action
// it depends on succeeded. On a business refusal, the retry limit or the deadline, every
// branch whose action ran or may have run (its dependencies all succeeded, so it was called or
// about to be) is compensated, in reverse dependency order: a branch's compensation waits for
// the compensations of the branches that depend on it.
import {
  deadlineAtMs,
  deadlinePassed,
  isEarlyWake,
  pendingCalls,
  refuse,
  scheduleNext,
  settle,
  transition,
  unchanged,
} from './rounds.js';
import type { Branch, StepContext, StepFunction, StepResult, Tx } from './types.js';

export const sagaOps = { action: 'action', compensate: 'compensate' } as const;

export const stepSaga: StepFunction = (tx, event, ctx) => {
  switch (event.type) {
    case 'submit':
      if (tx.status !== 'prepared') return unchanged(tx);
      return forward(transition(tx, 'submitted', 'action', ctx), true, ctx);
    case 'results':
      return onResults(tx, event.results, ctx);
    case 'wake':
      return onWake(tx, ctx);
    case 'abort':
      // Nothing ran before submit, so there is nothing to compensate.
      if (tx.status === 'prepared') return scheduleNext(transition(tx, 'failed', 'done', ctx, event.reason), [], true, ctx);
      if (tx.status === 'submitted') return backward(transition(tx, 'aborting', 'compensate', ctx, event.reason), true, ctx);
      if (tx.status === 'aborting' || tx.status === 'failed') return unchanged(tx);
      return refuse(tx, 'not-allowed-in-status', `cannot abort a saga in status ${tx.status}`);
    case 'register':
      return refuse(tx, 'not-allowed-in-status', 'saga branches are given when the saga is created');
  }
};

function onResults(tx: Tx, results: StepResultInput, ctx: StepContext): StepResult {
  if (tx.status === 'submitted') {
    const settled = settle(tx, results.filter((r) => r.op === sagaOps.action), () => true);
    const updated: Tx = { ...tx, branches: settled.branches };
    if (settled.refusals.length > 0) {
      const first = settled.refusals[0];
      const reason = `branch ${first.branchId} refused its action: ${first.detail ?? first.outcome}`;
      return backward(transition(updated, 'aborting', 'compensate', ctx, reason), true, ctx);
    }
    if (deadlinePassed(updated, ctx) && !allActionsSucceeded(updated)) {
      const reason = `timeoutToFailMs ${tx.options.timeoutToFailMs} passed before every action succeeded`;
      return backward(transition(updated, 'aborting', 'compensate', ctx, reason), true, ctx);
    }
    return forward(updated, settled.progressed, ctx, false);
  }
  if (tx.status === 'aborting') {
    const settled = settle(tx, results.filter((r) => r.op === sagaOps.compensate), () => false);
    return backward({ ...tx, branches: settled.branches }, settled.progressed, ctx, false);
  }
  return unchanged(tx);
}

type StepResultInput = Extract<Parameters<StepFunction>[1], { type: 'results' }>['results'];

function onWake(tx: Tx, ctx: StepContext): StepResult {
  if (isEarlyWake(tx, ctx)) return unchanged(tx);
  if (tx.status === 'prepared' && deadlinePassed(tx, ctx)) {
    // Never submitted, so nothing ran: it fails without compensations.
    return scheduleNext(transition(tx, 'failed', 'done', ctx, `not submitted within timeoutToFailMs ${tx.options.timeoutToFailMs}`), [], true, ctx);
  }
  if (tx.status === 'submitted') {
    if (deadlinePassed(tx, ctx)) {
      const reason = `timeoutToFailMs ${tx.options.timeoutToFailMs} passed before every action succeeded`;
      return backward(transition(tx, 'aborting', 'compensate', ctx, reason), true, ctx);
    }
    return forward(tx, false, ctx);
  }
  if (tx.status === 'aborting') return backward(tx, false, ctx);
  return unchanged(tx);
}

/**
 * Forward progress. `callNow` is false right after answers came in with no progress: then the
 * pending actions wait for the backoff instead of being called again at once.
 */
function forward(tx: Tx, progressed: boolean, ctx: StepContext, callNow = true): StepResult {
  if (allActionsSucceeded(tx)) {
    return scheduleNext(transition(tx, 'succeeded', 'done', ctx), [], true, ctx);
  }
  const succeeded = actionStatusById(tx, 'succeeded');
  const calls = callNow || progressed ? pendingCalls(tx, sagaOps.action, (branch) => dependenciesMet(branch, succeeded)) : [];
  return scheduleNext(tx, calls, progressed, ctx, deadlineAtMs(tx));
}

function backward(tx: Tx, progressed: boolean, ctx: StepContext, callNow = true): StepResult {
  const succeeded = actionStatusById(tx, 'succeeded');
  const mayHaveRun = (branch: Branch) => dependenciesMet(branch, succeeded);
  const compensated = (branch: Branch) => !mayHaveRun(branch) || branch.ops[sagaOps.compensate].status === 'succeeded';
  if (tx.branches.every(compensated)) {
    return scheduleNext(transition(tx, 'failed', 'done', ctx), [], true, ctx);
  }
  const dependents = dependentsById(tx);
  const ready = (branch: Branch) =>
    mayHaveRun(branch) && (dependents.get(branch.branchId) ?? []).every((dependent) => compensated(dependent));
  const calls = callNow || progressed ? pendingCalls(tx, sagaOps.compensate, ready) : [];
  return scheduleNext(tx, calls, progressed, ctx);
}

function allActionsSucceeded(tx: Tx): boolean {
  return tx.branches.every((branch) => branch.ops[sagaOps.action].status === 'succeeded');
}

function actionStatusById(tx: Tx, status: 'succeeded'): Set<string> {
  return new Set(tx.branches.filter((branch) => branch.ops[sagaOps.action].status === status).map((branch) => branch.branchId));
}

function dependenciesMet(branch: Branch, succeeded: Set<string>): boolean {
  return (branch.dependsOn ?? []).every((id) => succeeded.has(id));
}

function dependentsById(tx: Tx): Map<string, Branch[]> {
  const dependents = new Map<string, Branch[]>();
  for (const branch of tx.branches) {
    for (const id of branch.dependsOn ?? []) {
      const list = dependents.get(id) ?? [];
      list.push(branch);
      dependents.set(id, list);
    }
  }
  return dependents;
}
