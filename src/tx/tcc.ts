// TCC: the application opens the transaction (status prepared), registers each branch's
// confirm and cancel before calling its Try itself, then submits (confirm all) or aborts
// (cancel all). A transaction still prepared when timeoutToFailMs passes is cancelled.
import { enterPhase, onResults, onWake, type PhaseTable } from './phased.js';
import { deadlineAtMs, deadlinePassed, isEarlyWake, refuse, unchanged } from './rounds.js';
import type { StepContext, StepFunction, StepResult, Tx } from './types.js';

export const tccOps = { try: 'try', confirm: 'confirm', cancel: 'cancel' } as const;

const phases: PhaseTable = {
  confirm: { op: 'confirm', status: 'submitted', next: { status: 'succeeded', phase: 'done' } },
  cancel: { op: 'cancel', status: 'aborting', next: { status: 'failed', phase: 'done' } },
};

export const stepTcc: StepFunction = (tx, event, ctx) => {
  switch (event.type) {
    case 'register':
      return register(tx, event.branch, event.branchCountMax, ctx);
    case 'submit':
      if (tx.status === 'prepared') return enterPhase(tx, phases, 'confirm', ctx);
      if (tx.status === 'submitted' || tx.status === 'succeeded') return unchanged(tx);
      return refuse(tx, 'not-allowed-in-status', `cannot submit a tcc transaction in status ${tx.status}`);
    case 'abort':
      if (tx.status === 'prepared') return enterPhase(tx, phases, 'cancel', ctx, event.reason);
      if (tx.status === 'aborting' || tx.status === 'failed') return unchanged(tx);
      return refuse(tx, 'not-allowed-in-status', `cannot abort a tcc transaction in status ${tx.status}: it was submitted`);
    case 'wake':
      return tx.status === 'prepared' ? wakePrepared(tx, ctx) : onWake(tx, phases, ctx);
    case 'results':
      return onResults(tx, phases, event.results, ctx);
  }
};

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

/** A prepared TCC transaction waits for the app; only its deadline wakes it. */
function wakePrepared(tx: Tx, ctx: StepContext): StepResult {
  if (isEarlyWake(tx, ctx) || !deadlinePassed(tx, ctx)) return unchanged(tx);
  return enterPhase(tx, phases, 'cancel', ctx, `not submitted within timeoutToFailMs ${tx.options.timeoutToFailMs}`);
}

/** When a new prepared TCC transaction should be looked at: its deadline. */
export function tccFirstWakeAtMs(tx: Tx): number | null {
  return deadlineAtMs(tx);
}
