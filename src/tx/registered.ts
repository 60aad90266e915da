// The machine for modes whose branches the application registers one by one while the
// transaction is prepared, calling each branch's first phase itself (TCC's Try, XA's local
// transaction), and whose coordinator drives only the second phase: a forward phase on submit,
// an undo phase on abort or when the deadline passes first.
import { enterPhase, onResults, onWake, type PhaseTable } from './phased.js';
import { deadlinePassed, isEarlyWake, refuse, unchanged } from './rounds.js';
import type { Mode, StepContext, StepFunction, StepResult, Tx } from './types.js';

export interface RegisteredModeSpec {
  mode: Mode;
  /** Phase names in `phases`: the one submit enters, and the one abort or the deadline enters. */
  forward: string;
  undo: string;
  phases: PhaseTable;
}

export function registeredBranchMachine(spec: RegisteredModeSpec): StepFunction {
  return (tx, event, ctx) => {
    switch (event.type) {
      case 'register':
        return register(tx, event.branch, event.branchCountMax, ctx);
      case 'submit':
        // Past the deadline the transaction is rolled back, even if the timer has not fired yet:
        // a participant's recovery may already have read the deadline as the decision.
        if (tx.status === 'prepared' && deadlinePassed(tx, ctx)) {
          return enterPhase(tx, spec.phases, spec.undo, ctx, `submitted after timeoutToFailMs ${tx.options.timeoutToFailMs} had passed`);
        }
        if (tx.status === 'prepared') return enterPhase(tx, spec.phases, spec.forward, ctx);
        if (tx.status === 'submitted' || tx.status === 'succeeded') return unchanged(tx);
        return refuse(tx, 'not-allowed-in-status', `cannot submit a ${spec.mode} transaction in status ${tx.status}`);
      case 'abort':
        if (tx.status === 'prepared') return enterPhase(tx, spec.phases, spec.undo, ctx, event.reason);
        if (tx.status === 'aborting' || tx.status === 'failed') return unchanged(tx);
        return refuse(tx, 'not-allowed-in-status', `cannot abort a ${spec.mode} transaction in status ${tx.status}: it was submitted`);
      case 'wake':
        return tx.status === 'prepared' ? wakePrepared(tx, spec, ctx) : onWake(tx, spec.phases, ctx);
      case 'results':
        return onResults(tx, spec.phases, event.results, ctx);
    }
  };
}

// The limit and the default id are decided here, in the serialized step, so that concurrent
// registrations cannot both pass the limit or pick the same id.
function register(tx: Tx, requested: Tx['branches'][number], branchCountMax: number, ctx: StepContext): StepResult {
  if (tx.status !== 'prepared') {
    return refuse(tx, 'not-allowed-in-status', `branches can only be registered while the transaction is prepared, not ${tx.status}`);
  }
  if (tx.branches.length >= branchCountMax) {
    return refuse(tx, 'branch-limit', `transaction has branchCountMax (${branchCountMax}) branches already`);
  }
  const branch = requested.branchId === '' ? { ...requested, branchId: nextFreeBranchId(tx) } : requested;
  if (tx.branches.some((existing) => existing.branchId === branch.branchId)) {
    return refuse(tx, 'duplicate-branch', `branch ${branch.branchId} is already registered`);
  }
  return { ok: true, tx: { ...tx, branches: [...tx.branches, branch], updatedAtMs: ctx.nowMs }, calls: [] };
}

function nextFreeBranchId(tx: Tx): string {
  const taken = new Set(tx.branches.map((branch) => branch.branchId));
  let index = tx.branches.length + 1;
  while (taken.has(String(index).padStart(2, '0'))) index += 1;
  return String(index).padStart(2, '0');
}

/** A prepared transaction waits for the app; only its deadline wakes it. */
function wakePrepared(tx: Tx, spec: RegisteredModeSpec, ctx: StepContext): StepResult {
  if (isEarlyWake(tx, ctx) || !deadlinePassed(tx, ctx)) return unchanged(tx);
  return enterPhase(tx, spec.phases, spec.undo, ctx, `not submitted within timeoutToFailMs ${tx.options.timeoutToFailMs}`);
}
