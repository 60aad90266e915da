// Picks the state machine for a transaction's mode, and builds new transactions.
import { deadlineAtMs } from './rounds.js';
import { stepMsg } from './msg.js';
import { stepSaga } from './saga.js';
import { stepTcc } from './tcc.js';
import { stepThreePhase } from './three-phase.js';
import { stepTwoPhase } from './two-phase.js';
import { stepXa } from './xa.js';
import { stepWorkflow } from './workflow.js';
import type { Branch, Mode, StepContext, StepFunction, StepResult, Tx, TxEvent, TxOptions } from './types.js';

const machines: Readonly<Record<Mode, StepFunction>> = {
  saga: stepSaga,
  tcc: stepTcc,
  '2pc': stepTwoPhase,
  '3pc': stepThreePhase,
  xa: stepXa,
  msg: stepMsg,
  workflow: stepWorkflow,
};

export function step(tx: Tx, event: TxEvent, ctx: StepContext): StepResult {
  return machines[tx.mode](tx, event, ctx);
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
