// The lock manager: a sans-I/O state machine. `step(state, event, nowMs)` decides grants,
// queueing, renewals, releases and expiries and returns the effects for the shell to carry out:
// persist a grant/renewal/release/expiry or a session change, answer a request (`reply`), answer a
// queued request that has just been granted (`wake`), and when to tick next (`schedule`).
//
// It never reads a clock, a disk or a socket and never draws a random number (ids come in with
// the events), so a test can replay any history exactly. For speed the state is updated in place
// and returned; everything placed in an effect is immutable, so the shell may persist it later.
//
// Rules kept here:
// - every grant takes the next fencing token, one counter over all locks, so tokens strictly
//   increase per lock name; the counter is restored from the store after a restart;
// - a lease whose deadline has come (now >= expiresAtMs) is expired before anything else
//   happens in the step, so it is never renewed, released by its holder or shown as held;
// - exclusive fits only an empty lock; shared fits a lock held only in shared mode; a semaphore
//   of N permits fits while fewer than N hold it;
// - a fair request is granted only when nobody waits ahead of it; a non-fair one may barge
//   whenever it fits. Waiters are granted in arrival order as far as they fit; behind the first
//   waiter that does not fit, only non-fair waiters may be granted.
import { TimerHeap } from './heap.js';

export const lockModes = ['exclusive', 'shared', 'semaphore'] as const;
export type LockMode = (typeof lockModes)[number];

export interface Lease {
  leaseId: string;
  name: string;
  mode: LockMode;
  /** The semaphore's permit count N; 1 for exclusive and shared locks. */
  permits: number;
  /** Fencing token: strictly greater than every token granted before it. */
  token: number;
  owner: string;
  sessionId: string | null;
  /** The TTL asked for, reused by renewals that name none; null when bound to a session. */
  ttlMs: number | null;
  grantedAtMs: number;
  /** When the lease ends unless renewed; null when it lives as long as its session. */
  expiresAtMs: number | null;
}

export interface Session {
  sessionId: string;
  owner: string;
  ttlMs: number;
  expiresAtMs: number;
}

export interface ManagerLimits {
  lockWaitersPerLockMax: number;
  lockLeasesMax: number;
  lockSessionsMax: number;
}

export interface AcquireEvent {
  type: 'acquire';
  requestId: string;
  leaseId: string;
  name: string;
  mode: LockMode;
  /** N for a semaphore; 1 otherwise. */
  permits: number;
  /** Lease TTL; null when the lease is bound to `sessionId`. */
  ttlMs: number | null;
  sessionId: string | null;
  owner: string;
  fair: boolean;
  /** 0 answers `busy` at once when the lock does not fit; otherwise the longest wait in the queue. */
  waitMs: number;
}

export type LockEvent =
  | AcquireEvent
  /** The client of a queued request went away: drop it from the queue. */
  | { type: 'cancel'; requestId: string }
  | { type: 'renew'; requestId: string; name: string; leaseId: string; ttlMs: number | null }
  | { type: 'release'; requestId: string; name: string; leaseId: string }
  | { type: 'sessionOpen'; requestId: string; sessionId: string; ttlMs: number; owner: string }
  | { type: 'sessionKeepalive'; requestId: string; sessionId: string }
  | { type: 'sessionClose'; requestId: string; sessionId: string }
  /** Time passed: expire leases, sessions and waits that are due. */
  | { type: 'tick' };

export type TooMany = 'waiters' | 'leases' | 'sessions';

export type Answer =
  | { kind: 'granted'; lease: Lease; waitedMs: number }
  | { kind: 'busy'; reason: 'held' | 'wait-limit' }
  | { kind: 'mismatch'; detail: string }
  | { kind: 'lease-id-taken' }
  | { kind: 'too-many'; what: TooMany }
  | { kind: 'renewed'; lease: Lease; expiresAtMs: number }
  | { kind: 'released' }
  | { kind: 'not-holder' }
  | { kind: 'no-session' }
  | { kind: 'session'; session: Session }
  | { kind: 'session-closed'; releasedCount: number }
  | { kind: 'cancelled' }
  /** The same lease id queued again (a client retrying): the newer request took its place. */
  | { kind: 'superseded' };

export type LockEffect =
  | { type: 'grant'; lease: Lease }
  | { type: 'renew'; lease: Lease }
  | { type: 'release'; lease: Lease }
  | { type: 'expire'; lease: Lease; reason: 'ttl' | 'session-ended' }
  | { type: 'saveSession'; session: Session }
  | { type: 'endSession'; session: Session; reason: 'closed' | 'expired' }
  | { type: 'reply'; requestId: string; answer: Answer }
  | { type: 'wake'; requestId: string; lease: Lease; waitedMs: number }
  | { type: 'schedule'; atMs: number | null };

interface Waiter {
  requestId: string;
  leaseId: string;
  name: string;
  mode: LockMode;
  permits: number;
  owner: string;
  sessionId: string | null;
  ttlMs: number | null;
  fair: boolean;
  arrivedAtMs: number;
  deadlineMs: number;
}

interface LockEntry {
  name: string;
  kind: 'rw' | 'semaphore';
  permits: number;
  /** Lease ids, in grant order. */
  holders: Set<string>;
  exclusiveHolders: number;
  /** In arrival order. */
  waiters: Waiter[];
}

export interface LockState {
  readonly limits: ManagerLimits;
  readonly locks: Map<string, LockEntry>;
  readonly leases: Map<string, Lease>;
  readonly sessions: Map<string, Session>;
  readonly leasesOfSession: Map<string, Set<string>>;
  /** Queued requests by request id. */
  readonly waiters: Map<string, Waiter>;
  readonly waiterOfLease: Map<string, string>;
  readonly waitersOfSession: Map<string, Set<string>>;
  readonly timers: TimerHeap;
  lastToken: number;
}

export interface StepResult {
  state: LockState;
  effects: LockEffect[];
}

export interface Snapshot {
  leases: Lease[];
  sessions: Session[];
  lastToken: number;
}

export function emptyState(limits: ManagerLimits): LockState {
  return {
    limits,
    locks: new Map(),
    leases: new Map(),
    sessions: new Map(),
    leasesOfSession: new Map(),
    waiters: new Map(),
    waiterOfLease: new Map(),
    waitersOfSession: new Map(),
    timers: new TimerHeap(),
    lastToken: 0,
  };
}

/** The state a restart resumes from: durable leases and sessions, no waiters (their requests died). */
export function restore(limits: ManagerLimits, snapshot: Snapshot): LockState {
  const state = emptyState(limits);
  state.lastToken = snapshot.lastToken;
  for (const session of snapshot.sessions) {
    state.sessions.set(session.sessionId, session);
    state.timers.set({ atMs: session.expiresAtMs, kind: 'session', id: session.sessionId });
  }
  for (const lease of [...snapshot.leases].sort((a, b) => a.token - b.token)) {
    state.lastToken = Math.max(state.lastToken, lease.token);
    // A lease whose session is gone was released with it; the store drops both together, so
    // this only guards against a hand-edited file.
    if (lease.sessionId !== null && !state.sessions.has(lease.sessionId)) continue;
    const entry = entryFor(state, lease.name, lease.mode, lease.permits);
    addHolder(state, entry, lease);
  }
  return state;
}

export function step(state: LockState, event: LockEvent, nowMs: number): StepResult {
  const ctx: Ctx = { state, nowMs, effects: [], touched: new Set() };
  expireDue(ctx);
  switch (event.type) {
    case 'acquire':
      acquire(ctx, event);
      break;
    case 'cancel':
      cancel(ctx, event.requestId);
      break;
    case 'renew':
      renew(ctx, event);
      break;
    case 'release':
      release(ctx, event);
      break;
    case 'sessionOpen':
      openSession(ctx, event);
      break;
    case 'sessionKeepalive':
      keepalive(ctx, event);
      break;
    case 'sessionClose':
      closeSession(ctx, event);
      break;
    case 'tick':
      break;
  }
  promoteTouched(ctx);
  ctx.effects.push({ type: 'schedule', atMs: state.timers.peek()?.atMs ?? null });
  return { state, effects: ctx.effects };
}

interface Ctx {
  state: LockState;
  nowMs: number;
  effects: LockEffect[];
  /** Locks whose holders or queue changed: their waiters get a chance once the step is done. */
  touched: Set<string>;
}

function reply(ctx: Ctx, requestId: string, answer: Answer): void {
  ctx.effects.push({ type: 'reply', requestId, answer });
}

function acquire(ctx: Ctx, event: AcquireEvent): void {
  const { state } = ctx;
  const held = state.leases.get(event.leaseId);
  if (held) {
    // A client retrying an acquire whose answer it never got: the same live lease again.
    if (held.name !== event.name || held.mode !== event.mode) reply(ctx, event.requestId, { kind: 'lease-id-taken' });
    else reply(ctx, event.requestId, { kind: 'granted', lease: held, waitedMs: 0 });
    return;
  }
  const queuedRequestId = state.waiterOfLease.get(event.leaseId);
  if (queuedRequestId !== undefined) {
    requeue(ctx, state.waiters.get(queuedRequestId)!, event);
    return;
  }
  if (event.sessionId !== null && !state.sessions.has(event.sessionId)) {
    reply(ctx, event.requestId, { kind: 'no-session' });
    return;
  }
  const existing = state.locks.get(event.name);
  if (existing && !kindMatches(existing, event.mode, event.permits)) {
    reply(ctx, event.requestId, { kind: 'mismatch', detail: mismatchDetail(existing) });
    return;
  }
  const entry = existing ?? entryFor(state, event.name, event.mode, event.permits);
  if (fits(entry, event.mode) && (!event.fair || entry.waiters.length === 0)) {
    if (state.leases.size >= state.limits.lockLeasesMax) reply(ctx, event.requestId, { kind: 'too-many', what: 'leases' });
    else reply(ctx, event.requestId, { kind: 'granted', lease: grant(ctx, entry, event), waitedMs: 0 });
  } else if (event.waitMs === 0) {
    reply(ctx, event.requestId, { kind: 'busy', reason: 'held' });
  } else if (entry.waiters.length >= state.limits.lockWaitersPerLockMax) {
    reply(ctx, event.requestId, { kind: 'too-many', what: 'waiters' });
  } else {
    enqueue(ctx, entry, event);
  }
  dropIfIdle(state, entry);
}

/** The same lease id asks again while queued: the new request keeps the old one's place. */
function requeue(ctx: Ctx, waiter: Waiter, event: AcquireEvent): void {
  const { state } = ctx;
  if (waiter.name !== event.name || waiter.mode !== event.mode) {
    reply(ctx, event.requestId, { kind: 'lease-id-taken' });
    return;
  }
  reply(ctx, waiter.requestId, { kind: 'superseded' });
  state.waiters.delete(waiter.requestId);
  state.timers.delete('wait', waiter.requestId);
  unindexSessionWaiter(state, waiter);
  const renewed: Waiter = { ...waiter, requestId: event.requestId, deadlineMs: ctx.nowMs + event.waitMs, fair: event.fair };
  const entry = state.locks.get(waiter.name)!;
  entry.waiters[entry.waiters.indexOf(waiter)] = renewed;
  indexWaiter(state, renewed);
  state.timers.set({ atMs: renewed.deadlineMs, kind: 'wait', id: renewed.requestId });
}

function enqueue(ctx: Ctx, entry: LockEntry, event: AcquireEvent): void {
  const waiter: Waiter = {
    requestId: event.requestId,
    leaseId: event.leaseId,
    name: event.name,
    mode: event.mode,
    permits: event.permits,
    owner: event.owner,
    sessionId: event.sessionId,
    ttlMs: event.ttlMs,
    fair: event.fair,
    arrivedAtMs: ctx.nowMs,
    deadlineMs: ctx.nowMs + event.waitMs,
  };
  entry.waiters.push(waiter);
  indexWaiter(ctx.state, waiter);
  ctx.state.timers.set({ atMs: waiter.deadlineMs, kind: 'wait', id: waiter.requestId });
}

function cancel(ctx: Ctx, requestId: string): void {
  const waiter = ctx.state.waiters.get(requestId);
  if (!waiter) return;
  removeWaiter(ctx, waiter);
  reply(ctx, requestId, { kind: 'cancelled' });
}

function renew(ctx: Ctx, event: Extract<LockEvent, { type: 'renew' }>): void {
  const { state } = ctx;
  const lease = state.leases.get(event.leaseId);
  if (!lease || lease.name !== event.name) {
    reply(ctx, event.requestId, { kind: 'not-holder' });
    return;
  }
  if (lease.sessionId !== null) {
    // A session-bound lease lives as long as its session: renewing it keeps the session alive.
    const session = extendSession(ctx, state.sessions.get(lease.sessionId)!);
    reply(ctx, event.requestId, { kind: 'renewed', lease, expiresAtMs: session.expiresAtMs });
    return;
  }
  const ttlMs = event.ttlMs ?? lease.ttlMs!;
  const renewed: Lease = { ...lease, ttlMs, expiresAtMs: ctx.nowMs + ttlMs };
  state.leases.set(renewed.leaseId, renewed);
  state.timers.set({ atMs: renewed.expiresAtMs!, kind: 'lease', id: renewed.leaseId });
  ctx.effects.push({ type: 'renew', lease: renewed });
  reply(ctx, event.requestId, { kind: 'renewed', lease: renewed, expiresAtMs: renewed.expiresAtMs! });
}

function release(ctx: Ctx, event: Extract<LockEvent, { type: 'release' }>): void {
  const lease = ctx.state.leases.get(event.leaseId);
  if (!lease || lease.name !== event.name) {
    reply(ctx, event.requestId, { kind: 'not-holder' });
    return;
  }
  dropLease(ctx, lease);
  ctx.effects.push({ type: 'release', lease });
  reply(ctx, event.requestId, { kind: 'released' });
}

function openSession(ctx: Ctx, event: Extract<LockEvent, { type: 'sessionOpen' }>): void {
  const { state } = ctx;
  const existing = state.sessions.get(event.sessionId);
  if (existing) {
    reply(ctx, event.requestId, { kind: 'session', session: existing });
    return;
  }
  if (state.sessions.size >= state.limits.lockSessionsMax) {
    reply(ctx, event.requestId, { kind: 'too-many', what: 'sessions' });
    return;
  }
  const session: Session = { sessionId: event.sessionId, owner: event.owner, ttlMs: event.ttlMs, expiresAtMs: ctx.nowMs + event.ttlMs };
  state.sessions.set(session.sessionId, session);
  state.timers.set({ atMs: session.expiresAtMs, kind: 'session', id: session.sessionId });
  ctx.effects.push({ type: 'saveSession', session });
  reply(ctx, event.requestId, { kind: 'session', session });
}

function keepalive(ctx: Ctx, event: Extract<LockEvent, { type: 'sessionKeepalive' }>): void {
  const session = ctx.state.sessions.get(event.sessionId);
  if (!session) reply(ctx, event.requestId, { kind: 'no-session' });
  else reply(ctx, event.requestId, { kind: 'session', session: extendSession(ctx, session) });
}

function extendSession(ctx: Ctx, session: Session): Session {
  const extended: Session = { ...session, expiresAtMs: ctx.nowMs + session.ttlMs };
  ctx.state.sessions.set(extended.sessionId, extended);
  ctx.state.timers.set({ atMs: extended.expiresAtMs, kind: 'session', id: extended.sessionId });
  ctx.effects.push({ type: 'saveSession', session: extended });
  return extended;
}

function closeSession(ctx: Ctx, event: Extract<LockEvent, { type: 'sessionClose' }>): void {
  const session = ctx.state.sessions.get(event.sessionId);
  if (!session) {
    reply(ctx, event.requestId, { kind: 'no-session' });
    return;
  }
  const releasedCount = endSession(ctx, session, 'closed');
  reply(ctx, event.requestId, { kind: 'session-closed', releasedCount });
}

/** Ends a session with all its leases and queued requests; returns how many leases it held. */
function endSession(ctx: Ctx, session: Session, reason: 'closed' | 'expired'): number {
  const { state } = ctx;
  state.sessions.delete(session.sessionId);
  state.timers.delete('session', session.sessionId);
  const leaseIds = [...(state.leasesOfSession.get(session.sessionId) ?? [])];
  // A copy: dropLease removes each id from the session's own set as it goes.
  for (const leaseId of leaseIds) {
    const lease = state.leases.get(leaseId)!;
    dropLease(ctx, lease);
    ctx.effects.push({ type: 'expire', lease, reason: 'session-ended' });
  }
  for (const requestId of [...(state.waitersOfSession.get(session.sessionId) ?? [])]) {
    removeWaiter(ctx, state.waiters.get(requestId)!);
    reply(ctx, requestId, { kind: 'no-session' });
  }
  state.leasesOfSession.delete(session.sessionId);
  state.waitersOfSession.delete(session.sessionId);
  ctx.effects.push({ type: 'endSession', session, reason });
  return leaseIds.length;
}

function expireDue(ctx: Ctx): void {
  const { state, nowMs } = ctx;
  for (let due = state.timers.peek(); due && due.atMs <= nowMs; due = state.timers.peek()) {
    state.timers.pop();
    // One entry per live lease, session and waiter, moved on renewal and removed when it
    // ends: a due entry always names something that exists and is due.
    if (due.kind === 'lease') {
      const lease = state.leases.get(due.id);
      assertDue(due.id, lease !== undefined && lease.expiresAtMs !== null && lease.expiresAtMs <= nowMs);
      if (lease) {
        dropLease(ctx, lease);
        ctx.effects.push({ type: 'expire', lease, reason: 'ttl' });
      }
    } else if (due.kind === 'session') {
      const session = state.sessions.get(due.id);
      assertDue(due.id, session !== undefined && session.expiresAtMs <= nowMs);
      if (session) endSession(ctx, session, 'expired');
    } else {
      const waiter = state.waiters.get(due.id);
      assertDue(due.id, waiter !== undefined && waiter.deadlineMs <= nowMs);
      if (waiter) {
        removeWaiter(ctx, waiter);
        reply(ctx, waiter.requestId, { kind: 'busy', reason: 'wait-limit' });
      }
    }
  }
}

function assertDue(id: string, holds: boolean): void {
  if (!holds) throw new Error(`lock manager invariant broken: timer for ${id} came due but names nothing due`);
}

/** Grants queued requests on every lock whose holders or queue changed in this step. */
function promoteTouched(ctx: Ctx): void {
  for (const name of ctx.touched) {
    const entry = ctx.state.locks.get(name);
    if (entry) promote(ctx, entry);
  }
}

function promote(ctx: Ctx, entry: LockEntry): void {
  const { state } = ctx;
  let blocked = false;
  for (const waiter of [...entry.waiters]) {
    const mayGo = (!blocked || !waiter.fair) && fits(entry, waiter.mode) && state.leases.size < state.limits.lockLeasesMax;
    if (!mayGo) {
      blocked = true;
      continue;
    }
    unqueue(state, entry, waiter);
    const lease = grant(ctx, entry, waiter);
    ctx.effects.push({ type: 'wake', requestId: waiter.requestId, lease, waitedMs: ctx.nowMs - waiter.arrivedAtMs });
  }
  dropIfIdle(state, entry);
}

type GrantRequest = Pick<AcquireEvent, 'leaseId' | 'name' | 'mode' | 'permits' | 'owner' | 'sessionId' | 'ttlMs'>;

function grant(ctx: Ctx, entry: LockEntry, request: GrantRequest): Lease {
  const { state, nowMs } = ctx;
  state.lastToken += 1;
  const lease: Lease = {
    leaseId: request.leaseId,
    name: request.name,
    mode: request.mode,
    permits: request.permits,
    token: state.lastToken,
    owner: request.owner,
    sessionId: request.sessionId,
    ttlMs: request.sessionId === null ? request.ttlMs : null,
    grantedAtMs: nowMs,
    expiresAtMs: request.sessionId === null ? nowMs + request.ttlMs! : null,
  };
  addHolder(state, entry, lease);
  ctx.effects.push({ type: 'grant', lease });
  return lease;
}

function addHolder(state: LockState, entry: LockEntry, lease: Lease): void {
  state.leases.set(lease.leaseId, lease);
  entry.holders.add(lease.leaseId);
  if (lease.mode === 'exclusive') entry.exclusiveHolders += 1;
  if (lease.sessionId !== null) setOf(state.leasesOfSession, lease.sessionId).add(lease.leaseId);
  if (lease.expiresAtMs !== null) state.timers.set({ atMs: lease.expiresAtMs, kind: 'lease', id: lease.leaseId });
}

function dropLease(ctx: Ctx, lease: Lease): void {
  const { state } = ctx;
  state.leases.delete(lease.leaseId);
  state.timers.delete('lease', lease.leaseId);
  if (lease.sessionId !== null) state.leasesOfSession.get(lease.sessionId)?.delete(lease.leaseId);
  const entry = state.locks.get(lease.name)!;
  entry.holders.delete(lease.leaseId);
  if (lease.mode === 'exclusive') entry.exclusiveHolders -= 1;
  ctx.touched.add(entry.name);
  dropIfIdle(state, entry);
}

function removeWaiter(ctx: Ctx, waiter: Waiter): void {
  const entry = ctx.state.locks.get(waiter.name)!;
  unqueue(ctx.state, entry, waiter);
  // The one that left may have blocked fair waiters behind it.
  ctx.touched.add(entry.name);
  dropIfIdle(ctx.state, entry);
}

function unqueue(state: LockState, entry: LockEntry, waiter: Waiter): void {
  entry.waiters.splice(entry.waiters.indexOf(waiter), 1);
  state.waiters.delete(waiter.requestId);
  state.timers.delete('wait', waiter.requestId);
  state.waiterOfLease.delete(waiter.leaseId);
  unindexSessionWaiter(state, waiter);
}

function indexWaiter(state: LockState, waiter: Waiter): void {
  state.waiters.set(waiter.requestId, waiter);
  state.waiterOfLease.set(waiter.leaseId, waiter.requestId);
  if (waiter.sessionId !== null) setOf(state.waitersOfSession, waiter.sessionId).add(waiter.requestId);
}

function unindexSessionWaiter(state: LockState, waiter: Waiter): void {
  if (waiter.sessionId !== null) state.waitersOfSession.get(waiter.sessionId)?.delete(waiter.requestId);
}

function entryFor(state: LockState, name: string, mode: LockMode, permits: number): LockEntry {
  let entry = state.locks.get(name);
  if (!entry) {
    entry = { name, kind: mode === 'semaphore' ? 'semaphore' : 'rw', permits: mode === 'semaphore' ? permits : 1, holders: new Set(), exclusiveHolders: 0, waiters: [] };
    state.locks.set(name, entry);
  }
  return entry;
}

function dropIfIdle(state: LockState, entry: LockEntry): void {
  if (entry.holders.size === 0 && entry.waiters.length === 0) state.locks.delete(entry.name);
}

function kindMatches(entry: LockEntry, mode: LockMode, permits: number): boolean {
  if (mode === 'semaphore') return entry.kind === 'semaphore' && entry.permits === permits;
  return entry.kind === 'rw';
}

function mismatchDetail(entry: LockEntry): string {
  return entry.kind === 'semaphore'
    ? `the lock is in use as a semaphore of ${entry.permits} permits; every client of one name must ask for the same kind and permit count`
    : 'the lock is in use as an exclusive/shared lock; every client of one name must ask for the same kind';
}

function fits(entry: LockEntry, mode: LockMode): boolean {
  if (entry.kind === 'semaphore') return entry.holders.size < entry.permits;
  if (mode === 'exclusive') return entry.holders.size === 0;
  return entry.exclusiveHolders === 0;
}

function setOf<K, V>(map: Map<K, Set<V>>, key: K): Set<V> {
  let set = map.get(key);
  if (!set) {
    set = new Set();
    map.set(key, set);
  }
  return set;
}

export interface HolderView {
  owner: string;
  mode: LockMode;
  token: number;
  /** True when the lease lives as long as a session rather than its own TTL. */
  sessionBound: boolean;
  grantedAtMs: number;
  expiresAtMs: number;
}

export interface WaiterView {
  owner: string;
  mode: LockMode;
  fair: boolean;
  arrivedAtMs: number;
  deadlineMs: number;
}

export interface LockView {
  name: string;
  kind: 'rw' | 'semaphore' | null;
  permits: number | null;
  holders: HolderView[];
  waiters: WaiterView[];
}

/** What a lock looks like now. Call after a `tick` step so nothing shown is past its deadline. */
export function inspect(state: LockState, name: string): LockView {
  const entry = state.locks.get(name);
  if (!entry) return { name, kind: null, permits: null, holders: [], waiters: [] };
  const holders = [...entry.holders].map((leaseId): HolderView => {
    const lease = state.leases.get(leaseId)!;
    return {
      owner: lease.owner,
      mode: lease.mode,
      token: lease.token,
      sessionBound: lease.sessionId !== null,
      grantedAtMs: lease.grantedAtMs,
      expiresAtMs: leaseDeadline(state, lease),
    };
  });
  const waiters = entry.waiters.map((waiter): WaiterView => ({
    owner: waiter.owner,
    mode: waiter.mode,
    fair: waiter.fair,
    arrivedAtMs: waiter.arrivedAtMs,
    deadlineMs: waiter.deadlineMs,
  }));
  return { name, kind: entry.kind, permits: entry.kind === 'semaphore' ? entry.permits : null, holders, waiters };
}

/** When a lease ends unless renewed: its own deadline or its session's. */
export function leaseDeadline(state: LockState, lease: Lease): number {
  if (lease.expiresAtMs !== null) return lease.expiresAtMs;
  return state.sessions.get(lease.sessionId!)?.expiresAtMs ?? lease.grantedAtMs;
}
