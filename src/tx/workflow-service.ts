// The shell around the workflow machine: reads a workflow, applies one machine function, writes
// the result with optimistic concurrency, and hands ready workflows to workers waiting in a
// long poll. The store is the only truth; what is kept in memory (who waits, what is ready)
// is an accelerator that the engine's recovery scan rebuilds after a restart.
import { randomUUID } from 'node:crypto';
import type { Store } from '../store/store.js';
import { storableText } from '../store/store.js';
import type { HistoryEntry, Tx, TxOptions } from './types.js';
import { isFinal } from './types.js';
import * as machine from './workflow.js';
import { GidTakenError, OverloadedError } from './engine.js';

export interface WorkflowLimits {
  workflowLeaseMs: number;
  workflowClaimWaitersMax: number;
  workflowReadyMax: number;
  workflowRedispatchMsMax: number;
  workflowStepsMax: number;
  workflowBytesMax: number;
  resultWaitersMax: number;
  heartbeatIntervalMs: number;
}

/** A machine refusal, for the API to answer 409 (or 404 for a missing workflow). */
export class WorkflowRefusedError extends Error {
  constructor(readonly refusal: machine.Refusal) {
    super(refusal.message);
    this.name = 'WorkflowRefusedError';
  }
}

export class WorkflowNotFoundError extends Error {
  constructor(gid: string) {
    super(`no workflow ${gid}`);
    this.name = 'WorkflowNotFoundError';
  }
}

export class WorkflowTooLargeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorkflowTooLargeError';
  }
}

/** What a worker is handed by a claim. */
export interface Claimed {
  tx: Tx;
  leaseId: string;
}

interface ClaimWaiter {
  names: ReadonlySet<string> | null;
  wake: () => void;
}

/** Writes lost to a concurrent writer are retried this many times (each re-reads the store). */
const conflictRetriesMax = 5;
/** Ready entries a claim tries before it waits; each try is one read and maybe one write. */
const claimTriesMax = 16;

export interface WorkflowServiceDeps {
  store: Store;
  limits: WorkflowLimits;
  nowMs: () => number;
  /** Options a new workflow gets (retry interval: the backoff of re-announcing an unclaimed one). */
  defaults: TxOptions;
}

export class WorkflowService {
  private readonly store: Store;
  private readonly limits: WorkflowLimits;
  private readonly nowMs: () => number;
  private readonly defaults: TxOptions;
  /** Workflows that want a worker, by gid, with their name; oldest first. */
  private readonly ready = new Map<string, string>();
  private readonly claimWaiters = new Set<ClaimWaiter>();
  private readonly endWaiters = new Map<string, Set<(tx: Tx) => void>>();
  private endWaiterCount = 0;
  private closed = false;

  constructor(deps: WorkflowServiceDeps) {
    this.store = deps.store;
    this.limits = deps.limits;
    this.nowMs = deps.nowMs;
    this.defaults = { ...deps.defaults, retryIntervalMsMax: Math.min(deps.defaults.retryIntervalMsMax, deps.limits.workflowRedispatchMsMax) };
  }

  /** Starts a workflow; starting the same id again with the same name and input is the same start. */
  async start(spec: { gid: string; name: string; input: string; timeoutMs?: number }): Promise<{ tx: Tx; created: boolean }> {
    const nowMs = this.nowMs();
    const tx = { ...machine.newWorkflow({ ...spec, input: storableText(spec.input), options: this.defaults }, nowMs, this.defaults.retryIntervalMs), version: 1 };
    const history: HistoryEntry[] = [{ atMs: nowMs, status: 'prepared', phase: 'ready' }];
    let inserted: boolean;
    try {
      inserted = await this.store.insert(tx, history);
    } catch (error) {
      // The answer was lost: whether the write happened is read back below.
      const stored = await this.store.get(spec.gid).catch(() => null);
      if (!stored) throw error;
      inserted = false;
    }
    if (inserted) {
      this.announce(tx);
      return { tx, created: true };
    }
    const stored = await this.store.get(spec.gid);
    if (!stored) throw new GidTakenError(spec.gid);
    if (stored.mode !== 'workflow' || machine.workflowName(stored) !== spec.name || stored.extra?.input !== tx.extra?.input) {
      throw new GidTakenError(spec.gid);
    }
    return { tx: stored, created: false };
  }

  /** DTM's prepareWorkflow: opens the workflow, or answers the one that exists (with its progress). */
  async prepareDtm(spec: Omit<machine.NewDtmWorkflow, 'options'>): Promise<Tx> {
    const tx = { ...machine.newDtmWorkflow({ ...spec, options: this.defaults }, this.nowMs()), version: 1 };
    if (await this.store.insert(tx, [{ atMs: tx.createdAtMs, status: 'prepared', phase: 'dtm' }]).catch(() => false)) return tx;
    const stored = await this.store.get(spec.gid);
    if (!stored) throw new GidTakenError(spec.gid);
    if (!machine.isDtmWorkflow(stored)) throw new GidTakenError(spec.gid);
    return stored;
  }

  dtmRegister(gid: string, branchId: string, op: string, status: 'succeeded' | 'failed', data: string): Promise<Tx> {
    return this.mutate(gid, (tx, nowMs) => machine.dtmRegister(tx, branchId, op, status, storableText(data), nowMs));
  }

  async dtmSubmit(gid: string, end: Parameters<typeof machine.dtmSubmit>[1]): Promise<Tx> {
    const tx = await this.mutate(gid, (current, nowMs) => machine.dtmSubmit(current, end, nowMs));
    this.ended(tx);
    return tx;
  }

  async get(gid: string): Promise<Tx | null> {
    const tx = await this.store.get(gid);
    return tx && tx.mode === 'workflow' ? tx : null;
  }

  /** The engine looked at a due workflow: if it wants a worker, tell the claimers. */
  onWoken(tx: Tx): void {
    if (tx.mode === 'workflow' && tx.phase === 'ready' && !isFinal(tx)) this.announce(tx);
  }

  private announce(tx: Tx): void {
    const name = machine.workflowName(tx);
    if (!this.ready.has(tx.gid) && this.ready.size >= this.limits.workflowReadyMax) return;
    this.ready.set(tx.gid, name);
    for (const waiter of this.claimWaiters) {
      if (waiter.names && !waiter.names.has(name)) continue;
      this.claimWaiters.delete(waiter);
      waiter.wake();
      return;
    }
  }

  /**
   * A worker asks for a workflow to run (one of `names`, or any): answered at once if one is
   * ready, else when one becomes ready, else with null after `waitMs`.
   */
  async claim(workerId: string, names: readonly string[] | null, waitMs: number, signal?: AbortSignal): Promise<Claimed | null> {
    const wanted = names && names.length > 0 ? new Set(names) : null;
    const deadline = Date.now() + waitMs;
    // Each pass either claims, waits for an announcement, or ends at the deadline.
    for (let pass = 0; pass < 1000; pass++) {
      const claimed = await this.claimReady(workerId, wanted);
      if (claimed) return claimed;
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0 || signal?.aborted || this.closed) return null;
      if (this.claimWaiters.size >= this.limits.workflowClaimWaitersMax) {
        throw new OverloadedError(`workflowClaimWaitersMax (${this.limits.workflowClaimWaitersMax}) claims are waiting; retry later`);
      }
      await new Promise<void>((resolve) => {
        const waiter: ClaimWaiter = { names: wanted, wake: () => done() };
        const timer = setTimeout(() => done(), remainingMs);
        const onAbort = () => done();
        const done = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          this.claimWaiters.delete(waiter);
          resolve();
        };
        signal?.addEventListener('abort', onAbort);
        this.claimWaiters.add(waiter);
      });
    }
    return null;
  }

  private async claimReady(workerId: string, wanted: ReadonlySet<string> | null): Promise<Claimed | null> {
    let tries = 0;
    for (const [gid, name] of this.ready) {
      if (tries >= claimTriesMax) break;
      if (wanted && !wanted.has(name)) continue;
      tries += 1;
      this.ready.delete(gid);
      const leaseId = `${workerId}/${randomUUID()}`;
      const tx = await this.store.get(gid);
      if (!tx) continue;
      const outcome = machine.claim(tx, leaseId, this.nowMs(), this.limits.workflowLeaseMs);
      if (!outcome.ok) continue;
      const next = { ...outcome.tx, version: tx.version + 1 };
      if (await this.store.update(next, tx.version, historyOf(tx, next))) return { tx: next, leaseId };
    }
    return null;
  }

  renew(gid: string, leaseId: string): Promise<Tx> {
    return this.mutate(gid, (tx, nowMs) => machine.renew(tx, leaseId, nowMs, this.limits.workflowLeaseMs));
  }

  async release(gid: string, leaseId: string): Promise<Tx> {
    const tx = await this.mutate(gid, (current, nowMs) => machine.release(current, leaseId, nowMs));
    this.announce(tx);
    return tx;
  }

  recordStep(gid: string, leaseId: string, record: machine.StepRecord): Promise<Tx> {
    return this.mutate(gid, (tx, nowMs) => {
      if (record.op === 'action' && !tx.branches.some((branch) => branch.branchId === record.name) && tx.branches.length >= this.limits.workflowStepsMax) {
        throw new WorkflowTooLargeError(`workflow ${gid} has workflowStepsMax (${this.limits.workflowStepsMax}) steps already`);
      }
      const stored = { ...record, ...(record.result !== undefined ? { result: storableText(record.result) } : {}) };
      return machine.recordStep(tx, leaseId, stored, nowMs, this.limits.workflowLeaseMs);
    });
  }

  sleep(gid: string, leaseId: string, name: string, index: number | undefined, durationMs: number): Promise<Tx> {
    return this.mutate(gid, (tx, nowMs) => machine.sleep(tx, leaseId, name, index, durationMs, nowMs));
  }

  waitForSignal(gid: string, leaseId: string, name: string, index: number | undefined, signal: string, timeoutMs: number | null): Promise<Tx> {
    return this.mutate(gid, (tx, nowMs) => machine.waitForSignal(tx, leaseId, name, index, signal, timeoutMs, nowMs, this.limits.workflowLeaseMs));
  }

  /** Delivers a signal; a workflow that was waiting for it is announced at once. */
  async signal(gid: string, signal: string, value: string): Promise<{ tx: Tx; delivered: 'received' | 'buffered' | 'dropped' }> {
    const seen: { delivered: 'received' | 'buffered' | 'dropped' } = { delivered: 'dropped' };
    const tx = await this.mutate(gid, (current, nowMs) => {
      const outcome = machine.deliverSignal(current, signal, storableText(value), nowMs);
      seen.delivered = outcome.delivered ?? 'dropped';
      return outcome;
    });
    if (seen.delivered === 'received') this.announce(tx);
    return { tx, delivered: seen.delivered };
  }

  async cancel(gid: string, reason: string): Promise<Tx> {
    const tx = await this.mutate(gid, (current, nowMs) => machine.requestCancel(current, storableText(reason), nowMs));
    if (tx.phase === 'ready') this.announce(tx);
    return tx;
  }

  /** Why the workflow must stop (cancelled, timed out), for the worker's next answer. */
  stopReason(tx: Tx): string | null {
    return machine.stopReason(tx, this.nowMs());
  }

  startRollback(gid: string, leaseId: string, reason: string): Promise<Tx> {
    return this.mutate(gid, (tx, nowMs) => machine.startRollback(tx, leaseId, storableText(reason), nowMs, this.limits.workflowLeaseMs));
  }

  async finish(gid: string, leaseId: string, end: machine.Finish): Promise<Tx> {
    const stored: machine.Finish = end.status === 'succeeded'
      ? { status: 'succeeded', ...(end.output !== undefined ? { output: storableText(end.output) } : {}) }
      : { status: 'failed', reason: storableText(end.reason) };
    const tx = await this.mutate(gid, (current, nowMs) => machine.finish(current, leaseId, stored, nowMs));
    this.ended(tx);
    return tx;
  }

  block(gid: string, leaseId: string, reason: string): Promise<Tx> {
    return this.mutate(gid, (tx, nowMs) => machine.block(tx, leaseId, storableText(reason), nowMs));
  }

  async unblock(gid: string): Promise<Tx> {
    const tx = await this.mutate(gid, (current, nowMs) => machine.unblock(current, nowMs));
    this.announce(tx);
    return tx;
  }

  /**
   * Reads, applies `change`, writes if it changed anything; a write lost to a concurrent writer
   * (the engine announcing it, another request) is retried on a fresh read.
   */
  private async mutate(gid: string, change: (tx: Tx, nowMs: number) => machine.Outcome): Promise<Tx> {
    for (let attempt = 1; ; attempt++) {
      const tx = await this.get(gid);
      if (!tx) throw new WorkflowNotFoundError(gid);
      const outcome = change(tx, this.nowMs());
      if (!outcome.ok) throw new WorkflowRefusedError(outcome.refusal);
      if (!outcome.changed) return tx;
      const next = { ...outcome.tx, version: tx.version + 1 };
      const bytes = Buffer.byteLength(JSON.stringify(next));
      if (bytes > this.limits.workflowBytesMax) {
        throw new WorkflowTooLargeError(`workflow ${gid} would be ${bytes} bytes stored, over workflowBytesMax (${this.limits.workflowBytesMax})`);
      }
      if (await this.store.update(next, tx.version, historyOf(tx, next))) return next;
      if (attempt >= conflictRetriesMax) throw new WorkflowRefusedError({ code: 'lease-lost', message: `workflow ${gid} kept changing under this request; retry` });
    }
  }

  private ended(tx: Tx): void {
    if (!isFinal(tx)) return;
    const waiters = this.endWaiters.get(tx.gid);
    if (!waiters) return;
    this.endWaiters.delete(tx.gid);
    for (const resolve of waiters) resolve(tx);
  }

  /** The workflow once it has ended, or as it is when `timeoutMs` passes (null: no such workflow). */
  async waitForEnd(gid: string, timeoutMs: number): Promise<Tx | null> {
    if (this.endWaiterCount >= this.limits.resultWaitersMax) {
      throw new OverloadedError(`resultWaitersMax (${this.limits.resultWaitersMax}) result waits are open; retry later`);
    }
    this.endWaiterCount += 1;
    let resolveEnded: (tx: Tx) => void = () => undefined;
    const endedHere = new Promise<Tx>((resolve) => (resolveEnded = resolve));
    const waiters = this.endWaiters.get(gid) ?? new Set();
    waiters.add(resolveEnded);
    this.endWaiters.set(gid, waiters);
    let timer: NodeJS.Timeout | undefined;
    let checker: NodeJS.Timeout | undefined;
    try {
      const stored = await this.get(gid);
      if (!stored || isFinal(stored) || timeoutMs <= 0) return stored;
      const timedOut = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
      // Another coordinator sharing the store may end it: look at the store now and then too.
      const endedElsewhere = new Promise<Tx>((resolve) => {
        checker = setInterval(() => {
          void this.get(gid).then((current) => current && isFinal(current) && resolve(current), () => undefined);
        }, this.limits.heartbeatIntervalMs);
      });
      return (await Promise.race([endedHere, endedElsewhere, timedOut])) ?? (await this.get(gid));
    } finally {
      this.endWaiterCount -= 1;
      if (timer) clearTimeout(timer);
      if (checker) clearInterval(checker);
      waiters.delete(resolveEnded);
      if (waiters.size === 0 && this.endWaiters.get(gid) === waiters) this.endWaiters.delete(gid);
    }
  }

  /** Answers every waiting claim (shutdown), so the HTTP server can drain. */
  close(): void {
    this.closed = true;
    for (const waiter of this.claimWaiters) waiter.wake();
    this.claimWaiters.clear();
  }
}

/** History records status changes and a workflow blocked, not every hand-over between workers. */
function historyOf(previous: Tx, next: Tx): HistoryEntry[] {
  if (previous.status === next.status && (next.phase !== 'blocked' || previous.phase === 'blocked')) return [];
  return [{ atMs: next.updatedAtMs, status: next.status, phase: next.phase, ...(next.reason !== undefined && next.reason !== previous.reason ? { reason: next.reason } : {}) }];
}
