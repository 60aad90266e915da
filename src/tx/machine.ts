// Picks the state machine for a transaction's mode, and builds new transactions.
import { deadlineAtMs, refuse, transition } from './rounds.js';
import { stepMsg } from './msg.js';
import { stepSaga } from './saga.js';
import { stepTcc } from './tcc.js';
import { stepThreePhase } from './three-phase.js';
import { stepTwoPhase } from './two-phase.js';
import { stepXa } from './xa.js';
import { stepWorkflow } from './workflow.js';
import type { AnyTxEvent, Branch, Mode, StepContext, StepFunction, StepResult, Tx, TxEvent, TxOptions } from './types.js';
import { isFinal } from './types.js';

const machines: Readonly<Record<Mode, StepFunction>> = {
  saga: stepSaga,
  tcc: stepTcc,
  '2pc': stepTwoPhase,
  '3pc': stepThreePhase,
  xa: stepXa,
  msg: stepMsg,
  workflow: stepWorkflow,
};

/** Phase of a transaction an operator (or DTM's forceStop) ended without compensations. */
export const forceStoppedPhase = 'force-stopped';

export function step(tx: Tx, event: AnyTxEvent, ctx: StepContext): StepResult {
  if (event.type === 'forceStop') return forceStop(tx, event.reason, ctx);
  if (event.type === 'retryNow') return retryNow(tx, ctx);
  return machines[tx.mode](tx, event, ctx);
}

/**
 * Makes the next attempt due now, with the backoff reset. Only a transaction with calls to
 * retry moves: one prepared and waiting for its application keeps its deadline, a held
 * message keeps its hold (the wake sees notBeforeMs), and an ended one stays as it is.
 */
function retryNow(tx: Tx, ctx: StepContext): StepResult {
  const retrying = (tx.status === 'submitted' && tx.phase !== 'delay') || tx.status === 'aborting' || (tx.status === 'prepared' && tx.phase === 'query-prepared');
  if (!retrying || tx.nextAttemptAtMs === null || tx.nextAttemptAtMs <= ctx.nowMs) return { ok: true, tx, calls: [] };
  return { ok: true, tx: { ...tx, nextAttemptAtMs: ctx.nowMs, roundsWithoutProgress: 0, updatedAtMs: ctx.nowMs }, calls: [] };
}

/**
 * Ends an unfinished transaction as failed, whatever its mode and phase, without another call:
 * the operator takes over whatever the participants were left with (as DTM's forceStop does).
 */
function forceStop(tx: Tx, reason: string, ctx: StepContext): StepResult {
  if (isFinal(tx)) return refuse(tx, 'not-allowed-in-status', `transaction ${tx.gid} has ended already (${tx.status}); there is nothing to stop`);
  return { ok: true, tx: { ...transition(tx, 'failed', forceStoppedPhase, ctx, reason), nextAttemptAtMs: null }, calls: [] };
}

export interface NewTx {
  gid: string;
  mode: Mode;
  branches: Branch[];
  options: TxOptions;
  extra?: Record<string, string>;
  queryPreparedUrl?: string;
}

/**
 * A transaction as first written: prepared, and (for TCC, XA and prepared messages) due to be looked at when its
 * deadline passes. Saga, 2PC and 3PC are submitted straight after by the engine.
 */
export function newTx(spec: NewTx, nowMs: number): Tx {
  const tx: Tx = {
    gid: spec.gid,
    mode: spec.mode,
    status: 'prepared',
    phase: 'prepared',
    branches: spec.branches,
    options: spec.options,
    createdAtMs: nowMs,
    updatedAtMs: nowMs,
    nextAttemptAtMs: null,
    roundsWithoutProgress: 0,
    extra: spec.extra,
    ...(spec.queryPreparedUrl ? { queryPreparedUrl: spec.queryPreparedUrl } : {}),
    version: 0,
  };
  return { ...tx, nextAttemptAtMs: deadlineAtMs(tx) };
}

/** Branch ids in DTM's style: 01, 02, … */
export function branchIdAt(index: number): string {
  return String(index + 1).padStart(2, '0');
}

export function newOp(url: string): Branch['ops'][string] {
  return { url, status: 'pending', attempts: 0 };
}
