// The lock service on a shared store (PostgreSQL or Redis): any number of coordinators serve
// the same locks, and the store is the only truth. A coordinator keeps nothing but its own
// open requests: every acquire, renew and release is one change to the lock name's record in
// the store (see shared-state.ts), and events for one name that arrive in the same turn of the
// event loop share one change (one PostgreSQL transaction, one Redis script pair).
//
// Waiting without polling: a change that touches a queue with requests of other coordinators
// notifies them (PostgreSQL NOTIFY, Redis PUBLISH, carrying the lock name); each re-reads the
// record and answers its requests that were granted. A notification can be lost (a listener
// reconnecting, Redis pub/sub being fire-and-forget), so every name with requests queued here
// is also re-checked at least every `lockRecheckMs`, and at its next store-clock deadline (a
// lease or session running out, which nobody announces). The re-check is a change, not just a
// read: it expires what is due and drops requests of coordinators that stopped heartbeating.
//
// Every coordinator heartbeats into the store (a row or key valid for
// `lockCoordinatorLivenessMs` by the store's clock) and keeps one listening connection open
// (PostgreSQL LISTEN, Redis SUBSCRIBE). A coordinator counts as live while both hold: requests
// queued through one that stopped heartbeating, or whose listening connection is gone (a
// killed process's sockets close at once), are dropped by the next change to their lock. So a
// coordinator killed with waiters leaves no queue blocked for longer than one re-check, and one
// cut off by the network for longer than the liveness window plus one re-check.
import { performance } from 'node:perf_hooks';
import type { LockEvent, LockView, ManagerLimits, Session } from './manager.js';
import { inspect } from './manager.js';
import { deadlineOf, decide, hydrate, type Decision, type RecordView } from './shared-state.js';
import { newId, type AcquireInput, type Locks, type Outcome } from './service.js';

export interface SharedLockBackend {
  readonly kind: 'postgres' | 'redis';
  /**
   * Reads one name's record under the store's serialisation, lets `decide` compute the new one
   * (it may be called again if the store saw a concurrent change) and writes it atomically.
   */
  change(name: string, sessionIds: string[], decide: (view: RecordView) => Decision): Promise<{ view: RecordView; decision: Decision }>;
  /** The record as of now, without taking part in the serialisation. */
  read(name: string, sessionIds: string[]): Promise<RecordView>;
  /** Opens a session unless it exists (then answers it as it is); null when sessionsMax live sessions exist. */
  openSession(sessionId: string, owner: string, ttlMs: number, sessionsMax: number): Promise<{ session: Session; nowMs: number } | null>;
  /** Extends a live session by its TTL from the store's now; null when it is gone. */
  keepalive(sessionId: string): Promise<{ session: Session; nowMs: number } | null>;
  /** Deletes a session if live; answers the lock names it was recorded against (or null if it was not live). */
  closeSession(sessionId: string): Promise<string[] | null>;
  /** Records that this coordinator is alive for `livenessMs` of store time. */
  heartbeat(coordinatorId: string, livenessMs: number): Promise<void>;
  /** Says this coordinator has gone, so its queued requests are dropped at once. */
  leave(coordinatorId: string): Promise<void>;
  /**
   * Calls `onChange(name)` for every notification; `onGap()` when notifications may have been
   * missed. The listening connection also stands for this coordinator's liveness: when the
   * process dies its connection closes, and the store counts it dead at once, without waiting
   * for its heartbeat to lapse.
   */
  listen(coordinatorId: string, onChange: (name: string) => void, onGap: () => void): Promise<void>;
  close(): Promise<void>;
}

export interface SharedLockLimits extends ManagerLimits {
  lockRecheckMs: number;
  lockCoordinatorHeartbeatMs: number;
  lockCoordinatorLivenessMs: number;
  lockEventsPerChangeMax: number;
}

export interface SharedLockServiceOptions {
  backend: SharedLockBackend;
  limits: SharedLockLimits;
  onError?: (error: unknown, context: string) => void;
}

interface Waiting {
  requestId: string;
  leaseId: string;
  name: string;
  sessionId: string | null;
  receivedAtMs: number;
  /** Local monotonic time when the wait ends. */
  deadlinePerfMs: number;
  resolve: (outcome: Outcome) => void;
  timer: NodeJS.Timeout;
  /** We asked the store to take it out of the queue (its wait ended, or its client left). */
  cancelling: boolean;
}

interface QueuedEvent {
  event: LockEvent;
  receivedAtMs: number;
  /** `recheckInMs`: when the name's next store-clock deadline comes, for a request left queued. */
  resolve: (outcome: Outcome | null, recheckInMs: number) => void;
}

interface NameQueue {
  events: QueuedEvent[];
  running: boolean;
  /** A re-check was asked for while a change ran. */
  recheck: boolean;
}

export class SharedLockService implements Locks {
  readonly coordinatorId = newId();
  private nextRequestId = 1;
  private readonly queues = new Map<string, NameQueue>();
  private readonly waiting = new Map<string, Waiting>();
  private readonly waitingByName = new Map<string, Set<string>>();
  private readonly recheckTimers = new Map<string, { timer: NodeJS.Timeout; atPerfMs: number }>();
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private closed = false;

  private constructor(private readonly options: SharedLockServiceOptions) {}

  static async open(options: SharedLockServiceOptions): Promise<SharedLockService> {
    const { lockCoordinatorHeartbeatMs, lockCoordinatorLivenessMs } = options.limits;
    if (lockCoordinatorLivenessMs <= lockCoordinatorHeartbeatMs) {
      throw new Error(`lockCoordinatorLivenessMs (${lockCoordinatorLivenessMs}) must exceed lockCoordinatorHeartbeatMs (${lockCoordinatorHeartbeatMs})`);
    }
    const service = new SharedLockService(options);
    await options.backend.listen(
      service.coordinatorId,
      (name) => service.onNotified(name),
      () => service.recheckAll(),
    );
    await options.backend.heartbeat(service.coordinatorId, options.limits.lockCoordinatorLivenessMs);
    service.heartbeatTimer = setInterval(() => {
      options.backend.heartbeat(service.coordinatorId, options.limits.lockCoordinatorLivenessMs).catch((error: unknown) => options.onError?.(error, 'lock heartbeat failed'));
    }, options.limits.lockCoordinatorHeartbeatMs);
    service.heartbeatTimer.unref();
    return service;
  }

  async acquire(input: AcquireInput, signal?: AbortSignal): Promise<Outcome> {
    const requestId = this.newRequestId();
    const leaseId = input.leaseId ?? newId();
    const receivedAtMs = performance.now();
    const event: LockEvent = {
      type: 'acquire',
      requestId,
      leaseId,
      name: input.name,
      mode: input.mode,
      permits: input.permits,
      ttlMs: input.ttlMs,
      sessionId: input.sessionId,
      owner: input.owner,
      fair: input.fair,
      waitMs: input.waitMs,
    };
    const { outcome: answered, recheckInMs } = await this.submitWithHint(input.name, event);
    if (answered) return answered;
    // Queued in the store: wait for a notification, a re-check or the wait limit.
    return new Promise<Outcome>((resolve) => {
      const deadlinePerfMs = receivedAtMs + input.waitMs;
      const timer = setTimeout(() => void this.cancelWaiting(requestId), Math.max(0, deadlinePerfMs - performance.now()));
      timer.unref();
      const waiting: Waiting = { requestId, leaseId, name: input.name, sessionId: input.sessionId, receivedAtMs, deadlinePerfMs, resolve, timer, cancelling: false };
      this.waiting.set(requestId, waiting);
      const ofName = this.waitingByName.get(input.name) ?? new Set<string>();
      ofName.add(requestId);
      this.waitingByName.set(input.name, ofName);
      this.armRecheck(input.name, recheckInMs);
      if (signal) {
        const onAbort = () => void this.cancelWaiting(requestId);
        if (signal.aborted) onAbort();
        else {
          signal.addEventListener('abort', onAbort, { once: true });
          const original = waiting.resolve;
          waiting.resolve = (outcome) => {
            signal.removeEventListener('abort', onAbort);
            original(outcome);
          };
        }
      }
    });
  }

  async renew(name: string, leaseId: string, ttlMs: number | null): Promise<Outcome> {
    return (await this.submit(name, { type: 'renew', requestId: this.newRequestId(), name, leaseId, ttlMs })) ?? unavailable('the renewal got no answer');
  }

  async release(name: string, leaseId: string): Promise<Outcome> {
    return (await this.submit(name, { type: 'release', requestId: this.newRequestId(), name, leaseId })) ?? unavailable('the release got no answer');
  }

  async openSession(ttlMs: number, owner: string, sessionId = newId()): Promise<Outcome> {
    if (this.closed) return unavailable('the coordinator is shutting down');
    const startedAtMs = performance.now();
    try {
      const opened = await this.options.backend.openSession(sessionId, owner, ttlMs, this.options.limits.lockSessionsMax);
      if (!opened) return { kind: 'too-many', what: 'sessions' };
      return sessionOutcome(opened.session, opened.nowMs, startedAtMs);
    } catch (error) {
      return this.storeError(error, 'opening a lock session failed');
    }
  }

  async keepalive(sessionId: string): Promise<Outcome> {
    if (this.closed) return unavailable('the coordinator is shutting down');
    const startedAtMs = performance.now();
    try {
      const kept = await this.options.backend.keepalive(sessionId);
      if (!kept) return { kind: 'no-session' };
      return sessionOutcome(kept.session, kept.nowMs, startedAtMs);
    } catch (error) {
      return this.storeError(error, 'a session keepalive failed');
    }
  }

  /** Deletes the session, then lets each lock it was recorded against release its leases. */
  async closeSession(sessionId: string): Promise<Outcome> {
    if (this.closed) return unavailable('the coordinator is shutting down');
    try {
      const names = await this.options.backend.closeSession(sessionId);
      if (names === null) return { kind: 'no-session' };
      let releasedCount = 0;
      for (const name of names) {
        const { view, decision } = await this.options.backend.change(name, [], (seen) => decide(this.options.limits, name, seen, [], this.coordinatorId));
        releasedCount += decision.effects.filter((effect) => effect.type === 'expire' && effect.lease.sessionId === sessionId).length;
        this.settle(name, decision, view);
      }
      return { kind: 'session-closed', releasedCount };
    } catch (error) {
      return this.storeError(error, 'closing a lock session failed');
    }
  }

  /** The lock as the store holds it now (store clock), with nothing past its deadline shown. */
  async inspect(name: string): Promise<LockView & { nowMs: number }> {
    const view = await this.options.backend.read(name, []);
    const decision = decide(this.options.limits, name, view, [], this.coordinatorId);
    const state = hydrate(this.options.limits, name, { ...view, record: decision.record });
    return { ...inspect(state, name), nowMs: view.nowMs };
  }

  /** Requests this coordinator has queued in the store, for metrics and tests. */
  counts(): { leases: number; waiters: number; sessions: number; locks: number } {
    return { leases: 0, waiters: this.waiting.size, sessions: 0, locks: this.waitingByName.size };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    for (const { timer } of this.recheckTimers.values()) clearTimeout(timer);
    this.recheckTimers.clear();
    for (const requestId of [...this.waiting.keys()]) this.resolveWaiting(requestId, unavailable('the coordinator is shutting down'));
    // Bounded: each queue drains its current batch; nothing new is accepted once closed.
    for (let pass = 0; pass < 100 && [...this.queues.values()].some((queue) => queue.running); pass++) await new Promise((resolve) => setTimeout(resolve, 10));
    await this.options.backend.leave(this.coordinatorId).catch(() => undefined);
    await this.options.backend.close();
  }

  private newRequestId(): string {
    return `${this.coordinatorId}.${this.nextRequestId++}`;
  }

  /**
   * Queues an event for its name; the name's next change carries it. Resolves with the event's
   * answer, or null when an acquire was queued in the store instead.
   */
  private async submit(name: string, event: LockEvent): Promise<Outcome | null> {
    return (await this.submitWithHint(name, event)).outcome;
  }

  private submitWithHint(name: string, event: LockEvent): Promise<{ outcome: Outcome | null; recheckInMs: number }> {
    if (this.closed) return Promise.resolve({ outcome: unavailable('the coordinator is shutting down'), recheckInMs: 0 });
    return new Promise((resolve) => {
      const queue = this.queueOf(name);
      queue.events.push({ event, receivedAtMs: performance.now(), resolve: (outcome, recheckInMs) => resolve({ outcome, recheckInMs }) });
      if (!queue.running) void this.drain(name, queue);
    });
  }

  private queueOf(name: string): NameQueue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = { events: [], running: false, recheck: false };
      this.queues.set(name, queue);
    }
    return queue;
  }

  /** One change at a time per name from this coordinator: they would serialise in the store anyway. */
  private async drain(name: string, queue: NameQueue): Promise<void> {
    queue.running = true;
    // Let the rest of this turn's requests for the name join the change.
    await new Promise((resolve) => setImmediate(resolve));
    // Bounded: each pass takes up to lockEventsPerChangeMax events, or one re-check.
    for (let pass = 0; pass < 10_000 && (queue.events.length > 0 || queue.recheck); pass++) {
      const batch = queue.events.splice(0, this.options.limits.lockEventsPerChangeMax);
      queue.recheck = false;
      const sessionIds = batch.flatMap(({ event }) => (event.type === 'acquire' && event.sessionId !== null ? [event.sessionId] : []));
      try {
        const { view, decision } = await this.options.backend.change(name, sessionIds, (seen) => decide(this.options.limits, name, seen, batch.map(({ event }) => event), this.coordinatorId));
        const recheckInMs = this.recheckIn(decision, view);
        for (const queued of batch) queued.resolve(this.answerOf(queued, view, decision), recheckInMs);
        this.settle(name, decision, view);
      } catch (error) {
        for (const queued of batch) queued.resolve(this.storeError(error, 'a lock change failed'), 0);
      }
    }
    queue.running = false;
    if (queue.events.length === 0 && !queue.recheck) this.queues.delete(name);
    else void this.drain(name, queue);
  }

  /** The answer to one event of a change, or null when an acquire was queued. */
  private answerOf(queued: QueuedEvent, view: RecordView, decision: Decision): Outcome | null {
    if (queued.event.type === 'tick') return null;
    const requestId = queued.event.requestId;
    const effect = decision.effects.find((candidate) => (candidate.type === 'reply' || candidate.type === 'wake') && candidate.requestId === requestId);
    const elapsedMs = performance.now() - queued.receivedAtMs;
    if (!effect) return queued.event.type === 'acquire' ? null : unavailable('the lock change gave no answer');
    if (effect.type === 'wake') return grantedOutcome(view, decision, effect.lease.leaseId, effect.waitedMs, elapsedMs);
    if (effect.type !== 'reply') return null;
    const answer = effect.answer;
    switch (answer.kind) {
      case 'granted':
        return grantedOutcome(view, decision, answer.lease.leaseId, answer.waitedMs, elapsedMs);
      case 'renewed': {
        const remainingMs = answer.expiresAtMs - view.nowMs;
        if (remainingMs <= 0) return { kind: 'not-holder' };
        return { kind: 'renewed', lease: answer.lease, ttlRemainingMs: remainingMs, elapsedMs };
      }
      case 'session':
      case 'session-closed':
        return unavailable('unexpected session answer from a lock change');
      default:
        return answer;
    }
  }

  /** After a change: answer requests of ours it granted or ended, and plan the next re-check. */
  private settle(name: string, decision: Decision, view: RecordView): void {
    const ofName = this.waitingByName.get(name);
    if (!ofName || ofName.size === 0) return;
    for (const requestId of [...ofName]) {
      const waiting = this.waiting.get(requestId)!;
      const wake = decision.effects.find((effect) => effect.type === 'wake' && effect.requestId === requestId);
      const lease = decision.record.leases.find((candidate) => candidate.leaseId === waiting.leaseId);
      const elapsedMs = performance.now() - waiting.receivedAtMs;
      if (lease) {
        this.resolveWaiting(requestId, grantedOutcome(view, decision, lease.leaseId, wake?.type === 'wake' ? wake.waitedMs : elapsedMs, elapsedMs));
      } else if (!decision.record.waiters.some((waiter) => waiter.requestId === requestId)) {
        this.resolveWaiting(requestId, this.goneOutcome(waiting, decision));
      }
    }
    if (this.waitingByName.get(name)?.size) this.armRecheck(name, this.recheckIn(decision, view));
  }

  /** The next re-check of a name: at its next store-clock deadline, and within lockRecheckMs at most. */
  private recheckIn(decision: Decision, view: RecordView): number {
    // 1 ms past the deadline: the store must see it as passed (now >= deadline) when we look.
    const untilDeadlineMs = decision.nextDeadlineMs !== null ? Math.max(0, decision.nextDeadlineMs - view.nowMs) + 1 : Infinity;
    return Math.min(this.options.limits.lockRecheckMs, untilDeadlineMs);
  }

  /** A request of ours left the queue without a grant: say why as well as the record allows. */
  private goneOutcome(waiting: Waiting, decision: Decision): Outcome {
    const reply = decision.effects.find((effect) => effect.type === 'reply' && effect.requestId === waiting.requestId);
    const dropped = unavailable('the request was dropped from the shared queue (this coordinator missed its heartbeat); acquire again');
    if (reply?.type === 'reply') {
      // A cancel we did not ask for is the store dropping the request of a coordinator it thinks dead.
      if (reply.answer.kind === 'cancelled') return waiting.cancelling ? { kind: 'busy', reason: 'wait-limit' } : dropped;
      return reply.answer as Outcome;
    }
    if (waiting.sessionId !== null && !decision.sessionIds.includes(waiting.sessionId) && decision.sessionEnds.includes(waiting.sessionId)) return { kind: 'no-session' };
    if (performance.now() >= waiting.deadlinePerfMs - this.options.limits.lockRecheckMs) return { kind: 'busy', reason: 'wait-limit' };
    return dropped;
  }

  private resolveWaiting(requestId: string, outcome: Outcome): void {
    const waiting = this.waiting.get(requestId);
    if (!waiting) return;
    this.waiting.delete(requestId);
    clearTimeout(waiting.timer);
    const ofName = this.waitingByName.get(waiting.name);
    ofName?.delete(requestId);
    if (ofName && ofName.size === 0) {
      this.waitingByName.delete(waiting.name);
      const recheck = this.recheckTimers.get(waiting.name);
      if (recheck) clearTimeout(recheck.timer);
      this.recheckTimers.delete(waiting.name);
    }
    waiting.resolve(outcome);
  }

  /** Takes a queued request out of the store's queue; whatever the change shows decides the answer. */
  private async cancelWaiting(requestId: string): Promise<void> {
    const waiting = this.waiting.get(requestId);
    if (!waiting || this.closed) return;
    waiting.cancelling = true;
    const answer = await this.submit(waiting.name, { type: 'cancel', requestId });
    // The change's settle answered it (granted, or gone); a failed store answers 503.
    if (this.waiting.has(requestId)) this.resolveWaiting(requestId, answer && answer.kind === 'unavailable' ? answer : { kind: 'busy', reason: 'wait-limit' });
  }

  private armRecheck(name: string, inMs: number): void {
    if (this.closed) return;
    const atPerfMs = performance.now() + inMs;
    const current = this.recheckTimers.get(name);
    if (current && current.atPerfMs <= atPerfMs) return;
    if (current) clearTimeout(current.timer);
    const timer = setTimeout(() => {
      this.recheckTimers.delete(name);
      this.recheck(name);
    }, inMs);
    timer.unref();
    this.recheckTimers.set(name, { timer, atPerfMs });
  }

  private recheck(name: string): void {
    if (this.closed || !this.waitingByName.get(name)?.size) return;
    const queue = this.queueOf(name);
    queue.recheck = true;
    if (!queue.running) void this.drain(name, queue);
  }

  private recheckAll(): void {
    for (const name of this.waitingByName.keys()) this.recheck(name);
  }

  /**
   * Another coordinator changed a queue we wait in: a read (no lock, no write) shows whether a
   * request of ours was granted, and answers it. A request that left the queue without a grant
   * is settled by a change instead, which can tell why.
   */
  private onNotified(name: string): void {
    if (this.closed || !this.waitingByName.get(name)?.size) return;
    this.options.backend.read(name, []).then(
      (view) => {
        let unexplained = false;
        for (const requestId of [...(this.waitingByName.get(name) ?? [])]) {
          const waiting = this.waiting.get(requestId)!;
          const lease = view.record.leases.find((candidate) => candidate.leaseId === waiting.leaseId);
          if (lease) {
            const elapsedMs = performance.now() - waiting.receivedAtMs;
            const remainingMs = deadlineOf(view, lease) - view.nowMs;
            this.resolveWaiting(requestId, remainingMs > 0 ? { kind: 'granted', lease, waitedMs: elapsedMs, ttlRemainingMs: remainingMs, elapsedMs } : { kind: 'expired-before-answer' });
          } else if (!view.record.waiters.some((waiter) => waiter.requestId === requestId)) {
            unexplained = true;
          }
        }
        if (unexplained) this.recheck(name);
      },
      (error: unknown) => {
        this.options.onError?.(error, 'reading a lock after a notification failed');
        this.recheck(name);
      },
    );
  }

  private storeError(error: unknown, context: string): Outcome {
    this.options.onError?.(error, context);
    return unavailable('the lock store is unavailable');
  }
}

function grantedOutcome(view: RecordView, decision: Decision, leaseId: string, waitedMs: number, elapsedMs: number): Outcome {
  const lease = decision.record.leases.find((candidate) => candidate.leaseId === leaseId);
  if (!lease) return { kind: 'expired-before-answer' };
  const sessions = new Map(view.sessions);
  for (const session of decision.sessionExtends) sessions.set(session.sessionId, session);
  const remainingMs = deadlineOf({ ...view, sessions }, lease) - view.nowMs;
  if (remainingMs <= 0) return { kind: 'expired-before-answer' };
  return { kind: 'granted', lease, waitedMs, ttlRemainingMs: remainingMs, elapsedMs };
}

function sessionOutcome(session: Session, nowMs: number, startedAtMs: number): Outcome {
  const remainingMs = session.expiresAtMs - nowMs;
  if (remainingMs <= 0) return { kind: 'no-session' };
  return { kind: 'session', session, ttlRemainingMs: remainingMs, elapsedMs: performance.now() - startedAtMs };
}

function unavailable(detail: string): Outcome {
  return { kind: 'unavailable', detail };
}

