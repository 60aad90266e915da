// The shell around the pure lock manager: it feeds it events stamped with the wall clock,
// persists what a step decided before answering anyone (a grant is durable before its holder
// hears of it), keeps queued requests open until the manager wakes them or their wait limit
// passes, and runs one timer for the next deadline. Deadlines are wall-clock times so they mean
// the same thing after a restart.
import { realTimers, type Timers } from '../shared/timers.js';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import {
  inspect,
  leaseDeadline,
  restore,
  step,
  type Answer,
  type Lease,
  type LockEvent,
  type LockMode,
  type LockState,
  type LockView,
  type ManagerLimits,
  type Session,
} from './manager.js';
import type { LockStore, LockWrite } from './store.js';

export interface AcquireInput {
  name: string;
  mode: LockMode;
  permits: number;
  /** Null when the lease is bound to `sessionId`. */
  ttlMs: number | null;
  sessionId: string | null;
  owner: string;
  fair: boolean;
  waitMs: number;
  /** Chosen by the client so that it can retry an acquire safely; generated when absent. */
  leaseId?: string;
}

/**
 * What a request comes to. Times are relative: `elapsedMs` is how long the request spent here
 * and `ttlRemainingMs` what was left of the lease when the answer left, so a client that
 * remembers when it sent the request can bound the lease's end by its own clock without
 * trusting ours: sentAt + elapsedMs + ttlRemainingMs.
 */
export type Outcome =
  | Exclude<Answer, { kind: 'granted' } | { kind: 'renewed' } | { kind: 'session' }>
  | { kind: 'granted'; lease: Lease; waitedMs: number; ttlRemainingMs: number; elapsedMs: number }
  | { kind: 'renewed'; lease: Lease; ttlRemainingMs: number; elapsedMs: number }
  | { kind: 'session'; session: Session; ttlRemainingMs: number; elapsedMs: number }
  /** Granted, but the lease ran out before the grant was durable and could be answered. */
  | { kind: 'expired-before-answer' }
  | { kind: 'unavailable'; detail: string };

/**
 * What the HTTP routes need from a lock service: the SQLite coordinator's in-memory service
 * and the shared-store service (shared-service.ts) both provide it.
 */
export interface Locks {
  acquire(input: AcquireInput, signal?: AbortSignal): Promise<Outcome>;
  renew(name: string, leaseId: string, ttlMs: number | null): Promise<Outcome>;
  release(name: string, leaseId: string): Promise<Outcome>;
  openSession(ttlMs: number, owner: string, sessionId?: string): Promise<Outcome>;
  keepalive(sessionId: string): Promise<Outcome>;
  closeSession(sessionId: string): Promise<Outcome>;
  inspect(name: string): (LockView & { nowMs: number }) | Promise<LockView & { nowMs: number }>;
  counts(): { leases: number; waiters: number; sessions: number; locks: number };
  close(): Promise<void>;
}

interface PendingRequest {
  resolve: (outcome: Outcome) => void;
  receivedAtMs: number;
}

export interface LockServiceOptions {
  store: LockStore;
  limits: ManagerLimits;
  /** Wall clock in ms; tests pass their own. */
  clock?: () => number;
  /** The deadline timer; a simulation passes virtual time's. */
  timers?: LockTimers;
  onError?: (error: unknown, context: string) => void;
}

export type LockTimers = Timers;

/** Backoff between attempts to reload the locks after the store failed a write. */
const reloadRetryFirstMs = 100;
const reloadRetryMaxMs = 5000;

export class LockService implements Locks {
  private state: LockState;
  private readonly pending = new Map<string, PendingRequest>();
  private nextRequestId = 1;
  private timer: unknown = null;
  private timerAtMs: number | null = null;
  private closed = false;
  private recovering = false;
  private readonly clock: () => number;
  private readonly timers: LockTimers;

  private constructor(
    private readonly options: LockServiceOptions,
    state: LockState,
  ) {
    this.state = state;
    this.clock = options.clock ?? Date.now;
    this.timers = options.timers ?? realTimers;
  }

  /** Loads leases and sessions from the store and expires whatever ran out while we were down. */
  static async open(options: LockServiceOptions): Promise<LockService> {
    const service = new LockService(options, restore(options.limits, await options.store.load()));
    service.run({ type: 'tick' });
    await options.store.settled();
    return service;
  }

  acquire(input: AcquireInput, signal?: AbortSignal): Promise<Outcome> {
    const leaseId = input.leaseId ?? newId();
    return this.request((requestId) => ({ type: 'acquire', requestId, leaseId, ...withoutLeaseId(input) }), signal);
  }

  renew(name: string, leaseId: string, ttlMs: number | null): Promise<Outcome> {
    return this.request((requestId) => ({ type: 'renew', requestId, name, leaseId, ttlMs }));
  }

  release(name: string, leaseId: string): Promise<Outcome> {
    return this.request((requestId) => ({ type: 'release', requestId, name, leaseId }));
  }

  openSession(ttlMs: number, owner: string, sessionId = newId()): Promise<Outcome> {
    return this.request((requestId) => ({ type: 'sessionOpen', requestId, sessionId, ttlMs, owner }));
  }

  keepalive(sessionId: string): Promise<Outcome> {
    return this.request((requestId) => ({ type: 'sessionKeepalive', requestId, sessionId }));
  }

  closeSession(sessionId: string): Promise<Outcome> {
    return this.request((requestId) => ({ type: 'sessionClose', requestId, sessionId }));
  }

  /** The lock as of now, with deadlines turned into time left. */
  inspect(name: string): LockView & { nowMs: number } {
    if (!this.closed && !this.recovering) this.run({ type: 'tick' });
    return { ...inspect(this.state, name), nowMs: this.clock() };
  }

  /** Leases held and requests queued, for metrics and tests. */
  counts(): { leases: number; waiters: number; sessions: number; locks: number } {
    return { leases: this.state.leases.size, waiters: this.state.waiters.size, sessions: this.state.sessions.size, locks: this.state.locks.size };
  }

  /** Answers every open request with 503, stops the timer and closes the store. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.clearTimer();
    this.failAllPending('the coordinator is shutting down');
    await this.options.store.settled().catch(() => undefined);
    await this.options.store.close();
  }

  private request(build: (requestId: string) => LockEvent, signal?: AbortSignal): Promise<Outcome> {
    if (this.closed) return Promise.resolve({ kind: 'unavailable', detail: 'the coordinator is shutting down' });
    if (this.recovering) return Promise.resolve({ kind: 'unavailable', detail: 'the lock store is recovering from a failed write' });
    const requestId = String(this.nextRequestId++);
    const outcome = new Promise<Outcome>((resolve) => this.pending.set(requestId, { resolve, receivedAtMs: performance.now() }));
    if (signal) {
      const onAbort = () => {
        if (this.pending.has(requestId) && !this.closed && !this.recovering) this.run({ type: 'cancel', requestId });
      };
      signal.addEventListener('abort', onAbort, { once: true });
      void outcome.then(() => signal.removeEventListener('abort', onAbort));
    }
    this.run(build(requestId));
    return outcome;
  }

  private run(event: LockEvent): void {
    const { effects } = step(this.state, event, this.clock());
    const writes: LockWrite[] = [];
    const answers: Array<{ requestId: string; answer: Answer }> = [];
    for (const effect of effects) {
      switch (effect.type) {
        case 'grant':
        case 'renew':
          writes.push({ type: 'putLease', lease: effect.lease });
          break;
        case 'release':
        case 'expire':
          writes.push({ type: 'deleteLease', leaseId: effect.lease.leaseId });
          break;
        case 'saveSession':
          writes.push({ type: 'putSession', session: effect.session });
          break;
        case 'endSession':
          writes.push({ type: 'deleteSession', sessionId: effect.session.sessionId });
          break;
        case 'reply':
          answers.push({ requestId: effect.requestId, answer: effect.answer });
          break;
        case 'wake':
          answers.push({ requestId: effect.requestId, answer: { kind: 'granted', lease: effect.lease, waitedMs: effect.waitedMs } });
          break;
        case 'schedule':
          this.schedule(effect.atMs);
          break;
      }
    }
    if (writes.length === 0 && answers.length === 0) return;
    // An answer waits for its own writes and for every write before it, so nothing it tells
    // (a grant, or a "busy" that reflects a grant) can be undone by a crash.
    const durable = writes.length > 0 ? this.options.store.write(writes) : this.options.store.settled();
    durable.then(
      () => this.deliver(answers),
      (error: unknown) => this.storeFailed(error, answers),
    );
  }

  private deliver(answers: Array<{ requestId: string; answer: Answer }>): void {
    for (const { requestId, answer } of answers) {
      const pending = this.pending.get(requestId);
      if (!pending) continue;
      this.pending.delete(requestId);
      pending.resolve(this.outcomeOf(answer, performance.now() - pending.receivedAtMs));
    }
  }

  private outcomeOf(answer: Answer, elapsedMs: number): Outcome {
    const nowMs = this.clock();
    switch (answer.kind) {
      case 'granted': {
        // Never hand out a lease that is already over (a commit slower than a short TTL).
        const live = this.state.leases.get(answer.lease.leaseId);
        const remainingMs = live ? leaseDeadline(this.state, live) - nowMs : 0;
        if (!live || remainingMs <= 0) return { kind: 'expired-before-answer' };
        return { kind: 'granted', lease: live, waitedMs: answer.waitedMs, ttlRemainingMs: remainingMs, elapsedMs };
      }
      case 'renewed': {
        const remainingMs = answer.expiresAtMs - nowMs;
        if (remainingMs <= 0 || !this.state.leases.has(answer.lease.leaseId)) return { kind: 'not-holder' };
        return { kind: 'renewed', lease: answer.lease, ttlRemainingMs: remainingMs, elapsedMs };
      }
      case 'session': {
        const remainingMs = answer.session.expiresAtMs - nowMs;
        if (remainingMs <= 0 || !this.state.sessions.has(answer.session.sessionId)) return { kind: 'no-session' };
        return { kind: 'session', session: answer.session, ttlRemainingMs: remainingMs, elapsedMs };
      }
      default:
        return answer;
    }
  }

  /**
   * A commit failed: memory is now ahead of the disk. Answer the affected requests with 503,
   * then rebuild the state from what the store really holds and drop every queued request
   * (their clients retry; the leases they might have been given never became durable).
   */
  private storeFailed(error: unknown, answers: Array<{ requestId: string; answer: Answer }>): void {
    this.options.onError?.(error, 'a lock store commit failed; reloading locks from the store');
    for (const { requestId } of answers) this.resolvePending(requestId, { kind: 'unavailable', detail: 'the lock store failed to commit' });
    if (this.recovering || this.closed) return;
    this.recovering = true;
    this.clearTimer();
    void this.reload();
  }

  private async reload(retryDelayMs = reloadRetryFirstMs): Promise<void> {
    try {
      await this.options.store.settled().catch(() => undefined);
      const snapshot = await this.options.store.load();
      if (this.closed) return;
      this.failAllPending('the lock store failed to commit');
      this.state = restore(this.options.limits, snapshot);
      this.recovering = false;
      this.run({ type: 'tick' });
    } catch (error) {
      this.options.onError?.(error, 'reloading locks from the store failed; retrying');
      this.failAllPending('the lock store is unavailable');
      // Every request answers 503 meanwhile; a store that comes back brings the locks back.
      if (this.closed) return;
      this.timer = this.timers.setTimeout(() => {
        this.timer = null;
        void this.reload(Math.min(retryDelayMs * 2, reloadRetryMaxMs));
      }, retryDelayMs);
    }
  }

  private failAllPending(detail: string): void {
    for (const requestId of [...this.pending.keys()]) this.resolvePending(requestId, { kind: 'unavailable', detail });
  }

  private resolvePending(requestId: string, outcome: Outcome): void {
    const pending = this.pending.get(requestId);
    if (!pending) return;
    this.pending.delete(requestId);
    pending.resolve(outcome);
  }

  private schedule(atMs: number | null): void {
    if (atMs === this.timerAtMs || this.closed) return;
    this.clearTimer();
    if (atMs === null) return;
    this.timerAtMs = atMs;
    this.timer = this.timers.setTimeout(() => {
      this.timer = null;
      this.timerAtMs = null;
      if (!this.closed && !this.recovering) this.run({ type: 'tick' });
    }, Math.max(0, atMs - this.clock()));
  }

  private clearTimer(): void {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.timerAtMs = null;
  }
}

function withoutLeaseId(input: AcquireInput): Omit<AcquireInput, 'leaseId'> {
  const { leaseId: _leaseId, ...rest } = input;
  return rest;
}

export function newId(): string {
  return randomBytes(16).toString('base64url');
}
