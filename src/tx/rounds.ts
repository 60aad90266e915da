// Pure helpers every mode shares: applying branch answers, backoff, deadlines and the
// calls due in a round. None of them touches I/O.
import type { Branch, BranchCall, CallResult, GlobalStatus, StepContext, StepRefusal, StepResult, Tx } from './types.js';

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`invariant violated: ${message}`);
}

/** Backoff before the next round: doubling per round without progress, capped, with jitter in [50%, 100%]. */
export function backoffDelayMs(tx: Tx, ctx: StepContext): number {
  const { retryIntervalMs, retryIntervalMsMax } = tx.options;
  const exponent = Math.min(tx.roundsWithoutProgress, 30);
  const uncapped = retryIntervalMs * 2 ** exponent;
  const capped = Math.min(uncapped, retryIntervalMsMax);
  return Math.max(1, Math.round(capped * (0.5 + ctx.jitter / 2)));
}

export function deadlinePassed(tx: Tx, ctx: StepContext): boolean {
  return tx.options.timeoutToFailMs > 0 && ctx.nowMs >= tx.createdAtMs + tx.options.timeoutToFailMs;
}

export function deadlineAtMs(tx: Tx): number | null {
  return tx.options.timeoutToFailMs > 0 ? tx.createdAtMs + tx.options.timeoutToFailMs : null;
}

export interface Settled {
  branches: Branch[];
  /** At least one op was settled (succeeded or failed) by these results. */
  progressed: boolean;
  /** Forward ops the branch refused (business failure), or whose retry limit ran out. */
  refusals: CallResult[];
}

/**
 * Applies answers to op states. `refusable` ops fail on a business refusal; other ops (commit,
 * compensate, cancel…) must not fail, so a refusal there is retried like a transient error.
 */
export function settle(tx: Tx, results: CallResult[], refusable: (op: string) => boolean): Settled {
  const byBranch = new Map<string, CallResult[]>();
  for (const result of results) {
    const list = byBranch.get(result.branchId) ?? [];
    list.push(result);
    byBranch.set(result.branchId, list);
  }
  let progressed = false;
  const refusals: CallResult[] = [];
  const branches = tx.branches.map((branch) => {
    const answers = byBranch.get(branch.branchId);
    if (!answers) return branch;
    const ops = { ...branch.ops };
    for (const answer of answers) {
      const op = ops[answer.op];
      assert(op, `answer for unknown op ${answer.branchId}/${answer.op}`);
      if (op.status !== 'pending') continue;
      const next = settleOne(tx, answer, refusable(answer.op));
      ops[answer.op] = { ...op, ...next, attempts: op.attempts + (next.status === 'pending' ? 1 : 0) };
      if (next.status !== 'pending') progressed = true;
      if (next.status === 'failed') refusals.push(answer);
      else if (next.status === 'pending' && refusable(answer.op) && retryLimitReached(tx, op.attempts + 1)) {
        refusals.push({ ...answer, outcome: 'failure', detail: `retry limit ${tx.options.retryLimit} reached: ${answer.detail ?? answer.outcome}` });
      }
    }
    return { ...branch, ops };
  });
  return { branches, progressed, refusals };
}

function settleOne(tx: Tx, answer: CallResult, refusable: boolean): Pick<Branch['ops'][string], 'status' | 'lastError'> {
  if (answer.outcome === 'success') return { status: 'succeeded', lastError: undefined };
  if (answer.outcome === 'failure' && refusable) return { status: 'failed', lastError: answer.detail ?? 'business failure' };
  return { status: 'pending', lastError: describe(answer) };
}

function describe(answer: CallResult): string {
  return answer.detail ? `${answer.outcome}: ${answer.detail}` : answer.outcome;
}

function retryLimitReached(tx: Tx, attempts: number): boolean {
  return tx.options.retryLimit !== null && attempts > tx.options.retryLimit;
}

/** The calls for `op` on the branches that `include` selects and that have not settled it yet. */
export function pendingCalls(tx: Tx, op: string, include: (branch: Branch) => boolean = () => true): BranchCall[] {
  const calls: BranchCall[] = [];
  for (const branch of tx.branches) {
    const state = branch.ops[op];
    if (!state || state.status !== 'pending' || !include(branch)) continue;
    calls.push({ branchId: branch.branchId, op, url: state.url, payload: branch.payload });
  }
  return calls;
}

export function allSettled(tx: Tx, op: string, include: (branch: Branch) => boolean = () => true): boolean {
  return tx.branches.every((branch) => !include(branch) || branch.ops[op]?.status === 'succeeded');
}

/** A state change with the bookkeeping every transition needs. */
export function transition(tx: Tx, status: GlobalStatus, phase: string, ctx: StepContext, reason?: string): Tx {
  const final = status === 'succeeded' || status === 'failed';
  return {
    ...tx,
    // Header values (credentials, often) are kept only while a branch may still be called.
    ...(final ? { options: withoutHeaderValues(tx.options) } : {}),
    status,
    phase,
    reason: reason ?? tx.reason,
    roundsWithoutProgress: 0,
    updatedAtMs: ctx.nowMs,
    nextAttemptAtMs: status === 'succeeded' || status === 'failed' ? null : tx.nextAttemptAtMs,
  };
}

/** The options with every branch header's value emptied; the names stay for the views. */
function withoutHeaderValues(options: Tx['options']): Tx['options'] {
  const names = Object.keys(options.branchHeaders);
  if (names.length === 0) return options;
  return { ...options, branchHeaders: Object.fromEntries(names.map((name) => [name, ''])) };
}

/**
 * Ends a round: when calls go out, look again after the request timeout plus a backoff (a
 * watchdog in case this process dies mid-call); when nothing goes out, wait out the backoff.
 */
export function scheduleNext(tx: Tx, calls: BranchCall[], progressed: boolean, ctx: StepContext, wakeNoLaterThanMs: number | null = null): StepResult {
  if (tx.status === 'succeeded' || tx.status === 'failed') return { ok: true, tx: { ...tx, nextAttemptAtMs: null }, calls: [] };
  // A round counts once: when its answers show no progress, not again when its retry goes out.
  const rounds = progressed ? 0 : calls.length > 0 ? tx.roundsWithoutProgress : tx.roundsWithoutProgress + 1;
  const withRounds = { ...tx, roundsWithoutProgress: rounds, updatedAtMs: ctx.nowMs };
  const delayMs = backoffDelayMs(withRounds, ctx);
  const watchdogMs = calls.length > 0 ? tx.options.requestTimeoutMs + delayMs : delayMs;
  let nextAttemptAtMs = ctx.nowMs + watchdogMs;
  if (wakeNoLaterThanMs !== null) nextAttemptAtMs = Math.min(nextAttemptAtMs, wakeNoLaterThanMs);
  return { ok: true, tx: { ...withRounds, nextAttemptAtMs }, calls };
}

export function unchanged(tx: Tx): StepResult {
  return { ok: true, tx, calls: [] };
}

export function refuse(tx: Tx, code: StepRefusal['code'], message: string): StepResult {
  return { ok: false, tx, error: { code, message } };
}

/** Wake events that arrive before the transaction asked to be woken change nothing. */
export function isEarlyWake(tx: Tx, ctx: StepContext): boolean {
  return tx.nextAttemptAtMs !== null && ctx.nowMs < tx.nextAttemptAtMs;
}
