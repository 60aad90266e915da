// A machine for modes that run one op on every branch per phase (2PC, 3PC, and TCC and XA after
// their decision). Each mode file supplies its phase table; this file walks it. A phase with an
// `order` calls its branches one at a time in that order unless the transaction is concurrent,
// as DTM does for TCC and XA: a branch is called only once the one before it acknowledged, and
// an error ends the round (the same branch is retried after the backoff).
import {
  allSettled,
  assert,
  deadlineAtMs,
  deadlinePassed,
  isEarlyWake,
  pendingCalls,
  scheduleNext,
  settle,
  transition,
  unchanged,
} from './rounds.js';
import type { BranchCall, CallResult, GlobalStatus, StepContext, StepResult, Tx } from './types.js';

export interface Phase {
  /** The op called on every branch during this phase. */
  op: string;
  status: GlobalStatus;
  /** Where to go once every branch acknowledged the op. */
  next: { status: GlobalStatus; phase: string };
  /**
   * A forward phase: a refusal, retry limit or deadline moves to this phase instead. A phase
   * without it is past the commit decision: its op is retried until acknowledged.
   */
  rollbackTo?: string;
  /**
   * Sequential phase: the order in which branches are called, one at a time (registration
   * order, or its reverse), unless the transaction's `concurrent` option is set. Without it
   * the op goes to every branch at once.
   */
  order?: 'registration' | 'reverse';
}

export type PhaseTable = Readonly<Record<string, Phase>>;

/** Moves to `phaseName` and emits its first calls, or ends the transaction if it is final. */
export function enterPhase(tx: Tx, table: PhaseTable, phaseName: string, ctx: StepContext, reason?: string): StepResult {
  const phase = table[phaseName];
  if (!phase) {
    const ended = transition(tx, tx.status, phaseName, ctx, reason);
    assert(ended.status === 'succeeded' || ended.status === 'failed', `phase ${phaseName} is neither in the table nor final`);
    return scheduleNext(ended, [], true, ctx);
  }
  const entered = transition(tx, phase.status, phaseName, ctx, reason);
  if (allSettled(entered, phase.op)) return advance(entered, table, phase, ctx);
  return scheduleNext(entered, dueCalls(entered, phase), true, ctx, forwardDeadline(entered, phase));
}

function isSequential(tx: Tx, phase: Phase): boolean {
  return phase.order !== undefined && !tx.options.concurrent;
}

/** The calls a round makes: every pending op, or only the first one in the phase's order. */
function dueCalls(tx: Tx, phase: Phase): BranchCall[] {
  const pending = pendingCalls(tx, phase.op);
  if (!isSequential(tx, phase) || pending.length === 0) return pending;
  return [phase.order === 'reverse' ? pending[pending.length - 1] : pending[0]];
}

function advance(tx: Tx, table: PhaseTable, phase: Phase, ctx: StepContext): StepResult {
  const moved = transition(tx, phase.next.status, phase.next.phase, ctx);
  if (moved.status === 'succeeded' || moved.status === 'failed') return scheduleNext(moved, [], true, ctx);
  return enterPhase(moved, table, phase.next.phase, ctx);
}

function forwardDeadline(tx: Tx, phase: Phase): number | null {
  return phase.rollbackTo ? deadlineAtMs(tx) : null;
}

export function onResults(tx: Tx, table: PhaseTable, results: CallResult[], ctx: StepContext): StepResult {
  const phase = table[tx.phase];
  if (!phase) return unchanged(tx);
  const relevant = results.filter((result) => result.op === phase.op);
  const settled = settle(tx, relevant, (op) => op === phase.op && phase.rollbackTo !== undefined);
  const updated: Tx = { ...tx, branches: settled.branches };
  if (phase.rollbackTo && settled.refusals.length > 0) {
    const first = settled.refusals[0];
    return enterPhase(updated, table, phase.rollbackTo, ctx, `branch ${first.branchId} refused ${first.op}: ${first.detail ?? first.outcome}`);
  }
  if (allSettled(updated, phase.op)) return advance(updated, table, phase, ctx);
  if (phase.rollbackTo && deadlinePassed(updated, ctx)) {
    return enterPhase(updated, table, phase.rollbackTo, ctx, `timeoutToFailMs ${tx.options.timeoutToFailMs} passed during ${tx.phase}`);
  }
  // Only the ops still pending are retried after the backoff, not the whole phase. A sequential
  // phase whose branch just acknowledged goes on to the next branch at once.
  const next = isSequential(updated, phase) && settled.progressed ? dueCalls(updated, phase) : [];
  return scheduleNext(updated, next, settled.progressed, ctx, forwardDeadline(updated, phase));
}

export function onWake(tx: Tx, table: PhaseTable, ctx: StepContext): StepResult {
  const phase = table[tx.phase];
  if (!phase || isEarlyWake(tx, ctx)) return unchanged(tx);
  if (phase.rollbackTo && deadlinePassed(tx, ctx)) {
    return enterPhase(tx, table, phase.rollbackTo, ctx, `timeoutToFailMs ${tx.options.timeoutToFailMs} passed during ${tx.phase}`);
  }
  return scheduleNext(tx, dueCalls(tx, phase), false, ctx, forwardDeadline(tx, phase));
}
