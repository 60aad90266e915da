// The shell around the pure transaction machines: it persists every new state before
// performing the calls that state allows, performs the calls, feeds their answers back, and
// wakes transactions whose retry or deadline has come (from a timer, and from a periodic scan
// of the store that also resumes whatever a crashed process left unfinished), and deletes
// finished transactions once their retention has passed (one bounded batch per interval).
import { realTimers, type Timers } from '../shared/timers.js';
import { Ownership } from '../cluster/ownership.js';
import { step, newTx, type NewTx } from './machine.js';
import { assert } from './rounds.js';
import type { AnyTxEvent, BranchCall, CallResult, HistoryEntry, Mode, StepContext, StepRefusal, StepResult, Tx } from './types.js';
import { isFinal } from './types.js';
import type { Store } from '../store/store.js';
import { failpoint, failpointsArmed } from '../shared/failpoints.js';
import { createHash } from 'node:crypto';
import { HostClock, type EngineClock } from './store-clock.js';
import { purgeRequestAt } from './retention.js';

/** What the shell tells a branch call besides the call itself. */
export interface CallContext {
  /**
   * The lease epoch of the instance making the call: it strictly increases each time the
   * transaction's lease passes to another holder (or the holder restarts), so a participant
   * can refuse calls from a coordinator that has lost the lease (header `tandem-fence`).
   */
  fence: number;
  /** W3C trace context of this call's span, handed to the participant. */
  traceparent?: string;
}

export interface BranchCaller {
  call(tx: Tx, call: BranchCall, context: CallContext): Promise<CallResult>;
}

/** Timers, injected so a simulation can run the engine on virtual time. */
export type EngineTimers = Timers;

export interface EngineObserver {
  txEnded?(mode: Mode, status: 'succeeded' | 'failed'): void;
  branchCalled?(mode: Mode, op: string, outcome: CallResult['outcome'], durationMs: number): void;
  retryScheduled?(mode: Mode): void;
  /** A purge batch deleted `count` finished transactions (told only when count > 0). */
  purged?(count: number): void;
  /** A due transaction was looked at (workflows: it may now want a worker). */
  woken?(tx: Tx): void;
}

/** Tries at start to read the shared clock before giving up (one heartbeat interval apart). */
const clockSyncAttemptsMax = 30;

export interface EngineLimits {
  /** Transactions the engine works on at once; beyond it new ones get 503 and recovery waits. */
  activeTransactionsMax: number;
  /** How often the store is scanned for due retries, deadlines and work left by a crash. */
  recoveryIntervalMs: number;
  /** Result long polls waiting at once. */
  resultWaitersMax: number;
  /** Transactions taken per scan. */
  recoveryBatchMax: number;
  /** The lease an instance takes on a transaction it works on; renewed every third of it while calls are in flight. */
  leaseMs: number;
  /** Instances one branch call may try; a round lasts at most this many request timeouts. */
  failoverAttemptsMax: number;
  /** How often this instance records that it is alive. */
  heartbeatIntervalMs: number;
  /** An instance silent for this long is dead: its share of recovery work moves to the others. */
  instanceTtlMs: number;
  /** Finished transactions are deleted this long after they finished; 0 keeps them all. */
  finishedRetentionMs: number;
  /** Finished transactions one purge batch deletes at most. */
  purgeBatchMax: number;
  /** How often one purge batch runs (each waits for the previous one to end). */
  purgeIntervalMs: number;
}

export type ApplyOutcome =
  | { kind: 'ok'; tx: Tx }
  | { kind: 'not-found' }
  | { kind: 'refused'; tx: Tx; error: StepRefusal };

export class OverloadedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OverloadedError';
  }
}

export class GidTakenError extends Error {
  constructor(gid: string) {
    super(`a transaction with gid ${gid} exists already`);
    this.name = 'GidTakenError';
  }
}

/** Another instance holds the transaction's lease; the request may be retried. */
export class BusyError extends Error {
  constructor(gid: string) {
    super(`transaction ${gid} is being worked on by another coordinator instance; retry shortly`);
    this.name = 'BusyError';
  }
}

/** Another writer changed the transaction between our read and our write. */
export class VersionConflictError extends Error {
  constructor(gid: string) {
    super(`transaction ${gid} was changed by another writer`);
    this.name = 'VersionConflictError';
  }
}

/**
 * Shutdown gave up waiting for this round: what it learns is not written, so the transaction
 * keeps the state and lease it had, and another instance takes it over once the lease expires.
 */
export class AbandonedAtShutdownError extends Error {
  constructor(gid: string) {
    super(`the round of transaction ${gid} outlasted the shutdown drain; left to the next lease holder`);
    this.name = 'AbandonedAtShutdownError';
  }
}

export interface EngineDeps {
  store: Store;
  /** This coordinator's name in leases and heartbeats; unique among instances sharing a store. */
  instanceId: string;
  caller: BranchCaller;
  limits: EngineLimits;
  observer?: EngineObserver;
  /** Host clock for tests; ignored when `clock` is given. */
  nowMs?: () => number;
  /** The clock leases, deadlines and heartbeats are read from (default: the host's). */
  clock?: EngineClock;
  timers?: EngineTimers;
  random?: () => number;
  onError?: (error: unknown, gid: string) => void;
}

export class Engine {
  private readonly store: Store;
  readonly instanceId: string;
  private readonly caller: BranchCaller;
  private readonly limits: EngineLimits;
  private readonly observer: EngineObserver;
  private readonly clock: EngineClock;
  private readonly timers: EngineTimers;
  private readonly random: () => number;
  private readonly onError: (error: unknown, gid: string) => void;
  /** Per-gid chain of work, so events for one transaction never interleave. */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly wakeTimers = new Map<string, unknown>();
  private readonly endWaiters = new Map<string, Set<(tx: Tx) => void>>();
  private endWaiterCount = 0;
  private recoveryTimer: unknown = null;
  private heartbeatTimer: unknown = null;
  private purgeTimer: unknown = null;
  private recovering = false;
  /** The purge batch in flight, so batches never overlap and stop() can wait for it. */
  private purgeInFlight: Promise<number> | null = null;
  /** Resolves once the shared clock is known; requests wait for it (null before start()). */
  private clockKnown: Promise<void> | null = null;
  private stopped = false;
  /** Set when stop() stops waiting for rounds in flight: nothing they learn afterwards is written. */
  private abandoned = false;
  /** Resolves when shutdown begins: open result long polls then answer with the state they see. */
  private stopping: Promise<void>;
  private signalStopping: () => void = () => undefined;

  constructor(deps: EngineDeps) {
    this.store = deps.store;
    this.instanceId = deps.instanceId;
    this.caller = deps.caller;
    this.limits = deps.limits;
    this.observer = deps.observer ?? {};
    this.clock = deps.clock ?? new HostClock(deps.nowMs ?? Date.now);
    this.timers = deps.timers ?? realTimers;
    this.random = deps.random ?? Math.random;
    this.onError = deps.onError ?? (() => undefined);
    this.stopping = new Promise<void>((resolve) => (this.signalStopping = resolve));
  }

  get activeCount(): number {
    return this.chains.size;
  }

  private nowMs(): number {
    return this.clock.nowMs();
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.abandoned = false;
    this.stopping = new Promise<void>((resolve) => (this.signalStopping = resolve));
    this.clockKnown = this.syncClockFirst();
    await this.clockKnown;
    await this.heartbeat();
    const beat = () => {
      if (!this.stopped) this.heartbeatTimer = this.timers.setTimeout(() => void this.heartbeat().then(beat), this.limits.heartbeatIntervalMs);
    };
    beat();
    void this.recover();
    const scan = () => {
      if (!this.stopped) this.recoveryTimer = this.timers.setTimeout(() => void this.recover().then(scan), this.limits.recoveryIntervalMs);
    };
    scan();
    if (this.limits.finishedRetentionMs > 0) {
      const purge = () => {
        if (!this.stopped) this.purgeTimer = this.timers.setTimeout(() => void this.purgeFinished().then(purge), this.limits.purgeIntervalMs);
      };
      purge();
    }
  }

  /**
   * No lease or deadline may be judged before the shared clock is known: until the first
   * measurement succeeds the instance takes no work (a store down at start fails start()).
   */
  private async syncClockFirst(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.clock.sync();
        return;
      } catch (error) {
        if (attempt >= clockSyncAttemptsMax) throw error;
        await new Promise<void>((resolve) => this.timers.setTimeout(resolve, this.limits.heartbeatIntervalMs));
      }
    }
  }

  /** Re-reads the shared clock, then records that this instance is alive. */
  private async heartbeat(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.clock.sync();
    } catch (error) {
      this.onError(error, '(clock sync)');
    }
    try {
      await this.store.heartbeat(this.instanceId, this.nowMs());
    } catch (error) {
      this.onError(error, '(heartbeat)');
    }
  }

  /**
   * Stops taking new work and waits up to `drainMs` for the rounds in flight, each of which
   * gives up its lease when it ends; a round still running at the deadline keeps its lease
   * until it expires (another instance then takes over). Then leaves the instance list.
   */
  async stop(drainMs = Number.POSITIVE_INFINITY): Promise<{ drained: boolean }> {
    this.beginStop();
    if (this.recoveryTimer) this.timers.clearTimeout(this.recoveryTimer);
    if (this.heartbeatTimer) this.timers.clearTimeout(this.heartbeatTimer);
    if (this.purgeTimer) this.timers.clearTimeout(this.purgeTimer);
    for (const timer of this.wakeTimers.values()) this.timers.clearTimeout(timer);
    this.wakeTimers.clear();
    const inFlight = Promise.allSettled([...this.chains.values()]).then(() => true);
    let deadline: unknown = null;
    const drained = Number.isFinite(drainMs)
      ? await Promise.race([inFlight, new Promise<boolean>((resolve) => (deadline = this.timers.setTimeout(() => resolve(false), drainMs)))])
      : await inFlight;
    if (deadline) this.timers.clearTimeout(deadline);
    if (!drained) this.abandoned = true;
    // A purge batch is one short statement: let it end before the store closes.
    if (this.purgeInFlight) await this.purgeInFlight;
    await this.store.removeInstance(this.instanceId).catch((error: unknown) => this.onError(error, '(shutdown)'));
    return { drained };
  }

  /**
   * Takes no new work from here on and answers the open result long polls with the state they
   * see, so an HTTP server closing in front of the engine need not wait out their timeouts.
   * Rounds in flight go on; stop() waits for them.
   */
  beginStop(): void {
    this.stopped = true;
    this.signalStopping();
  }

  private refuseWhenStopped(): void {
    // Requests can still arrive while the HTTP server closes; each would start work no one drains.
    if (this.stopped) throw new OverloadedError('this coordinator is shutting down; retry on another instance');
  }

  /**
   * Writes a new transaction and, for modes that start at once, submits it in the same write.
   * Resolves once durable (or, with waitForRound, once its first rounds of calls are done).
   */
  /**
   * `traceparent` is the span the create request ran in: kept with the transaction (outside
   * the request digest, since a retried request comes with a new span) so every branch call
   * continues that trace.
   */
  async create(spec: NewTx, opts: { submit: boolean; waitForRound: boolean; traceparent?: string | null }): Promise<Tx> {
    this.refuseWhenStopped();
    if (this.chains.size >= this.limits.activeTransactionsMax && !this.chains.has(spec.gid)) {
      throw new OverloadedError(`activeTransactionsMax (${this.limits.activeTransactionsMax}) transactions are in progress; retry later`);
    }
    const digest = requestDigestOf(spec, opts.submit);
    return this.exclusive<Tx>(spec.gid, opts.waitForRound, async (reply) => {
      await this.clockKnown;
      const traced = opts.traceparent ? { extra: { ...spec.extra, traceparent: opts.traceparent } } : {};
      const created = { ...newTx(spec, this.nowMs()), ...traced, requestDigest: digest, createAttempt: this.random().toString(36).slice(2, 12) };
      const result = opts.submit ? step(created, { type: 'submit' }, this.ctx()) : { ok: true as const, tx: created, calls: [] };
      assert(result.ok, 'a new transaction accepts submit');
      const tx = { ...result.tx, version: 1, lease: result.calls.length > 0 ? this.leaseFor() : null };
      const inserted = await this.insertResolvingUnknown(tx);
      if (inserted !== 'inserted') {
        // A retry of the same request gets the transaction its first attempt made.
        if (inserted.requestDigest !== digest) throw new GidTakenError(spec.gid);
        reply(inserted, false);
        return inserted;
      }
      reply(tx, true);
      return this.runCalls(tx, result.calls, tx.version);
    }, (tx) => tx);
  }

  /**
   * Inserts, and when the store's answer is lost (an error whose outcome is unknown: a
   * reconnect that resent the command, a lost COMMIT acknowledgement), reads back whether the
   * write happened before answering. Returns the stored transaction when the gid was taken.
   */
  private async insertResolvingUnknown(tx: Tx): Promise<'inserted' | Tx> {
    let inserted: boolean;
    try {
      inserted = await this.store.insert(tx, historyBetween(null, tx, this.nowMs()));
    } catch (error) {
      const stored = await this.store.get(tx.gid).catch(() => null);
      if (!stored) throw error;
      return isOwnWrite(stored, tx) ? 'inserted' : stored;
    }
    if (inserted) return 'inserted';
    // A client that resent the insert after a reconnect sees its own first write as taken.
    const stored = await this.store.get(tx.gid);
    if (!stored) throw new GidTakenError(tx.gid);
    return isOwnWrite(stored, tx) ? 'inserted' : stored;
  }

  /** Applies an API event (register, submit, abort, forceStop, retryNow) to a stored transaction. */
  async apply(gid: string, event: AnyTxEvent, opts: { waitForRound: boolean }): Promise<ApplyOutcome> {
    return this.operate(gid, (tx, ctx) => step(tx, event, ctx), opts);
  }

  /**
   * Applies a pure change (an API event's step, or an operator's force-stop or retry-now from
   * tx/operator.ts) to a stored transaction, under the same exclusivity, lease and persistence.
   */
  async operate(gid: string, change: (tx: Tx, ctx: StepContext) => StepResult, opts: { waitForRound: boolean }): Promise<ApplyOutcome> {
    this.refuseWhenStopped();
    return this.exclusive<ApplyOutcome>(gid, opts.waitForRound, async (reply) => {
      await this.clockKnown;
      const tx = await this.store.claim(gid, this.instanceId, this.nowMs(), this.nowMs() + this.limits.leaseMs);
      if (!tx) {
        if (await this.store.get(gid)) throw new BusyError(gid);
        reply({ kind: 'not-found' }, false);
        return null;
      }
      const result = change(tx, this.ctx());
      if (!result.ok) {
        reply({ kind: 'refused', tx, error: result.error }, false);
        return this.releaseLease(tx);
      }
      const saved = await this.persist(tx, result.tx, result.calls.length > 0);
      reply({ kind: 'ok', tx: saved }, true);
      return this.runCalls(saved, result.calls, tx.version);
    }, (tx) => ({ kind: 'ok', tx }));
  }

  /** Looks at a transaction whose timer fired or that the recovery scan found due. */
  wake(gid: string): void {
    if (this.stopped || this.chains.has(gid)) return;
    void this.exclusive<null>(gid, false, async (reply) => {
      reply(null, false);
      const tx = await this.store.claim(gid, this.instanceId, this.nowMs(), this.nowMs() + this.limits.leaseMs);
      if (!tx) return null;
      if (isFinal(tx)) return this.releaseLease(tx);
      const result = step(tx, { type: 'wake' }, this.ctx());
      assert(result.ok, 'wake is accepted in every state');
      const saved = await this.persist(tx, result.tx, result.calls.length > 0);
      const ran = await this.runCalls(saved, result.calls, tx.version);
      this.observer.woken?.(ran);
      return ran;
    }, () => null).catch((error: unknown) => this.onError(error, gid));
  }

  /** Resumes every due transaction in the store, up to the capacity left. */
  async recover(): Promise<void> {
    if (this.recovering || this.stopped) return;
    this.recovering = true;
    try {
      const room = Math.min(this.limits.activeTransactionsMax - this.chains.size, this.limits.recoveryBatchMax);
      if (room <= 0) return;
      const nowMs = this.nowMs();
      const live = new Set(await this.store.liveInstances(nowMs - this.limits.instanceTtlMs));
      live.add(this.instanceId);
      const ownership = new Ownership([...live].sort());
      // Each instance reads the due work of all and keeps its own share, so the window grows
      // with the number of instances.
      const gids = await this.store.due(nowMs, room * live.size, this.instanceId);
      let taken = 0;
      for (const gid of gids) {
        if (taken >= room) break;
        if (ownership.ownerOf(gid) !== this.instanceId || this.chains.has(gid)) continue;
        this.wake(gid);
        taken += 1;
      }
    } catch (error) {
      this.onError(error, '(recovery scan)');
    } finally {
      this.recovering = false;
    }
  }

  /**
   * Runs one purge batch: deletes up to purgeBatchMax transactions that finished more than
   * finishedRetentionMs ago on the engine's clock. A batch asked for while one is in flight
   * joins it. Resolves with how many it deleted (0 after an error, which is reported).
   */
  purgeFinished(): Promise<number> {
    if (this.purgeInFlight) return this.purgeInFlight;
    if (this.stopped || this.limits.finishedRetentionMs === 0) return Promise.resolve(0);
    const run = this.purgeBatch().finally(() => {
      if (this.purgeInFlight === run) this.purgeInFlight = null;
    });
    this.purgeInFlight = run;
    return run;
  }

  private async purgeBatch(): Promise<number> {
    try {
      await this.clockKnown;
      const request = purgeRequestAt(this.nowMs(), this.limits.finishedRetentionMs, this.limits.purgeBatchMax);
      if (!request) return 0;
      const purged = await this.store.purgeFinished(request);
      if (purged > 0) this.observer.purged?.(purged);
      return purged;
    } catch (error) {
      this.onError(error, '(purge)');
      return 0;
    }
  }

  /**
   * Runs `work` after any earlier work on the same gid. `reply` lets the caller answer early
   * (once the state is durable) while the calls go on under the same exclusivity. With
   * `waitForRound`, an answer that calls follow waits for them, and `afterRound` reports the
   * state they left.
   */
  private exclusive<T>(
    gid: string,
    waitForRound: boolean,
    work: (reply: (value: T, callsFollow: boolean) => void) => Promise<Tx | null>,
    afterRound: (tx: Tx) => T,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let replied = false;
      // The answer held back while calls run: the state is durable, so if the calls then fail
      // (a store outage mid-round), the caller still learns what was accepted, not an error.
      let held: { value: T } | null = null;
      const reply = (value: T, callsFollow: boolean) => {
        if (replied) return;
        if (waitForRound && callsFollow) {
          held = { value };
          return;
        }
        replied = true;
        resolve(value);
      };
      const previous = this.chains.get(gid) ?? Promise.resolve();
      const run = previous.then(async () => {
        try {
          const last = await work(reply);
          if (!replied) {
            replied = true;
            if (last) resolve(afterRound(last));
            else reject(new Error(`transaction ${gid} vanished while being worked on`));
          }
        } catch (error) {
          if (!replied && held) {
            replied = true;
            resolve((held as { value: T }).value);
            this.onError(error, gid);
          } else if (!replied) {
            replied = true;
            reject(error);
          } else {
            this.onError(error, gid);
          }
        }
      });
      this.chains.set(gid, run);
      void run.then(() => {
        if (this.chains.get(gid) === run) this.chains.delete(gid);
      });
    });
  }

  /** Makes calls round after round until the machine asks for none, then arms the wake timer. */
  private async runCalls(start: Tx, firstCalls: BranchCall[], fence: number): Promise<Tx> {
    let tx = start;
    let calls = firstCalls;
    while (calls.length > 0 && !this.stopped) {
      const round = await this.callRound(tx, calls, fence);
      tx = round.tx;
      const results = round.results;
      const result = step(tx, { type: 'results', results }, this.ctx());
      assert(result.ok, 'results are accepted in every state');
      tx = await this.persist(tx, result.tx, result.calls.length > 0);
      calls = result.calls;
      if (calls.length === 0 && !isFinal(tx)) this.observer.retryScheduled?.(tx.mode);
    }
    // Stopped with calls not made: the transaction is handed back due now, so the instance
    // that takes it over need not wait out the watchdog set for calls that never went out.
    tx = await this.releaseLease(tx, calls.length > 0 ? this.nowMs() : null);
    this.armTimer(tx);
    return tx;
  }

  /**
   * Makes one round of calls, renewing the lease every third of leaseMs while they are in
   * flight, so the lease need not be sized for the slowest round. A renewal refused (another
   * instance took the lease, which can only happen once it expired) fails the round.
   */
  private async callRound(tx: Tx, calls: BranchCall[], fence: number): Promise<{ tx: Tx; results: CallResult[] }> {
    let current = tx;
    let renewal: Promise<void> = Promise.resolve();
    let lost: unknown = null;
    let timer: unknown = null;
    const renewEveryMs = Math.max(1, Math.floor(this.limits.leaseMs / 3));
    const schedule = () => {
      timer = this.timers.setTimeout(() => {
        timer = null;
        renewal = renewal.then(async () => {
          try {
            current = await this.renewLease(current);
            if (!done) schedule();
          } catch (error) {
            lost = error;
          }
        });
      }, renewEveryMs);
    };
    let done = false;
    if (current.lease?.owner === this.instanceId) schedule();
    const results = await Promise.all(calls.map((call) => this.timedCall(current, call, fence)));
    done = true;
    if (timer) this.timers.clearTimeout(timer);
    await renewal;
    if (lost) throw lost;
    return { tx: current, results };
  }

  private async renewLease(tx: Tx): Promise<Tx> {
    if (this.abandoned) throw new AbandonedAtShutdownError(tx.gid);
    const renewed = { ...tx, version: tx.version + 1, lease: this.leaseFor() };
    if (!(await this.store.update(renewed, tx.version, []))) throw new VersionConflictError(tx.gid);
    return renewed;
  }

  private async timedCall(tx: Tx, call: BranchCall, fence: number): Promise<CallResult> {
    const startedMs = performance.now();
    const result = await this.caller.call(tx, call, { fence });
    this.observer.branchCalled?.(tx.mode, call.op, result.outcome, performance.now() - startedMs);
    return result;
  }

  /**
   * Writes `next` if it differs from `previous`, renewing this instance's lease when calls
   * follow and giving it up otherwise; the write is durable when this resolves.
   */
  private async persist(previous: Tx, next: Tx, callsFollow: boolean): Promise<Tx> {
    if (next === previous) return previous;
    if (this.abandoned) throw new AbandonedAtShutdownError(previous.gid);
    const lease = callsFollow && !isFinal(next) ? this.leaseFor() : null;
    const versioned = { ...next, version: previous.version + 1, lease };
    const written = await this.store.update(versioned, previous.version, historyBetween(previous, versioned, this.nowMs()));
    if (!written) throw new VersionConflictError(previous.gid);
    if (failpointsArmed()) failpoint(`after-persist:${versioned.status}/${versioned.phase}`);
    if (isFinal(versioned) && !isFinal(previous)) this.ended(versioned);
    return versioned;
  }

  private leaseFor(): { owner: string; untilMs: number } {
    return { owner: this.instanceId, untilMs: this.nowMs() + this.limits.leaseMs };
  }

  /** Gives up this instance's lease when the work on a transaction pauses (optionally due at `dueAtMs`). */
  private async releaseLease(tx: Tx, dueAtMs: number | null = null): Promise<Tx> {
    if (tx.lease?.owner !== this.instanceId) return tx;
    if (this.abandoned) throw new AbandonedAtShutdownError(tx.gid);
    const due = dueAtMs !== null && tx.nextAttemptAtMs !== null ? { nextAttemptAtMs: Math.min(tx.nextAttemptAtMs, dueAtMs) } : {};
    const released = { ...tx, ...due, version: tx.version + 1, lease: null };
    if (!(await this.store.update(released, tx.version, []))) throw new VersionConflictError(tx.gid);
    return released;
  }

  private ended(tx: Tx): void {
    this.observer.txEnded?.(tx.mode, tx.status as 'succeeded' | 'failed');
    const waiters = this.endWaiters.get(tx.gid);
    if (!waiters) return;
    this.endWaiters.delete(tx.gid);
    for (const resolve of waiters) resolve(tx);
  }

  /**
   * Resolves with the transaction once it has ended, or with its state when `timeoutMs` passes
   * (null if it does not exist). Waiters are told by the engine, not by polling the store.
   */
  async waitForEnd(gid: string, timeoutMs: number): Promise<Tx | null> {
    if (this.endWaiterCount >= this.limits.resultWaitersMax) {
      throw new OverloadedError(`resultWaitersMax (${this.limits.resultWaitersMax}) result waits are open; retry later`);
    }
    this.endWaiterCount += 1;
    try {
      return await this.waitForEndCounted(gid, timeoutMs);
    } finally {
      this.endWaiterCount -= 1;
    }
  }

  private async waitForEndCounted(gid: string, timeoutMs: number): Promise<Tx | null> {
    let resolveEnded: (tx: Tx) => void = () => undefined;
    const endedPromise = new Promise<Tx>((resolve) => (resolveEnded = resolve));
    const waiters = this.endWaiters.get(gid) ?? new Set();
    waiters.add(resolveEnded);
    this.endWaiters.set(gid, waiters);
    let timer: NodeJS.Timeout | undefined;
    let checker: NodeJS.Timeout | undefined;
    try {
      const stored = await this.store.get(gid);
      if (!stored || isFinal(stored)) return stored;
      const timedOut = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
      // Another instance sharing the store may end it: look at the store now and then too.
      const endedElsewhere = new Promise<Tx>((resolve) => {
        checker = setInterval(() => {
          void this.store.get(gid).then((current) => current && isFinal(current) && resolve(current), () => undefined);
        }, this.limits.heartbeatIntervalMs);
      });
      const shutdown = this.stopping.then(() => null);
      return (await Promise.race([endedPromise, endedElsewhere, timedOut, shutdown])) ?? (await this.store.get(gid));
    } finally {
      if (timer) clearTimeout(timer);
      if (checker) clearInterval(checker);
      waiters.delete(resolveEnded);
      if (waiters.size === 0 && this.endWaiters.get(gid) === waiters) this.endWaiters.delete(gid);
    }
  }

  private armTimer(tx: Tx): void {
    const existing = this.wakeTimers.get(tx.gid);
    if (existing) this.timers.clearTimeout(existing);
    this.wakeTimers.delete(tx.gid);
    if (tx.nextAttemptAtMs === null || this.stopped) return;
    const delayMs = Math.max(0, tx.nextAttemptAtMs - this.nowMs());
    // Far-off deadlines are left to the recovery scan rather than held as timers.
    if (delayMs > 10 * this.limits.recoveryIntervalMs) return;
    const timer = this.timers.setTimeout(() => {
      this.wakeTimers.delete(tx.gid);
      this.wake(tx.gid);
    }, delayMs);
    this.wakeTimers.set(tx.gid, timer);
  }

  private ctx() {
    return { nowMs: this.nowMs(), jitter: this.random() };
  }
}

/** One history entry when the status or phase changed. */
function historyBetween(previous: Tx | null, next: Tx, atMs: number): HistoryEntry[] {
  const entries: HistoryEntry[] = [];
  if (!previous) entries.push({ atMs, status: 'prepared', phase: 'prepared' });
  const before = previous ?? { status: 'prepared', phase: 'prepared' };
  if (before.status !== next.status || before.phase !== next.phase) {
    entries.push({ atMs, status: next.status, phase: next.phase, ...(next.reason && next.reason !== previous?.reason ? { reason: next.reason } : {}) });
  }
  return entries;
}

/**
 * What makes two create requests the same request: everything the client asked for, not the
 * times the coordinator added. A retry of a create carries the same digest.
 */
export function requestDigestOf(spec: NewTx, submit: boolean): string {
  const canonical = JSON.stringify([spec.mode, submit, spec.branches, spec.options, spec.extra ?? null, spec.queryPreparedUrl ?? null]);
  return createHash('sha256').update(canonical).digest('base64url').slice(0, 22);
}

/** The stored transaction is this very create attempt's write, not an earlier request's. */
function isOwnWrite(stored: Tx, attempt: Tx): boolean {
  return stored.version === attempt.version && stored.createAttempt !== undefined && stored.createAttempt === attempt.createAttempt;
}
