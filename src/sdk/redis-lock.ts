// Locks on one Redis server, for users without a coordinator: exclusive and shared locks,
// counting semaphores, fair (FIFO) queueing, and a fencing token from a counter incremented in
// the same Lua script that grants the lock. Every change to a lock is one script, so it is
// atomic on the server; release and renew check the owner (the lease id) in the script.
//
// Layout of one lock (all keys share the {name} hash tag, so a cluster keeps them together):
//   …:h  hash        lease id → "<mode> <token> <expiry>"   the holders (key expires with the last)
//   …:q  sorted set  lease id → arrival number              the queue, in arrival order
//   …:w  hash        lease id → "<mode><fair> <expiry>"     each waiter's place; '#' counts arrivals
//   …:f  string      the fencing counter (never expires)
// Modes: x exclusive, s shared, p a semaphore permit. Expiries are the Redis server's clock
// (TIME) in ms, so clients' clocks never have to agree.
//
// Waiting: a waiter's place in the queue lives queueEntryTtlMs unless the waiter refreshes it,
// so a dead waiter blocks nobody for long. Whoever frees capacity (release, cancel, or an
// acquire that found expired holders) publishes the ids of the waiters that now fit on the
// lock's channel; those try again at once. A grant while others wait publishes "@<ttl>" so
// that waiters look again when that lease would run out (expiry itself publishes nothing);
// a waiter also looks again, at the latest, when its place needs a refresh.
//
// The uncontended path is kept short, since it is most calls: acquire is TIME, HGETALL, ZCARD,
// INCR, HSET, PEXPIRE; release is HDEL and ZCARD.
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import { HeldLockBase, LockBusyError, LockLostError, newLeaseId, using, type HeldLock, type RenewResult, type UsingContext } from './locks.js';

// Scripts start with their fast path (no helper defined yet: closures cost even when unused),
// then define the helpers for the rest.
const luaKeys = `
local h, q, w, f = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
`;

const luaHelpers = `
local channel = string.sub(h, 1, -3) .. ':c'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The live holders: drops those whose lease ran out; returns their count, whether one holds
-- it exclusively, the earliest expiry, the entry of lease 'me' if live, and how many it dropped.
local function holders(now, me)
  local flat = redis.call('HGETALL', h)
  local count, xheld, earliest, mine, dropped = 0, false, nil, nil, 0
  for i = 1, #flat, 2 do
    local mode, token, expiry = string.match(flat[i + 1], '^(%a) (%d+) (%d+)$')
    expiry = tonumber(expiry)
    if expiry <= now then
      redis.call('HDEL', h, flat[i])
      dropped = dropped + 1
    else
      count = count + 1
      if mode == 'x' then xheld = true end
      if earliest == nil or expiry < earliest then earliest = expiry end
      if flat[i] == me then mine = {mode, tonumber(token), expiry} end
    end
  end
  return count, xheld, earliest, mine, dropped
end
local function fits(count, xheld, mode, limit)
  if mode == 'p' then return count < limit end
  if mode == 'x' then return count == 0 end
  return not xheld
end
local function taken(count, xheld, mode)
  return count + 1, xheld or mode == 'x'
end
local function parse_waiter(meta)
  return string.match(meta, '^(%a)(%d) (%d+)$')
end
-- Publishes the queued ids that fit now, in arrival order; behind the first fair waiter that
-- does not fit, only non-fair waiters may go, and only those among the next 8 (the rest try
-- again on their own timers), so a long queue costs a release little.
local function wake(now, limit)
  local count, xheld = holders(now, nil)
  local blocked = false
  local after_block = 0
  local woken = {}
  for _, id in ipairs(redis.call('ZRANGE', q, 0, 199)) do
    if blocked then
      after_block = after_block + 1
      if after_block > 8 then break end
    end
    local meta = redis.call('HGET', w, id)
    local wmode, wfair, wexpiry
    if meta then wmode, wfair, wexpiry = parse_waiter(meta) end
    if not meta or tonumber(wexpiry) <= now then
      redis.call('ZREM', q, id)
      redis.call('HDEL', w, id)
    elseif (not blocked or wfair == '0') and fits(count, xheld, wmode, limit) then
      count, xheld = taken(count, xheld, wmode)
      woken[#woken + 1] = id
    elseif wfair == '1' then
      blocked = true
    end
  end
  if #woken > 0 then redis.call('PUBLISH', channel, table.concat(woken, ' ')) end
end
`;

/**
 * ARGV: id, mode, ttlMs, "<limit> <fair 1/0> <enqueue 1/0> <queueEntryTtlMs>" (read only off
 * the fast path) → {1, token, ttlMs left} | {0, retryAfterMs}
 */
const acquireLua = `${luaKeys}
local id, mode, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if redis.call('EXISTS', h, q) == 0 then
  -- Nobody holds it or waits for it: the common case.
  local token = redis.call('INCR', f)
  redis.call('HSET', h, id, mode .. ' ' .. token .. ' ' .. (now + ttl))
  redis.call('PEXPIRE', h, ttl)
  return {1, token, ttl}
end
${luaHelpers}
local limit, fair, enqueue, qttl = string.match(ARGV[4], '^(%d+) (%d) (%d) (%d+)$')
limit, fair, enqueue, qttl = tonumber(limit), fair == '1', enqueue == '1', tonumber(qttl)
local count, xheld, earliest, mine, dropped = holders(now, id)
if mine then
  -- A retried call whose answer was lost: the same lease.
  return {1, mine[2], mine[3] - now}
end
local ok = fits(count, xheld, mode, limit)
local queued = redis.call('ZCARD', q)
if ok and fair and queued > 0 then
  -- Everyone queued ahead must fit first (they have been, or will be, woken).
  local c, x = count, xheld
  for _, other in ipairs(redis.call('ZRANGE', q, 0, -1)) do
    if other == id then break end
    local meta = redis.call('HGET', w, other)
    local omode, ofair, oexpiry
    if meta then omode, ofair, oexpiry = parse_waiter(meta) end
    if not meta or tonumber(oexpiry) <= now then
      redis.call('ZREM', q, other)
      redis.call('HDEL', w, other)
    elseif fits(c, x, omode, limit) then
      c, x = taken(c, x, omode)
    else
      ok = false
      break
    end
  end
  ok = ok and fits(c, x, mode, limit)
end
if ok then
  local token = redis.call('INCR', f)
  redis.call('HSET', h, id, mode .. ' ' .. token .. ' ' .. (now + ttl))
  if count == 0 or redis.call('PTTL', h) < ttl then redis.call('PEXPIRE', h, ttl) end
  if queued > 0 then
    if redis.call('ZREM', q, id) == 1 then redis.call('HDEL', w, id) end
    -- Waiters behind learn when this lease runs out, in case it is never released.
    if redis.call('ZCARD', q) > 0 then redis.call('PUBLISH', channel, '@' .. ttl) end
  end
  return {1, token, ttl}
end
if enqueue then
  if not redis.call('ZSCORE', q, id) then
    redis.call('ZADD', q, redis.call('HINCRBY', w, '#', 1), id)
  end
  redis.call('HSET', w, id, mode .. (fair and '1' or '0') .. ' ' .. (now + qttl))
  redis.call('PEXPIRE', q, qttl * 2)
  redis.call('PEXPIRE', w, qttl * 2)
end
if dropped > 0 then wake(now, limit) end
local retry = math.floor(qttl / 3)
if earliest ~= nil then retry = math.min(retry, earliest - now + 1) end
return {0, retry}
`;

/** ARGV: id, ttlMs → {1, token, ttlMs} | {0} */
const renewLua = `${luaKeys}${luaHelpers}
local id, ttl = ARGV[1], tonumber(ARGV[2])
local meta = redis.call('HGET', h, id)
if not meta then return {0} end
local now = now_ms()
local mode, token, expiry = string.match(meta, '^(%a) (%d+) (%d+)$')
if tonumber(expiry) <= now then
  redis.call('HDEL', h, id)
  return {0}
end
redis.call('HSET', h, id, mode .. ' ' .. token .. ' ' .. (now + ttl))
if redis.call('PTTL', h) < ttl then redis.call('PEXPIRE', h, ttl) end
return {1, tonumber(token), ttl}
`;

/** ARGV: id, limit → 1 if the lease was there | 0 */
const releaseLua = `${luaKeys}
local removed = redis.call('HDEL', h, ARGV[1])
if redis.call('EXISTS', q) == 0 then return removed end
${luaHelpers}
wake(now_ms(), tonumber(ARGV[2]))
return removed
`;

/** A waiter gives up. ARGV: id, limit → 1 */
const cancelLua = `${luaKeys}${luaHelpers}
if redis.call('ZREM', q, ARGV[1]) == 1 then
  redis.call('HDEL', w, ARGV[1])
  wake(now_ms(), tonumber(ARGV[2]))
end
return 1
`;

/** ARGV: none → {now, holders (id, meta)…, '|', waiters (id, meta)…} */
const inspectLua = `${luaKeys}${luaHelpers}
local now = now_ms()
local out = {now}
local flat = redis.call('HGETALL', h)
for i = 1, #flat, 2 do
  local expiry = tonumber(string.match(flat[i + 1], ' (%d+)$'))
  if expiry > now then
    out[#out + 1] = flat[i]
    out[#out + 1] = flat[i + 1]
  end
end
out[#out + 1] = '|'
for _, id in ipairs(redis.call('ZRANGE', q, 0, -1)) do
  local meta = redis.call('HGET', w, id)
  if meta then
    out[#out + 1] = id
    out[#out + 1] = meta
  end
end
return out
`;

/** Raises the fencing counter to at least ARGV[1] (Redlock's second round). KEYS: the counter. */
export const raiseFenceLua = `
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if current < wanted then redis.call('SET', KEYS[1], wanted) end
return 1
`;

export interface LuaScript {
  source: string;
  sha: string;
}

function script(source: string): LuaScript {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

export const scripts = {
  acquire: script(acquireLua),
  renew: script(renewLua),
  release: script(releaseLua),
  cancel: script(cancelLua),
  inspect: script(inspectLua),
  raiseFence: script(raiseFenceLua),
};

/** EVALSHA, falling back to EVAL the first time a server has not seen the script. */
export function runScript(redis: Redis, lua: LuaScript, keys: string[], args: Array<string | number>): Promise<unknown> {
  // No async wrapper: this is on every acquire and release.
  try {
    return redis.evalsha(lua.sha, keys.length, ...keys, ...args).catch((error: unknown) => {
      if (!(error instanceof Error) || !error.message.includes('NOSCRIPT')) throw error;
      return redis.eval(lua.source, keys.length, ...keys, ...args);
    });
  } catch (error) {
    return Promise.reject(error);
  }
}

export type RedisLockMode = 'exclusive' | 'shared' | 'semaphore';

const modeCodes: Record<RedisLockMode, string> = { exclusive: 'x', shared: 's', semaphore: 'p' };
const modeNames: Record<string, RedisLockMode> = { x: 'exclusive', s: 'shared', p: 'semaphore' };

/** The keys of one lock (holders, queue, waiters, fence), and the channel its waiters listen on. */
export interface LockKeys {
  keys: string[];
  holders: string;
  fence: string;
  channel: string;
}

export function lockKeys(prefix: string, name: string, semaphore: boolean): LockKeys {
  const base = `${prefix}${semaphore ? 'sem:' : ''}{${name}}`;
  // The scripts derive the channel from the holders key: …:h → …:c.
  return { keys: [`${base}:h`, `${base}:q`, `${base}:w`, `${base}:f`], holders: `${base}:h`, fence: `${base}:f`, channel: `${base}:c` };
}

export interface RedisLockOptions {
  /** Runs the scripts. */
  redis: Redis;
  /** Listens for wake-ups; by default a duplicate of `redis`, made on the first wait. */
  subscriber?: Redis;
  /** Prefix of every key (default 'tandem:lock:'). */
  prefix?: string;
  /** Share of the TTL assumed lost to clock-rate differences (default 0.01). */
  driftFactor?: number;
  /** How long a waiter's place in the queue survives without a refresh (default 3000). */
  queueEntryTtlMs?: number;
}

export interface RedisAcquireOptions {
  /** 'exclusive' (default) or 'shared'; pass `permits` instead for a semaphore. */
  mode?: 'exclusive' | 'shared';
  /** Makes the lock a counting semaphore of this many permits; every client must pass the same. */
  permits?: number;
  /** Lease TTL (default 10 s). */
  ttlMs?: number;
  /** Longest wait; 0 (the default for tryAcquire) fails at once. acquire() defaults to 30 s. */
  waitMs?: number;
  /** First come, first served (default true); false may barge ahead of waiters. */
  fair?: boolean;
}

export interface RedisLockInspection {
  holders: Array<{ mode: RedisLockMode; token: number; ttlRemainingMs: number }>;
  waiters: Array<{ mode: RedisLockMode; fair: boolean }>;
}

const defaultTtlMs = 10_000;
const defaultWaitMs = 30_000;
const keyCacheMax = 10_000;

export class RedisLockClient {
  readonly prefix: string;
  private readonly redis: Redis;
  private subscriber: Redis | null;
  private readonly ownsSubscriber: boolean;
  private readonly driftFactor: number;
  private readonly queueEntryTtlMs: number;
  /** channel → waiter id → its wake-up */
  private readonly waiters = new Map<string, Map<string, Wakeup>>();
  private readonly subscriptions = new Map<string, Promise<unknown>>();
  private readonly keyCache = new Map<string, LockKeys>();

  constructor(options: RedisLockOptions) {
    this.redis = options.redis;
    this.subscriber = options.subscriber ?? null;
    this.ownsSubscriber = !options.subscriber;
    this.prefix = options.prefix ?? 'tandem:lock:';
    this.driftFactor = options.driftFactor ?? 0.01;
    this.queueEntryTtlMs = options.queueEntryTtlMs ?? 3000;
    if (this.subscriber) this.listen(this.subscriber);
  }

  /** Acquires or throws LockBusyError when `waitMs` (default 30 s) passes first. */
  async acquire(name: string, options: RedisAcquireOptions = {}): Promise<HeldLock> {
    const semaphore = options.permits !== undefined;
    const mode: RedisLockMode = semaphore ? 'semaphore' : (options.mode ?? 'exclusive');
    const ttlMs = options.ttlMs ?? defaultTtlMs;
    const waitMs = options.waitMs ?? defaultWaitMs;
    const limit = options.permits ?? 1;
    checkPositiveInteger('ttlMs', ttlMs);
    checkPositiveInteger('permits', limit);
    const where = this.keysOf(name, semaphore);
    const id = newLeaseId();
    const deadlineMs = performance.now() + waitMs;
    const slowPathArgs = `${limit} ${options.fair === false ? '0' : '1'} ${waitMs > 0 ? '1' : '0'} ${this.queueEntryTtlMs}`;
    const args = [id, modeCodes[mode], ttlMs, slowPathArgs];
    let listening = false;
    try {
      for (;;) {
        // Registered before the attempt, so a wake-up sent while it runs is not lost.
        const wakeup = listening ? this.register(where.channel, id) : null;
        const sentAtMs = performance.now();
        const answer = (await runScript(this.redis, scripts.acquire, where.keys, args)) as [number, number, number?];
        if (answer[0] === 1) {
          wakeup?.cancel();
          return new RedisLease(this, name, where, id, answer[1], ttlMs, limit, this.validUntil(sentAtMs, answer[2] ?? 0));
        }
        const leftMs = deadlineMs - performance.now();
        if (leftMs <= 0) {
          wakeup?.cancel();
          throw new LockBusyError(name, waitMs === 0 ? 'held' : `not granted within ${waitMs} ms`);
        }
        if (!wakeup) {
          // Listen first, then look again at once.
          await this.subscribe(where.channel);
          listening = true;
          continue;
        }
        wakeup.wakeWithin(Math.min(answer[1], leftMs, this.queueEntryTtlMs / 3));
        await wakeup.promise;
      }
    } catch (error) {
      if (waitMs > 0) await runScript(this.redis, scripts.cancel, where.keys, [id, limit]).catch(() => undefined);
      throw error;
    } finally {
      if (listening) this.stopWaiting(where.channel, id);
    }
  }

  async tryAcquire(name: string, options: Omit<RedisAcquireOptions, 'waitMs'> = {}): Promise<HeldLock | null> {
    try {
      return await this.acquire(name, { ...options, waitMs: 0 });
    } catch (error) {
      if (error instanceof LockBusyError) return null;
      throw error;
    }
  }

  async using<T>(name: string, options: RedisAcquireOptions, fn: (context: UsingContext) => Promise<T> | T): Promise<T> {
    return using(await this.acquire(name, options), fn);
  }

  async inspect(name: string, options: { semaphore?: boolean } = {}): Promise<RedisLockInspection> {
    const where = this.keysOf(name, options.semaphore ?? false);
    const flat = (await runScript(this.redis, scripts.inspect, where.keys, [])) as Array<string | number>;
    const nowMs = Number(flat[0]);
    const split = flat.indexOf('|');
    const holders: RedisLockInspection['holders'] = [];
    for (let index = 1; index < split; index += 2) {
      const [code, token, expiryMs] = String(flat[index + 1]).split(' ');
      holders.push({ mode: modeNames[code], token: Number(token), ttlRemainingMs: Number(expiryMs) - nowMs });
    }
    const waiters: RedisLockInspection['waiters'] = [];
    for (let index = split + 1; index < flat.length; index += 2) {
      const meta = String(flat[index + 1]);
      waiters.push({ mode: modeNames[meta[0]], fair: meta[1] === '1' });
    }
    return { holders, waiters };
  }

  /** Stops listening; quits the subscriber connection if this client made it. */
  async close(): Promise<void> {
    if (this.subscriber && this.ownsSubscriber) {
      this.subscriber.disconnect();
      this.subscriber = null;
    }
  }

  /** @internal */
  validUntil(sentAtMs: number, ttlMs: number): number {
    return sentAtMs + ttlMs * (1 - this.driftFactor) - 1;
  }

  /** @internal */
  async renewLease(where: LockKeys, id: string, ttlMs: number): Promise<number> {
    const answer = (await runScript(this.redis, scripts.renew, where.keys, [id, ttlMs])) as [number, number?, number?];
    return answer[0];
  }

  /** @internal */
  releaseLease(where: LockKeys, id: string, limit: number): Promise<unknown> {
    return runScript(this.redis, scripts.release, where.keys, [id, limit]);
  }

  /** Key names are built once per lock name (a bounded cache: the hot path repeats names). */
  private keysOf(name: string, semaphore: boolean): LockKeys {
    const cacheKey = semaphore ? `s${name}` : `l${name}`;
    let where = this.keyCache.get(cacheKey);
    if (!where) {
      if (this.keyCache.size >= keyCacheMax) this.keyCache.clear();
      where = lockKeys(this.prefix, name, semaphore);
      this.keyCache.set(cacheKey, where);
    }
    return where;
  }

  private register(channel: string, id: string): Wakeup {
    let byId = this.waiters.get(channel);
    if (!byId) {
      byId = new Map();
      this.waiters.set(channel, byId);
    }
    byId.get(id)?.cancel();
    const wakeup = new Wakeup();
    byId.set(id, wakeup);
    return wakeup;
  }

  private stopWaiting(channel: string, id: string): void {
    const byId = this.waiters.get(channel);
    byId?.get(id)?.cancel();
    byId?.delete(id);
    if (byId && byId.size === 0) {
      this.waiters.delete(channel);
      this.subscriptions.delete(channel);
      void this.subscriber?.unsubscribe(channel).catch(() => undefined);
    }
  }

  private subscribe(channel: string): Promise<unknown> {
    let subscription = this.subscriptions.get(channel);
    if (!subscription) {
      if (!this.subscriber) {
        this.subscriber = this.redis.duplicate();
        this.listen(this.subscriber);
      }
      subscription = this.subscriber.subscribe(channel);
      this.subscriptions.set(channel, subscription);
    }
    return subscription;
  }

  private listen(subscriber: Redis): void {
    subscriber.on('message', (channel: string, message: string) => {
      const byId = this.waiters.get(channel);
      if (!byId) return;
      if (message.startsWith('@')) {
        // A new holder's lease ends in this many ms unless renewed: look again then.
        const ttlMs = Number(message.slice(1));
        for (const wakeup of byId.values()) wakeup.wakeWithin(ttlMs + 1);
        return;
      }
      for (const id of message.split(' ')) byId.get(id)?.wake();
    });
  }
}

class RedisLease extends HeldLockBase {
  constructor(
    private readonly client: RedisLockClient,
    name: string,
    private readonly where: LockKeys,
    readonly leaseId: string,
    token: number,
    private readonly ttlMs: number,
    private readonly limit: number,
    validUntilMs: number,
  ) {
    super(name, token, validUntilMs, Math.max(10, Math.floor(ttlMs / 3)));
  }

  protected async renewOnce(): Promise<RenewResult> {
    const sentAtMs = performance.now();
    const renewed = await this.client.renewLease(this.where, this.leaseId, this.ttlMs);
    if (renewed !== 1) throw new LockLostError(this.name, 'not-holder');
    return { validUntilMs: this.client.validUntil(sentAtMs, this.ttlMs) };
  }

  protected releaseOnce(): Promise<unknown> {
    return this.client.releaseLease(this.where, this.leaseId, this.limit);
  }
}

/** Resolves on wake(), or when the earliest time given to wakeWithin() comes. */
class Wakeup {
  readonly promise: Promise<void>;
  private resolve!: () => void;
  private timer: NodeJS.Timeout | null = null;
  private atMs = Infinity;

  constructor() {
    this.promise = new Promise<void>((resolve) => (this.resolve = resolve));
  }

  wake(): void {
    this.cancel();
    this.resolve();
  }

  wakeWithin(delayMs: number): void {
    const atMs = performance.now() + delayMs;
    if (atMs >= this.atMs) return;
    this.atMs = atMs;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.wake(), Math.max(0, delayMs));
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

function checkPositiveInteger(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${field} must be a positive whole number, got ${value}`);
}
