// Distributed locks from the coordinator: acquire/renew/release/inspect, sessions with
// keepalive, and `using(lock, fn)`, which renews in the background, hands `fn` the fencing token
// and aborts `fn`'s AbortSignal the moment the lock is lost.
//
// "Lost" is decided by our own clock too, not only by the server: every answer says how long
// the request spent on the server (elapsedMs) and what was left of the lease (ttlRemainingMs),
// so the lease cannot end before sentAt + elapsedMs + ttlRemainingMs by our clock (less a
// drift allowance). When that moment passes without a successful renewal, the lock counts as
// lost even if the coordinator cannot be reached to say so. Only the fencing token, checked
// by the resource you write to, makes a lost lock harmless; see docs/locks.md.
import { randomFillSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { request, type Dispatcher } from 'undici';
import { TandemApiError } from './client.js';

export type LockMode = 'exclusive' | 'shared' | 'semaphore';

export type LockLostReason =
  /** Our clock says the lease may have run out and no renewal got through in time. */
  | 'expired'
  /** The server says this lease is not held (it expired there, or the lock was reset). */
  | 'not-holder'
  /** The session the lease was bound to is gone. */
  | 'session-lost';

export class LockLostError extends Error {
  constructor(
    readonly lockName: string,
    readonly reason: LockLostReason,
  ) {
    super(`lost lock "${lockName}" (${reason})`);
    this.name = 'LockLostError';
  }
}

export class LockBusyError extends Error {
  constructor(
    readonly lockName: string,
    detail: string,
  ) {
    super(`lock "${lockName}" is busy: ${detail}`);
    this.name = 'LockBusyError';
  }
}

/** What every held lock offers, whichever backend granted it (coordinator, Redis, Redlock). */
export interface HeldLock {
  readonly name: string;
  /** Fencing token: greater than the token of every earlier grant of this lock. Pass it to the resource you write. */
  readonly token: number;
  /** Aborted (with a LockLostError as its reason) the moment the lock is lost; also aborted on release. */
  readonly signal: AbortSignal;
  /** The error the lock was lost with, or null while held or after a release. */
  readonly lostError: LockLostError | null;
  readonly held: boolean;
  /** How long the lock is surely still ours by this process's clock. */
  remainingMs(): number;
  renew(): Promise<void>;
  release(): Promise<void>;
  /** Renews in the background until released or lost. */
  keepAlive(): void;
  on(event: 'lost', listener: (error: LockLostError) => void): this;
  once(event: 'lost', listener: (error: LockLostError) => void): this;
}

export interface RenewResult {
  /** performance.now() time until which the lease surely lasts. */
  validUntilMs: number;
}

/**
 * The clockwork every backend shares: a local deadline, a background renewal loop, and the
 * AbortSignal and 'lost' event. Subclasses say how to renew and release once.
 */
export abstract class HeldLockBase extends EventEmitter implements HeldLock {
  private validUntilMs: number;
  private state: 'held' | 'lost' | 'released' = 'held';
  /** Made on first use: most short critical sections never look at their signal. */
  private controller: AbortController | null = null;
  /** True once someone can observe a loss as it happens (signal, 'lost', keepAlive): only then is a timer worth its cost. */
  private watched = false;
  private deadlineTimer: NodeJS.Timeout | null = null;
  private renewTimer: NodeJS.Timeout | null = null;
  private keepingAlive = false;
  private renewing: Promise<void> | null = null;
  private releasing = false;
  private lost: LockLostError | null = null;

  protected constructor(
    readonly name: string,
    readonly token: number,
    validUntilMs: number,
    /** How often the background loop renews: a third of the TTL leaves two tries before the end. */
    readonly renewEveryMs: number,
  ) {
    super();
    this.validUntilMs = validUntilMs;
  }

  protected abstract renewOnce(): Promise<RenewResult>;
  protected abstract releaseOnce(): Promise<unknown>;

  get signal(): AbortSignal {
    this.watch();
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.state !== 'held') this.controller.abort(this.lost ?? this.releasedReason());
    }
    return this.controller.signal;
  }

  get lostError(): LockLostError | null {
    this.checkDeadline();
    return this.lost;
  }

  get held(): boolean {
    this.checkDeadline();
    return this.state === 'held';
  }

  remainingMs(): number {
    return this.held ? Math.max(0, this.validUntilMs - performance.now()) : 0;
  }

  override on(event: string | symbol, listener: (...args: never[]) => void): this {
    if (event === 'lost') this.watch();
    return super.on(event, listener as (...args: unknown[]) => void);
  }

  override once(event: string | symbol, listener: (...args: never[]) => void): this {
    if (event === 'lost') this.watch();
    return super.once(event, listener as (...args: unknown[]) => void);
  }

  /** Renews once; throws LockLostError if the lock is gone. Concurrent calls share one request. */
  renew(): Promise<void> {
    if (!this.held) return Promise.reject(this.lost ?? new LockLostError(this.name, 'not-holder'));
    this.renewing ??= this.renewOnce()
      .then((result) => {
        if (this.state !== 'held') return;
        this.validUntilMs = Math.max(this.validUntilMs, result.validUntilMs);
        if (this.watched) this.armDeadline();
      })
      .catch((error: unknown) => {
        if (error instanceof LockLostError) this.markLost(error.reason);
        throw error;
      })
      .finally(() => {
        this.renewing = null;
      });
    return this.renewing;
  }

  keepAlive(): void {
    this.watch();
    if (this.keepingAlive || this.state !== 'held') return;
    this.keepingAlive = true;
    this.scheduleRenew(this.renewEveryMs);
  }

  /**
   * Releases the lock. Releasing a lock our clock already gave up on is still worth a try
   * (the server may hold it until its own deadline); its failure is then ignored.
   */
  async release(): Promise<void> {
    if (this.state === 'released' || this.releasing) return;
    this.releasing = true;
    this.checkDeadline();
    const wasLost = this.state === 'lost';
    if (!wasLost) {
      this.state = 'released';
      this.stopTimers();
      this.controller?.abort(this.releasedReason());
    }
    if (wasLost) await this.releaseOnce().catch(() => undefined);
    else await this.releaseOnce();
  }

  /** Marks the lock lost once: stops renewing, aborts the signal, emits 'lost'. */
  protected markLost(reason: LockLostReason): void {
    if (this.state !== 'held') return;
    this.state = 'lost';
    this.stopTimers();
    this.lost = new LockLostError(this.name, reason);
    this.controller?.abort(this.lost);
    this.emit('lost', this.lost);
  }

  private releasedReason(): Error {
    return new Error(`lock "${this.name}" was released`);
  }

  /** Our clock says the lease may be over: it is lost, whether or not a timer noticed yet. */
  private checkDeadline(): void {
    if (this.state === 'held' && performance.now() >= this.validUntilMs) this.markLost('expired');
  }

  private watch(): void {
    if (this.watched) return;
    this.watched = true;
    this.armDeadline();
  }

  private armDeadline(): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = null;
    if (this.state !== 'held' || !Number.isFinite(this.validUntilMs)) return;
    this.deadlineTimer = setTimeout(() => this.markLost('expired'), Math.max(0, this.validUntilMs - performance.now()));
    this.deadlineTimer.unref();
  }

  private scheduleRenew(delayMs: number): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renewInBackground(), delayMs);
  }

  private async renewInBackground(): Promise<void> {
    this.renewTimer = null;
    if (!this.held) return;
    try {
      await this.renew();
      if (this.state === 'held') this.scheduleRenew(this.renewEveryMs);
    } catch (error) {
      if (error instanceof LockLostError || this.state !== 'held') return;
      // Unreachable or overloaded: try again soon, while there is still time; the deadline
      // timer declares the loss if none gets through.
      this.emit('renewError', error);
      this.scheduleRenew(Math.max(10, Math.min(this.renewEveryMs, this.remainingMs() / 4)));
    }
  }

  private stopTimers(): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.deadlineTimer = null;
    this.renewTimer = null;
  }
}

export interface UsingContext {
  /** Aborted the moment the lock is lost: stop work and do not write. */
  signal: AbortSignal;
  /** The fencing token: send it with every write so the resource can refuse stale holders. */
  token: number;
  lock: HeldLock;
}

/**
 * Runs `fn` while holding `lock`: renews in the background, aborts `fn`'s signal the moment the
 * lock is lost, and releases at the end. If the lock was lost while `fn` ran, throws the
 * LockLostError (after `fn` settles) even when `fn` itself succeeded, because its work may have
 * overlapped another holder's.
 */
export async function using<T>(lock: HeldLock, fn: (context: UsingContext) => Promise<T> | T): Promise<T> {
  lock.keepAlive();
  let result: T;
  try {
    result = await fn({ signal: lock.signal, token: lock.token, lock });
  } catch (error) {
    await lock.release().catch(() => undefined);
    throw error;
  }
  const lost = lock.lostError;
  await lock.release().catch(() => undefined);
  if (lost) throw lost;
  return result;
}

// ---------------------------------------------------------------------------------------------
// The coordinator client.

export interface LockClientOptions {
  /** The coordinator, e.g. http://127.0.0.1:8636 */
  url: string;
  dispatcher?: Dispatcher;
  /** Time allowed for one request that does not wait in a queue. */
  requestTimeoutMs?: number;
  /** How long to keep retrying while the coordinator is unreachable or answers 503. */
  retryUnavailableMs?: number;
  /** Share of the remaining TTL assumed lost to clock-rate differences (Redlock uses 0.01). */
  driftFactor?: number;
  /** API token, sent as `Authorization: Bearer <token>`. */
  token?: string;
}

export interface AcquireOptions {
  /** 'exclusive' (default) or 'shared'; pass `permits` instead for a semaphore. */
  mode?: 'exclusive' | 'shared';
  /** Makes the lock a counting semaphore of this many permits; every client must pass the same. */
  permits?: number;
  /** Lease TTL (default 10 s); not with `session`. */
  ttlMs?: number;
  /** Binds the lease to a session: it lives as long as the session's keepalives. */
  session?: LockSession;
  /** Longest wait in the queue; 0 fails at once if the lock is held. acquire() defaults to 30 s. */
  waitMs?: number;
  /** First come, first served (default true); false lets this request barge ahead of waiters. */
  fair?: boolean;
  /** A label shown by inspect(). */
  owner?: string;
}

export interface LockInspection {
  name: string;
  kind: 'rw' | 'semaphore' | null;
  permits: number | null;
  holders: Array<{ owner: string; mode: LockMode; token: number; sessionBound: boolean; grantedAt: string; expiresAt: string; ttlRemainingMs: number }>;
  waiters: Array<{ owner: string; mode: LockMode; fair: boolean; waitedMs: number; waitRemainingMs: number }>;
}

interface GrantAnswer {
  name: string;
  leaseId: string;
  token: number;
  mode: LockMode;
  ttlMs?: number;
  ttlRemainingMs: number;
  elapsedMs: number;
}

interface RenewAnswer {
  token: number;
  ttlRemainingMs: number;
  elapsedMs: number;
}

interface SessionAnswer {
  sessionId: string;
  ttlMs: number;
  ttlRemainingMs: number;
  elapsedMs: number;
}

const defaultTtlMs = 10_000;
const defaultWaitMs = 30_000;

export class LockClient {
  readonly url: string;
  readonly http: JsonHttp;
  readonly driftFactor: number;
  readonly retryUnavailableMs: number;

  constructor(options: LockClientOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.http = new JsonHttp(this.url, options.dispatcher, options.requestTimeoutMs ?? 10_000, options.token);
    this.driftFactor = options.driftFactor ?? 0.01;
    this.retryUnavailableMs = options.retryUnavailableMs ?? 10_000;
  }

  /** Acquires or throws LockBusyError when `waitMs` (default 30 s) passes first. */
  async acquire(name: string, options: AcquireOptions = {}): Promise<HeldLock> {
    const waitMs = options.waitMs ?? defaultWaitMs;
    const leaseId = newLeaseId();
    const body = {
      ...(options.permits !== undefined ? { mode: 'semaphore', permits: options.permits } : { mode: options.mode ?? 'exclusive' }),
      ...(options.session ? { sessionId: options.session.sessionId } : { ttlMs: options.ttlMs ?? defaultTtlMs }),
      fair: options.fair ?? true,
      ...(options.owner !== undefined ? { owner: options.owner } : {}),
      // Chosen here so a retry after a lost answer finds the same lease or queue place.
      leaseId,
    };
    const waitUntilMs = performance.now() + waitMs;
    const giveUpMs = performance.now() + Math.max(waitMs, this.retryUnavailableMs);
    for (let attempt = 0; ; attempt++) {
      const sentAtMs = performance.now();
      const remainingWaitMs = Math.max(0, Math.round(waitUntilMs - sentAtMs));
      try {
        const answer = await this.http.call<GrantAnswer>('POST', `/v1/locks/${encodeURIComponent(name)}/acquire`, { ...body, waitMs: remainingWaitMs }, remainingWaitMs + this.http.requestTimeoutMs);
        return this.leaseOf(name, answer, sentAtMs, options);
      } catch (error) {
        if (error instanceof TandemApiError && error.status === 409 && problemType(error) === 'lock-busy') {
          throw new LockBusyError(name, error.problem && typeof error.problem === 'object' ? (error.problem.detail ?? '') : '');
        }
        if (!isUnavailable(error) || performance.now() >= giveUpMs) throw error;
        await sleep(Math.min(backoffMs(attempt), Math.max(0, giveUpMs - performance.now())));
      }
    }
  }

  /** Acquires without waiting; null when the lock is held. */
  async tryAcquire(name: string, options: Omit<AcquireOptions, 'waitMs'> = {}): Promise<HeldLock | null> {
    try {
      return await this.acquire(name, { ...options, waitMs: 0 });
    } catch (error) {
      if (error instanceof LockBusyError) return null;
      throw error;
    }
  }

  /** Acquires, runs `fn` under using(), releases. */
  async using<T>(name: string, options: AcquireOptions, fn: (context: UsingContext) => Promise<T> | T): Promise<T> {
    return using(await this.acquire(name, options), fn);
  }

  inspect(name: string): Promise<LockInspection> {
    return this.http.call<LockInspection>('GET', `/v1/locks/${encodeURIComponent(name)}`);
  }

  /** Opens a session and keeps it alive in the background until closed or lost. */
  async openSession(options: { ttlMs?: number; owner?: string } = {}): Promise<LockSession> {
    const sessionId = newLeaseId();
    const ttlMs = options.ttlMs ?? defaultTtlMs;
    const sentAtMs = performance.now();
    const answer = await this.retryWhileUnavailable(() =>
      this.http.call<SessionAnswer>('POST', '/v1/sessions', { ttlMs, sessionId, ...(options.owner !== undefined ? { owner: options.owner } : {}) }),
    );
    const session = new LockSession(this, answer.sessionId, ttlMs, this.validUntil(sentAtMs, answer));
    session.keepAlive();
    return session;
  }

  /** performance.now() time before which the lease cannot have ended, by our clock. */
  validUntil(sentAtMs: number, answer: { elapsedMs: number; ttlRemainingMs: number }): number {
    return sentAtMs + answer.elapsedMs + answer.ttlRemainingMs * (1 - this.driftFactor) - 1;
  }

  async retryWhileUnavailable<T>(call: () => Promise<T>, budgetMs = this.retryUnavailableMs): Promise<T> {
    const giveUpMs = performance.now() + budgetMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (error) {
        if (!isUnavailable(error) || performance.now() >= giveUpMs) throw error;
        await sleep(Math.min(backoffMs(attempt), Math.max(0, giveUpMs - performance.now())));
      }
    }
  }

  private leaseOf(name: string, answer: GrantAnswer, sentAtMs: number, options: AcquireOptions): HeldLock {
    if (options.session) return new SessionBoundLease(this, name, answer.leaseId, answer.token, options.session);
    const ttlMs = answer.ttlMs ?? options.ttlMs ?? defaultTtlMs;
    return new CoordinatorLease(this, name, answer.leaseId, answer.token, ttlMs, this.validUntil(sentAtMs, answer));
  }
}

class CoordinatorLease extends HeldLockBase {
  constructor(
    private readonly client: LockClient,
    name: string,
    readonly leaseId: string,
    token: number,
    private readonly ttlMs: number,
    validUntilMs: number,
  ) {
    super(name, token, validUntilMs, Math.max(10, Math.floor(ttlMs / 3)));
  }

  protected async renewOnce(): Promise<RenewResult> {
    const sentAtMs = performance.now();
    // Waiting longer than the lease may last is pointless: the deadline decides by then.
    const timeoutMs = Math.max(50, Math.min(this.client.http.requestTimeoutMs, this.remainingMs()));
    try {
      const answer = await this.client.http.call<RenewAnswer>('POST', `/v1/locks/${encodeURIComponent(this.name)}/renew`, { leaseId: this.leaseId, ttlMs: this.ttlMs }, timeoutMs);
      return { validUntilMs: this.client.validUntil(sentAtMs, answer) };
    } catch (error) {
      if (error instanceof TandemApiError && error.status === 409) throw new LockLostError(this.name, 'not-holder');
      throw error;
    }
  }

  protected async releaseOnce(): Promise<void> {
    await releaseLease(this.client, this.name, this.leaseId);
  }
}

/** A lease that lives as long as its session: the session's keepalives are its renewals. */
class SessionBoundLease extends HeldLockBase {
  constructor(
    private readonly client: LockClient,
    name: string,
    readonly leaseId: string,
    token: number,
    private readonly session: LockSession,
  ) {
    super(name, token, Infinity, session.renewEveryMs);
    const onLost = () => this.markLost('session-lost');
    if (session.lostError) onLost();
    else session.once('lost', onLost);
    this.signal.addEventListener('abort', () => session.off('lost', onLost), { once: true });
  }

  override remainingMs(): number {
    return this.held ? this.session.remainingMs() : 0;
  }

  protected async renewOnce(): Promise<RenewResult> {
    await this.session.renew();
    return { validUntilMs: Infinity };
  }

  override keepAlive(): void {
    this.session.keepAlive();
  }

  protected async releaseOnce(): Promise<void> {
    await releaseLease(this.client, this.name, this.leaseId);
  }
}

async function releaseLease(client: LockClient, name: string, leaseId: string): Promise<void> {
  try {
    await client.retryWhileUnavailable(() => client.http.call('POST', `/v1/locks/${encodeURIComponent(name)}/release`, { leaseId }));
  } catch (error) {
    // Not held any more: the goal of a release is met.
    if (error instanceof TandemApiError && error.status === 409) return;
    throw error;
  }
}

/**
 * A lock session: kept alive in the background; when it expires on the server (keepalives
 * stopped getting through), every lease bound to it is released and the next waiters granted.
 * Its `signal` and 'lost' event fire the moment it may have expired, by our clock or the server's.
 */
export class LockSession extends HeldLockBase {
  constructor(
    private readonly client: LockClient,
    readonly sessionId: string,
    readonly ttlMs: number,
    validUntilMs: number,
  ) {
    super(`session ${sessionId}`, 0, validUntilMs, Math.max(10, Math.floor(ttlMs / 3)));
  }

  /** Ends the session; every lease bound to it is released. */
  close(): Promise<void> {
    return this.release();
  }

  protected async renewOnce(): Promise<RenewResult> {
    const sentAtMs = performance.now();
    const timeoutMs = Math.max(50, Math.min(this.client.http.requestTimeoutMs, this.remainingMs()));
    try {
      const answer = await this.client.http.call<SessionAnswer>('POST', `/v1/sessions/${this.sessionId}/keepalive`, {}, timeoutMs);
      return { validUntilMs: this.client.validUntil(sentAtMs, answer) };
    } catch (error) {
      if (error instanceof TandemApiError && error.status === 404) throw new LockLostError(this.name, 'session-lost');
      throw error;
    }
  }

  protected async releaseOnce(): Promise<void> {
    try {
      await this.client.retryWhileUnavailable(() => this.client.http.call('DELETE', `/v1/sessions/${this.sessionId}`));
    } catch (error) {
      if (error instanceof TandemApiError && error.status === 404) return;
      throw error;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Plumbing shared with the key-value client.

/** JSON over HTTP to the coordinator; a non-2xx answer becomes a TandemApiError with the problem. */
export class JsonHttp {
  private readonly authHeaders: Record<string, string>;

  constructor(
    readonly baseUrl: string,
    private readonly dispatcher: Dispatcher | undefined,
    readonly requestTimeoutMs: number,
    token?: string,
  ) {
    this.authHeaders = token ? { authorization: `Bearer ${token}` } : {};
  }

  async call<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, timeoutMs = this.requestTimeoutMs): Promise<T> {
    const response = await request(`${this.baseUrl}${path}`, {
      method,
      headers: body === undefined ? this.authHeaders : { ...this.authHeaders, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      dispatcher: this.dispatcher,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    const text = await response.body.text();
    if (response.statusCode >= 300) {
      let problem: TandemApiError['problem'] = text;
      try {
        problem = JSON.parse(text) as TandemApiError['problem'];
      } catch {
        // not JSON: keep the text
      }
      throw new TandemApiError(response.statusCode, problem);
    }
    return JSON.parse(text) as T;
  }
}

/** The last part of a problem's type URN, e.g. 'version-conflict'. */
export function problemType(error: TandemApiError): string | undefined {
  const type = typeof error.problem === 'object' ? error.problem.type : undefined;
  return type?.split(':').pop();
}

const connectionErrorCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT']);

/** The coordinator could not be reached, or said to come back later (503). */
export function isUnavailable(error: unknown): boolean {
  if (error instanceof TandemApiError) return error.status === 503;
  for (let current: unknown = error, depth = 0; current && typeof current === 'object' && depth < 5; depth++) {
    const { code, cause } = current as { code?: unknown; cause?: unknown };
    if (typeof code === 'string' && connectionErrorCodes.has(code)) return true;
    current = cause;
  }
  return false;
}

export function backoffMs(attempt: number): number {
  const capMs = Math.min(1000, 25 * 2 ** attempt);
  return capMs / 2 + Math.random() * (capMs / 2);
}

// Lease ids are the holder's proof, so they come from the CSPRNG; drawing 4 KiB at a time
// instead of 16 bytes per lease keeps it off the hot path of short critical sections.
const leaseIdBytes = 16;
const leaseIdPool = Buffer.alloc(leaseIdBytes * 256);
let leaseIdOffset = leaseIdPool.length;

export function newLeaseId(): string {
  if (leaseIdOffset >= leaseIdPool.length) {
    randomFillSync(leaseIdPool);
    leaseIdOffset = 0;
  }
  const id = leaseIdPool.toString('base64url', leaseIdOffset, leaseIdOffset + leaseIdBytes);
  leaseIdOffset += leaseIdBytes;
  return id;
}
