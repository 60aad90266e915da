// Redlock: an exclusive lock held on a majority of N independent Redis servers (no replication
// between them), following the algorithm's checks:
//   1. note the time, try the lock on every server in parallel with a short per-server timeout;
//   2. the lock is ours only if a majority (floor(N/2)+1) granted it AND the time left,
//      ttl − elapsed − drift (drift = ttl·driftFactor + 2 ms), is positive;
//   3. otherwise undo it everywhere (the release is owner-checked) and retry after a random delay.
// Renewal follows the same rule, timed from the start of each renewal attempt (not from the
// first acquisition, a known bug of the redlock package).
//
// Fencing: each server's script increments that server's counter; the token is the highest of
// the majority's answers, and before the lock is reported acquired every server that granted it
// raises its counter to that token. Any later majority overlaps this one in at least one server,
// whose counter is then at least this token, so the next token is higher — as long as no server
// loses its data (a restart without persistence) and the timing assumptions hold. docs/locks.md
// says what that does and does not guarantee.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { HeldLockBase, LockBusyError, LockLostError, newLeaseId, using, type HeldLock, type RenewResult, type UsingContext } from './locks.js';
import { lockKeys, runScript, scripts, type LockKeys } from './redis-lock.js';

export interface RedlockOptions {
  /** Prefix of every key (default 'tandem:redlock:'). */
  prefix?: string;
  /** Share of the TTL allowed for clock drift between servers (default 0.01). */
  driftFactor?: number;
  /** Pause between attempts: retryDelayMs ± retryJitterMs (defaults 100 and 50). */
  retryDelayMs?: number;
  retryJitterMs?: number;
  /** Longest wait for one server in one round; a slower server counts as a refusal (default: ttl/50, at least 5 ms). */
  serverTimeoutMs?: number;
  /** The clock the elapsed-time check reads (default performance.now); tests pass a fake one. */
  clock?: () => number;
}

export interface RedlockAcquireOptions {
  /** Lease TTL (default 10 s). */
  ttlMs?: number;
  /** Longest time to keep retrying; 0 makes one attempt. acquire() defaults to 30 s. */
  waitMs?: number;
}

/** Why an attempt failed; the last one is in LockBusyError's message. */
export type RedlockRefusal = 'held' | 'no-quorum' | 'too-slow';

export class Redlock {
  readonly quorum: number;
  private readonly prefix: string;
  private readonly driftFactor: number;
  private readonly retryDelayMs: number;
  private readonly retryJitterMs: number;
  private readonly clock: () => number;

  constructor(
    private readonly servers: Redis[],
    private readonly options: RedlockOptions = {},
  ) {
    if (servers.length === 0) throw new RangeError('Redlock needs at least one server');
    this.quorum = Math.floor(servers.length / 2) + 1;
    this.prefix = options.prefix ?? 'tandem:redlock:';
    this.driftFactor = options.driftFactor ?? 0.01;
    this.retryDelayMs = options.retryDelayMs ?? 100;
    this.retryJitterMs = options.retryJitterMs ?? 50;
    this.clock = options.clock ?? (() => performance.now());
  }

  async acquire(name: string, options: RedlockAcquireOptions = {}): Promise<HeldLock> {
    const ttlMs = options.ttlMs ?? 10_000;
    if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw new RangeError(`ttlMs must be a positive whole number, got ${ttlMs}`);
    const giveUpAtMs = performance.now() + (options.waitMs ?? 30_000);
    const where = lockKeys(this.prefix, name, false);
    for (;;) {
      const id = newLeaseId();
      const attempt = await this.attempt(where, id, ttlMs);
      if (attempt.ok) return new RedlockLease(this, name, where, id, attempt.token, ttlMs, performance.now() + attempt.validityMs);
      const delayMs = this.retryDelayMs + (Math.random() * 2 - 1) * this.retryJitterMs;
      if (performance.now() + delayMs >= giveUpAtMs) throw new LockBusyError(name, `no majority of ${this.servers.length} servers (${attempt.refusal})`);
      await sleep(delayMs);
    }
  }

  async tryAcquire(name: string, options: Omit<RedlockAcquireOptions, 'waitMs'> = {}): Promise<HeldLock | null> {
    try {
      return await this.acquire(name, { ...options, waitMs: 0 });
    } catch (error) {
      if (error instanceof LockBusyError) return null;
      throw error;
    }
  }

  async using<T>(name: string, options: RedlockAcquireOptions, fn: (context: UsingContext) => Promise<T> | T): Promise<T> {
    return using(await this.acquire(name, options), fn);
  }

  /** One round of the algorithm; undoes partial success. */
  private async attempt(where: LockKeys, id: string, ttlMs: number): Promise<{ ok: true; token: number; validityMs: number } | { ok: false; refusal: RedlockRefusal }> {
    const startMs = this.clock();
    const answers = await this.onEveryServer(ttlMs, (server) =>
      runScript(server, scripts.acquire, where.keys, [id, 'x', ttlMs, '1 0 0 1000']) as Promise<[number, number]>,
    );
    const granted = answers.flatMap((answer, index) => (answer !== null && answer[0] === 1 ? [{ index, token: Number(answer[1]) }] : []));
    if (granted.length >= this.quorum) {
      const token = Math.max(...granted.map((grant) => grant.token));
      const raised = await this.onServers(
        granted.map((grant) => this.servers[grant.index]),
        ttlMs,
        (server) => runScript(server, scripts.raiseFence, [where.fence], [token]),
      );
      const validityMs = this.validityMs(ttlMs, startMs);
      if (raised.filter((answer) => answer !== null).length >= this.quorum && validityMs > 0) return { ok: true, token, validityMs };
      await this.releaseEverywhere(where, id, ttlMs);
      return { ok: false, refusal: validityMs > 0 ? 'no-quorum' : 'too-slow' };
    }
    await this.releaseEverywhere(where, id, ttlMs);
    const reachable = answers.filter((answer) => answer !== null).length;
    return { ok: false, refusal: reachable >= this.quorum ? 'held' : 'no-quorum' };
  }

  /** @internal Extends on a majority, timed from now; the new validity, or why not. */
  async extend(where: LockKeys, id: string, ttlMs: number): Promise<{ validityMs: number } | { lost: boolean }> {
    const startMs = this.clock();
    const answers = await this.onEveryServer(ttlMs, (server) => runScript(server, scripts.renew, where.keys, [id, ttlMs]) as Promise<[number]>);
    const extended = answers.filter((answer) => answer !== null && answer[0] === 1).length;
    const refused = answers.filter((answer) => answer !== null && answer[0] === 0).length;
    const validityMs = this.validityMs(ttlMs, startMs);
    if (extended >= this.quorum && validityMs > 0) return { validityMs };
    // Lost for sure once a majority can no longer be reached by anyone's renewal.
    return { lost: refused > this.servers.length - this.quorum };
  }

  /** @internal */
  async releaseEverywhere(where: LockKeys, id: string, ttlMs: number): Promise<void> {
    await this.onEveryServer(ttlMs, (server) => runScript(server, scripts.release, where.keys, [id, 1]));
  }

  private validityMs(ttlMs: number, startMs: number): number {
    const elapsedMs = this.clock() - startMs;
    const driftMs = ttlMs * this.driftFactor + 2;
    return ttlMs - elapsedMs - driftMs;
  }

  private onEveryServer<T>(ttlMs: number, call: (server: Redis) => Promise<T>): Promise<Array<T | null>> {
    return this.onServers(this.servers, ttlMs, call);
  }

  /** Runs `call` on each server in parallel; a server that fails or is slower than the timeout gives null. */
  private onServers<T>(servers: Redis[], ttlMs: number, call: (server: Redis) => Promise<T>): Promise<Array<T | null>> {
    const timeoutMs = this.options.serverTimeoutMs ?? Math.max(5, Math.floor(ttlMs / 50));
    return Promise.all(
      servers.map((server) => {
        let timer: NodeJS.Timeout | undefined;
        const expired = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)));
        const answered = call(server).catch(() => null);
        return Promise.race([answered, expired]).finally(() => clearTimeout(timer));
      }),
    );
  }
}

class RedlockLease extends HeldLockBase {
  constructor(
    private readonly redlock: Redlock,
    name: string,
    private readonly where: LockKeys,
    private readonly id: string,
    token: number,
    private readonly ttlMs: number,
    validUntilMs: number,
  ) {
    super(name, token, validUntilMs, Math.max(10, Math.floor(ttlMs / 3)));
  }

  protected async renewOnce(): Promise<RenewResult> {
    const outcome = await this.redlock.extend(this.where, this.id, this.ttlMs);
    // The validity already discounts the time the round took.
    if ('validityMs' in outcome) return { validUntilMs: performance.now() + outcome.validityMs };
    if (outcome.lost) throw new LockLostError(this.name, 'not-holder');
    throw new Error(`could not extend lock "${this.name}" on a majority in time`);
  }

  protected async releaseOnce(): Promise<void> {
    await this.redlock.releaseEverywhere(this.where, this.id, this.ttlMs);
  }
}
