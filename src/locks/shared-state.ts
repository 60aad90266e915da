// One lock name's state as a shared store keeps it, and the pure step that changes it. On a
// shared store (PostgreSQL, Redis) the store is the truth: a coordinator never keeps lock state
// between requests. Each change reads the name's record under the store's own serialisation
// (a PostgreSQL row lock, a Redis version check), rebuilds a manager state holding just that
// name, runs the very same `step` the SQLite coordinator runs (so every rule — fitting, fair
// queues, semaphores, fencing, expiry — is the one rule), and writes the record back.
//
// Times in a record are the store's clock (PostgreSQL clock_timestamp(), Redis TIME), never a
// coordinator's, so coordinators whose clocks disagree still agree on what has expired.
import { restore, step, type Lease, type LockEffect, type LockEvent, type LockState, type ManagerLimits, type Session } from './manager.js';

/** A queued request as the manager keeps it; its requestId starts with its coordinator's id. */
export type StoredWaiter = LockState['waiters'] extends Map<string, infer W> ? W : never;
type LockEntry = LockState['locks'] extends Map<string, infer E> ? E : never;

export interface LockRecord {
  /** The last fencing token granted on this name; kept after the last holder leaves so tokens never repeat. */
  lastToken: number;
  leases: Lease[];
  /** In arrival order. */
  waiters: StoredWaiter[];
}

export const emptyRecord = (): LockRecord => ({ lastToken: 0, leases: [], waiters: [] });

/** What a change to one name sees, read under the store's serialisation. */
export interface RecordView {
  record: LockRecord;
  /** The sessions the record (and the change) names that are still in the store. */
  sessions: Map<string, Session>;
  /** The store's clock when the view was read. */
  nowMs: number;
  /** Which of the coordinators named by queued requests still heartbeat. */
  liveCoordinators: ReadonlySet<string>;
}

export interface Decision {
  record: LockRecord;
  /** False when nothing in the record changed: no write needed. */
  changed: boolean;
  effects: LockEffect[];
  /** Sessions a step extended (a renewal of a session-bound lease): expiry only ever moves later. */
  sessionExtends: Session[];
  /** Sessions a step found expired: deleted only if still expired by the store's clock. */
  sessionEnds: string[];
  /** Sessions the new record names, so closing one can find its locks. */
  sessionIds: string[];
  /** True when a coordinator other than the writer has requests queued here (before or after). */
  notify: boolean;
  /** The store-clock time of the next deadline on this name (lease, session or wait), or null. */
  nextDeadlineMs: number | null;
}

export const coordinatorOf = (requestId: string): string => requestId.slice(0, requestId.indexOf('.'));

/** The session ids a record names, for loading them with it. */
export function sessionIdsOf(record: LockRecord, extra: Iterable<string> = []): string[] {
  const ids = new Set<string>(extra);
  for (const lease of record.leases) if (lease.sessionId !== null) ids.add(lease.sessionId);
  for (const waiter of record.waiters) if (waiter.sessionId !== null) ids.add(waiter.sessionId);
  return [...ids];
}

export function coordinatorsOf(record: LockRecord): string[] {
  return [...new Set(record.waiters.map((waiter) => coordinatorOf(waiter.requestId)))];
}

/** A manager state holding one name: its leases, its queue and the sessions they name. */
export function hydrate(limits: ManagerLimits, name: string, view: RecordView): LockState {
  const sessions: Session[] = [];
  for (const id of sessionIdsOf(view.record)) {
    // A session the store no longer has was closed or expired: a placeholder that is already
    // over lets the step end it, which releases its leases here and wakes the queue.
    sessions.push(view.sessions.get(id) ?? { sessionId: id, owner: '', ttlMs: 0, expiresAtMs: Number.MIN_SAFE_INTEGER });
  }
  for (const [id, session] of view.sessions) if (!sessions.some((known) => known.sessionId === id)) sessions.push(session);
  const state = restore(limits, { leases: view.record.leases, sessions, lastToken: view.record.lastToken });
  if (view.record.waiters.length === 0) return state;
  let entry = state.locks.get(name);
  if (!entry) {
    const first = view.record.waiters[0];
    const created: LockEntry = {
      name,
      kind: first.mode === 'semaphore' ? 'semaphore' : 'rw',
      permits: first.mode === 'semaphore' ? first.permits : 1,
      holders: new Set(),
      exclusiveHolders: 0,
      waiters: [],
    };
    state.locks.set(name, created);
    entry = created;
  }
  for (const waiter of view.record.waiters) {
    entry.waiters.push(waiter);
    state.waiters.set(waiter.requestId, waiter);
    state.waiterOfLease.set(waiter.leaseId, waiter.requestId);
    if (waiter.sessionId !== null) {
      const ofSession = state.waitersOfSession.get(waiter.sessionId) ?? new Set<string>();
      ofSession.add(waiter.requestId);
      state.waitersOfSession.set(waiter.sessionId, ofSession);
    }
    state.timers.set({ atMs: waiter.deadlineMs, kind: 'wait', id: waiter.requestId });
  }
  return state;
}

export function dehydrate(state: LockState, name: string): LockRecord {
  const entry = state.locks.get(name);
  const leases = entry ? [...entry.holders].map((leaseId) => state.leases.get(leaseId)!) : [];
  return { lastToken: state.lastToken, leases, waiters: entry ? [...entry.waiters] : [] };
}

/**
 * Applies `events` (in order) to one name as of the view. Requests queued by coordinators that
 * stopped heartbeating are dropped first: their clients' connections died with them.
 */
export function decide(limits: ManagerLimits, name: string, view: RecordView, events: LockEvent[], writer: string): Decision {
  const state = hydrate(limits, name, view);
  const effects: LockEffect[] = [];
  const run = (event: LockEvent) => effects.push(...step(state, event, view.nowMs).effects);
  for (const waiter of view.record.waiters) {
    if (!view.liveCoordinators.has(coordinatorOf(waiter.requestId))) run({ type: 'cancel', requestId: waiter.requestId });
  }
  if (events.length === 0) run({ type: 'tick' });
  for (const event of events) run(event);
  const record = dehydrate(state, name);
  const sessionExtends = new Map<string, Session>();
  const sessionEnds: string[] = [];
  for (const effect of effects) {
    if (effect.type === 'saveSession') sessionExtends.set(effect.session.sessionId, effect.session);
    else if (effect.type === 'endSession') sessionEnds.push(effect.session.sessionId);
  }
  for (const id of sessionEnds) sessionExtends.delete(id);
  const remote = (waiters: StoredWaiter[]) => waiters.some((waiter) => coordinatorOf(waiter.requestId) !== writer);
  return {
    record,
    changed: JSON.stringify(record) !== JSON.stringify(view.record),
    effects,
    sessionExtends: [...sessionExtends.values()],
    sessionEnds,
    sessionIds: sessionIdsOf(record),
    notify: remote(view.record.waiters) || remote(record.waiters),
    nextDeadlineMs: state.timers.peek()?.atMs ?? null,
  };
}

/** When a lease held in `view` ends: its own deadline or its session's (store clock). */
export function deadlineOf(view: RecordView, lease: Lease): number {
  if (lease.expiresAtMs !== null) return lease.expiresAtMs;
  return view.sessions.get(lease.sessionId!)?.expiresAtMs ?? lease.grantedAtMs;
}
