// The data every transaction mode works on. A transaction is one JSON document (persisted
// whole on every transition) so that one store write is one atomic state change.

export const modes = ['saga', 'tcc', '2pc', '3pc', 'xa', 'msg'] as const;
/**
 * 'workflow' is not in `modes`: a workflow is started through /v1/workflows (and DTM's
 * prepareWorkflow), never through the transaction create APIs, whose validation uses `modes`.
 */
export type Mode = (typeof modes)[number] | 'workflow';

/** DTM's global statuses, with `succeeded` spelled out (the DTM API maps it to `succeed`). */
export const globalStatuses = ['prepared', 'submitted', 'aborting', 'succeeded', 'failed'] as const;
export type GlobalStatus = (typeof globalStatuses)[number];

export type OpStatus = 'pending' | 'succeeded' | 'failed';

/** One call the coordinator makes on a branch (action, compensate, confirm, …). */
export interface OpState {
  url: string;
  status: OpStatus;
  /** Calls made that did not settle the op (transient errors, not-yet answers). */
  attempts: number;
  lastError?: string;
  /** Workflow steps only: the step's recorded value (JSON text), replayed on resume. */
  result?: string;
  /** Workflow steps only: when the first attempt started and when the op settled. */
  startedAtMs?: number;
  settledAtMs?: number;
}

export interface Branch {
  branchId: string;
  /** Raw request body; absent means the branch is called with GET. */
  payload?: string;
  /** Keyed by op name (see `ops` in shared/protocol.ts). */
  ops: Record<string, OpState>;
  /** Saga only: ids of branches whose action must succeed before this one runs. */
  dependsOn?: string[];
}

export interface TxOptions {
  /** 0 means no timeout. Before the decision, the transaction is rolled back when this passes. */
  timeoutToFailMs: number;
  requestTimeoutMs: number;
  retryIntervalMs: number;
  retryIntervalMsMax: number;
  /** Retries (calls after the first) of a forward op before it counts as refused; null: no limit. */
  retryLimit: number | null;
  branchHeaders: Record<string, string>;
  /**
   * Saga: run branches concurrently, constrained by `dependsOn`. Message: deliver every step at
   * once. TCC and XA: call the second phase (confirm/cancel, commit/rollback) on every branch at
   * once instead of one at a time (DTM's order, the default).
   */
  concurrent: boolean;
  /**
   * Messages only (DTM's custom_data `delay`): the steps are held at least this long after the
   * submit (or, when queryPrepared decides, after the message was prepared). Absent: none.
   */
  delayMs?: number;
}

export interface Tx {
  gid: string;
  mode: Mode;
  status: GlobalStatus;
  /** Mode-specific step within the status, e.g. 2PC's `prepare` or `commit`. */
  phase: string;
  branches: Branch[];
  options: TxOptions;
  createdAtMs: number;
  updatedAtMs: number;
  /** When the engine must look at this transaction again; null once it has ended. */
  nextAttemptAtMs: number | null;
  /** Consecutive rounds without progress, for exponential backoff. */
  roundsWithoutProgress: number;
  /** Why the transaction is rolling back or failed. */
  reason?: string;
  /**
   * Two-phase messages only: the app's endpoint that tells whether its local transaction
   * committed, rolled back or is still running, asked when a prepared message is not submitted
   * within timeoutToFailMs.
   */
  queryPreparedUrl?: string;
  /**
   * Messages only: no step is delivered before this time (the hold `delayMs` asks for). Kept in
   * the transaction, so a restart or another coordinator honours it too.
   */
  notBeforeMs?: number;
  /** Opaque data kept for the DTM-compatible API (custom_data, protocol extras). */
  extra?: Record<string, string>;
  /** Digest of the create request, so a retried create finds its own transaction (see requestDigestOf). */
  requestDigest?: string;
  /** Random per create attempt, so a create whose answer was lost recognises its own write. */
  createAttempt?: string;
  /** Optimistic concurrency: bumped by every store write. */
  version: number;
  /**
   * Which coordinator instance works on the transaction, until when. Only the engine reads
   * it; the state machines carry it along untouched. Null when nobody works on it.
   */
  lease?: Lease | null;
}

export interface Lease {
  owner: string;
  untilMs: number;
}

export interface HistoryEntry {
  atMs: number;
  status: GlobalStatus;
  phase: string;
  reason?: string;
}

export const finalStatuses: ReadonlySet<GlobalStatus> = new Set(['succeeded', 'failed']);

export function isFinal(tx: Pick<Tx, 'status'>): boolean {
  return finalStatuses.has(tx.status);
}

/** What a branch answered, as the shell observed it. */
export interface CallResult {
  branchId: string;
  op: string;
  outcome: 'success' | 'failure' | 'ongoing' | 'transient';
  detail?: string;
}

export type TxEvent =
  /** `delayMs`: a message's hold given with the submit (DTM clients send it only then). */
  | { type: 'submit'; delayMs?: number }
  | { type: 'abort'; reason: string }
  /** A TCC or XA branch; an empty branchId asks for the next free one (01, 02, …). */
  | { type: 'register'; branch: Branch; branchCountMax: number }
  | { type: 'results'; results: CallResult[] }
  | { type: 'wake' };

/**
 * DTM's forceStop: an operator ends an unfinished transaction as failed at once, calling
 * nothing more (no compensation, cancel or rollback). step() handles it for every mode.
 */
export interface ForceStopEvent {
  type: 'forceStop';
  reason: string;
}

/**
 * DTM's resetNextCronTime: retry an unfinished transaction's pending calls now, with the
 * backoff reset, instead of at its next attempt. step() handles it for every mode.
 */
export interface RetryNowEvent {
  type: 'retryNow';
}

export type AnyTxEvent = TxEvent | ForceStopEvent | RetryNowEvent;

export interface BranchCall {
  branchId: string;
  op: string;
  url: string;
  payload?: string;
}

export interface StepContext {
  nowMs: number;
  /** A number in [0, 1) for backoff jitter; the shell passes a PRNG so steps stay pure. */
  jitter: number;
}

export type StepResult =
  | { ok: true; tx: Tx; calls: BranchCall[] }
  | { ok: false; tx: Tx; error: StepRefusal };

/** An event that does not apply in the transaction's current state. */
export interface StepRefusal {
  code: 'not-allowed-in-status' | 'duplicate-branch' | 'unknown-branch' | 'branch-limit';
  message: string;
}

export type StepFunction = (tx: Tx, event: TxEvent, ctx: StepContext) => StepResult;
