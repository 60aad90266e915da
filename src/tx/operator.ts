// What an operator may do to a transaction by hand, as pure steps the engine applies under
// the same exclusivity, lease and persistence as any API event. Each refuses what would not
// change anything, so the audit log only records actions that did something.
import { step } from './machine.js';
import { refuse, scheduleNext, transition } from './rounds.js';
import type { StepContext, StepResult, Tx } from './types.js';
import { isFinal } from './types.js';

export { forceStoppedPhase } from './machine.js';

export interface ForceStop {
  reason: string;
  /**
   * true: roll back the way the mode does (saga compensations, TCC cancel, 2PC/XA rollback),
   * only where the mode still can; false: end it as failed now and call nothing more.
   */
  compensate: boolean;
}

export function forceStop(tx: Tx, order: ForceStop, ctx: StepContext): StepResult {
  if (isFinal(tx)) return refuse(tx, 'not-allowed-in-status', `transaction ${tx.gid} has ended already (${tx.status})`);
  const reason = `force-stopped by an operator: ${order.reason}`;
  // Calls in flight when this lands are answered into an ended transaction, which ignores them.
  if (!order.compensate) return step(tx, { type: 'forceStop', reason }, ctx);
  if (tx.status === 'aborting') {
    return refuse(tx, 'not-allowed-in-status', `transaction ${tx.gid} is rolling back already; force-stop with compensate false ends it without waiting`);
  }
  const result = step(tx, { type: 'abort', reason }, ctx);
  if (result.ok && result.tx === tx) {
    return refuse(tx, 'not-allowed-in-status', `a ${tx.mode} transaction in ${tx.status}/${tx.phase} cannot be rolled back; force-stop with compensate false ends it`);
  }
  return result;
}

/** Calls what is pending now, with the backoff reset, instead of at the next scheduled attempt. */
export function retryNow(tx: Tx, ctx: StepContext): StepResult {
  if (isFinal(tx)) return refuse(tx, 'not-allowed-in-status', `transaction ${tx.gid} has ended already (${tx.status})`);
  if (tx.nextAttemptAtMs === null) return refuse(tx, 'not-allowed-in-status', `transaction ${tx.gid} waits for its application (${tx.status}/${tx.phase}), not for a retry`);
  const result = step({ ...tx, nextAttemptAtMs: ctx.nowMs, roundsWithoutProgress: 0 }, { type: 'wake' }, ctx);
  // A wake that calls nothing (a TCC still prepared before its deadline) must not be stored:
  // its next attempt would stay "now" and every recovery scan would wake it again.
  if (result.ok && result.calls.length === 0 && result.tx.status === tx.status && result.tx.phase === tx.phase) {
    return refuse(tx, 'not-allowed-in-status', `transaction ${tx.gid} has nothing to call now (${tx.status}/${tx.phase}); it waits for its application or its deadline`);
  }
  return result;
}
