// Redis store (ioredis). Each transaction is a hash; sorted sets index it by due time, by
// creation time and by status; its history is a list. Every change that touches several keys
// is one Lua script, so it applies whole or not at all. Commands issued in the same turn of the
// event loop are pipelined together (ioredis auto-pipelining): the Redis form of group commit.
// Durability is Redis's: with appendonly yes and appendfsync always an acknowledged write
// survives a Redis crash; with everysec up to a second of writes may be lost; without AOF,
// everything since the last snapshot. The README says so.
import { Redis } from 'ioredis';
import type { HistoryEntry, Tx } from '../tx/types.js';
import {
  StoreUnavailableError,
  decodeCursor,
  storableWrite,
  encodeCursor,
  summarize,
  type CommitObservation,
  type ListPage,
  type ListQuery,
  type UnfinishedCounts,
  type Store,
} from './store.js';

export interface RedisStoreOptions {
  /** Time to wait for the connection at start before the store counts as unavailable. */
  connectTimeoutMs: number;
  /** Longest one command may take before the store counts as unavailable. */
  commandTimeoutMs: number;
  /** Entries a list call may look at to fill one page when filtering by mode. */
  listScanMax: number;
}

const schemaVersion = '1';

// KEYS: tx hash, due zset, created zset, status zset prefix is in ARGV, history list
// ARGV: gid, body, version, status, mode, createdAtMs, next ('' = none), owner, until, statusKeyPrefix, history entries…
const insertScript = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[2], 'version', ARGV[3], 'status', ARGV[4], 'mode', ARGV[5],
  'created', ARGV[6], 'next', ARGV[7], 'owner', ARGV[8], 'until', ARGV[9])
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1]) end
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
redis.call('ZADD', ARGV[10] .. ARGV[4], ARGV[6], ARGV[1])
for i = 11, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
return 1`;

// KEYS: tx hash, due zset, history list
// ARGV: gid, expectedVersion, body, version, status, next, owner, until, statusKeyPrefix, history entries…
const updateScript = `
local current = redis.call('HMGET', KEYS[1], 'version', 'status', 'created')
if not current[1] or current[1] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[3], 'version', ARGV[4], 'status', ARGV[5], 'next', ARGV[6], 'owner', ARGV[7], 'until', ARGV[8])
if ARGV[6] == '' then redis.call('ZREM', KEYS[2], ARGV[1]) else redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1]) end
if current[2] ~= ARGV[5] then
  redis.call('ZREM', ARGV[9] .. current[2], ARGV[1])
  redis.call('ZADD', ARGV[9] .. ARGV[5], current[3], ARGV[1])
end
for i = 10, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
return 1`;

// KEYS: tx hash. ARGV: owner, nowMs, untilMs. Returns {body, version} or nil.
const claimScript = `
local f = redis.call('HMGET', KEYS[1], 'owner', 'until', 'body')
if not f[3] then return nil end
if f[2] and f[2] ~= '' and tonumber(f[2]) > tonumber(ARGV[2]) and f[1] ~= ARGV[1] then return nil end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'until', ARGV[3])
return {f[3], tostring(version)}`;

// KEYS: due zset. ARGV: nowMs, limit, owner, txKeyPrefix, scanMax. Skips entries leased to
// others, paging past them (up to scanMax entries) so a crowd of leased work cannot hide due work.
const dueScript = `
local out = {}
local limit = tonumber(ARGV[2])
local offset = 0
while #out < limit and offset < tonumber(ARGV[5]) do
  local candidates = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', offset, 200)
  if #candidates == 0 then break end
  for _, gid in ipairs(candidates) do
    if #out >= limit then break end
    local f = redis.call('HMGET', ARGV[4] .. gid, 'owner', 'until')
    if not f[2] or f[2] == '' or tonumber(f[2]) <= tonumber(ARGV[1]) or f[1] == ARGV[3] then table.insert(out, gid) end
  end
  offset = offset + 200
end
return out`;

// KEYS: index zset (by creation). ARGV: afterCreated ('' = from the top), afterGid, limit, scanMax, mode ('' = any), txKeyPrefix.
// Newest first; returns {cutCreated, cutGid, bodies of up to limit+1 matches…}; cutCreated is ''
// unless the scan stopped at scanMax, in which case the page continues after (cutCreated, cutGid).
const listScript = `
local out = {'', ''}
local limit = tonumber(ARGV[3])
local scanned = 0
local lastCreated, lastGid = '', ''
local max = ARGV[1] == '' and '+inf' or ARGV[1]
local offset = 0
while #out <= limit + 2 do
  local page = redis.call('ZREVRANGEBYSCORE', KEYS[1], max, '-inf', 'WITHSCORES', 'LIMIT', offset, 100)
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local gid, created = page[i], page[i + 1]
    scanned = scanned + 1
    if scanned > tonumber(ARGV[4]) then
      if lastCreated == '' then out[1] = ARGV[1]; out[2] = ARGV[2] else out[1] = lastCreated; out[2] = lastGid end
      return out
    end
    local after = ARGV[1] == '' or tonumber(created) < tonumber(ARGV[1]) or (tonumber(created) == tonumber(ARGV[1]) and gid < ARGV[2])
    if after then
      lastCreated, lastGid = created, gid
      local f = redis.call('HMGET', ARGV[6] .. gid, 'mode', 'body')
      if f[2] and (ARGV[5] == '' or f[1] == ARGV[5]) then table.insert(out, f[2]) end
      if #out > limit + 2 then break end
    end
  end
  offset = offset + 100
end
return out`;

interface ScriptedRedis extends Redis {
  tandemInsert(...args: Array<string | number>): Promise<number>;
  tandemUpdate(...args: Array<string | number>): Promise<number>;
  tandemClaim(...args: Array<string | number>): Promise<[string, string] | null>;
  tandemDue(...args: Array<string | number>): Promise<string[]>;
  tandemList(...args: Array<string | number>): Promise<string[]>;
}

export class RedisStore implements Store {
  private readonly observers: Array<(observation: CommitObservation) => void> = [];
  private readonly keys;

  private constructor(
    private readonly redis: ScriptedRedis,
    prefix: string,
    private readonly options: RedisStoreOptions,
  ) {
    this.keys = {
      tx: `${prefix}tx:`,
      history: `${prefix}history:`,
      due: `${prefix}due`,
      created: `${prefix}created`,
      status: `${prefix}status:`,
      instances: `${prefix}instances`,
      schema: `${prefix}schema`,
    };
  }

  /** `redis://host:port/db?prefix=tandem:`. Connects and checks the schema version. */
  static async open(url: string, options: RedisStoreOptions): Promise<RedisStore> {
    const { redis: client, prefix } = redisClientFor(url, options);
    const redis = client as ScriptedRedis;
    redis.defineCommand('tandemInsert', { numberOfKeys: 4, lua: insertScript });
    redis.defineCommand('tandemUpdate', { numberOfKeys: 3, lua: updateScript });
    redis.defineCommand('tandemClaim', { numberOfKeys: 1, lua: claimScript });
    redis.defineCommand('tandemDue', { numberOfKeys: 1, lua: dueScript });
    redis.defineCommand('tandemList', { numberOfKeys: 1, lua: listScript });
    const store = new RedisStore(redis, prefix, options);
    try {
      await redis.connect();
      await store.migrate();
    } catch (error) {
      redis.disconnect();
      throw new StoreUnavailableError(`cannot open Redis store ${redact(url)}: ${describe(error)}`, { cause: error });
    }
    return store;
  }

  async insert(unsafeTx: Tx, unsafeHistory: HistoryEntry[]): Promise<boolean> {
    const { tx, history } = storableWrite(unsafeTx, unsafeHistory);
    return this.timed(async () => {
      const written = await this.redis.tandemInsert(
        this.keys.tx + tx.gid,
        this.keys.due,
        this.keys.created,
        this.keys.history + tx.gid,
        tx.gid,
        JSON.stringify(tx),
        tx.version,
        tx.status,
        tx.mode,
        tx.createdAtMs,
        tx.nextAttemptAtMs ?? '',
        tx.lease?.owner ?? '',
        tx.lease?.untilMs ?? '',
        this.keys.status,
        ...history.map((entry) => JSON.stringify(entry)),
      );
      return written === 1;
    });
  }

  async update(unsafeTx: Tx, expectedVersion: number, unsafeHistory: HistoryEntry[]): Promise<boolean> {
    const { tx, history } = storableWrite(unsafeTx, unsafeHistory);
    return this.timed(async () => {
      const written = await this.redis.tandemUpdate(
        this.keys.tx + tx.gid,
        this.keys.due,
        this.keys.history + tx.gid,
        tx.gid,
        expectedVersion,
        JSON.stringify(tx),
        tx.version,
        tx.status,
        tx.nextAttemptAtMs ?? '',
        tx.lease?.owner ?? '',
        tx.lease?.untilMs ?? '',
        this.keys.status,
        ...history.map((entry) => JSON.stringify(entry)),
      );
      return written === 1;
    });
  }

  async claim(gid: string, owner: string, nowMs: number, untilMs: number): Promise<Tx | null> {
    const claimed = await this.run(() => this.redis.tandemClaim(this.keys.tx + gid, owner, nowMs, untilMs));
    if (!claimed) return null;
    const tx = JSON.parse(claimed[0]) as Tx;
    return { ...tx, version: Number(claimed[1]), lease: { owner, untilMs } };
  }

  async get(gid: string): Promise<Tx | null> {
    const fields = await this.run(() => this.redis.hmget(this.keys.tx + gid, 'body', 'version', 'owner', 'until'));
    const [body, version, owner, until] = fields;
    if (!body) return null;
    const tx = JSON.parse(body) as Tx;
    return { ...tx, version: Number(version), lease: owner && until ? { owner, untilMs: Number(until) } : null };
  }

  async history(gid: string): Promise<HistoryEntry[]> {
    const entries = await this.run(() => this.redis.lrange(this.keys.history + gid, 0, -1));
    return entries.map((entry) => JSON.parse(entry) as HistoryEntry);
  }

  async countUnfinished(): Promise<UnfinishedCounts> {
    const [prepared, submitted, aborting] = await this.run(() =>
      Promise.all((['prepared', 'submitted', 'aborting'] as const).map((status) => this.redis.zcard(this.keys.status + status))),
    );
    return { prepared, submitted, aborting };
  }

  async list(query: ListQuery): Promise<ListPage> {
    const after = query.cursor ? decodeCursor(query.cursor) : null;
    const index = query.status ? this.keys.status + query.status : this.keys.created;
    const [cutCreated, cutGid, ...bodies] = await this.run(() =>
      this.redis.tandemList(index, after ? after[0] : '', after ? after[1] : '', query.limit, this.options.listScanMax, query.mode ?? '', this.keys.tx),
    );
    const items = bodies.slice(0, query.limit).map((body) => summarize(JSON.parse(body) as Tx));
    const last = items[items.length - 1];
    if (bodies.length > query.limit && last) return { items, nextCursor: encodeCursor(last.createdAtMs, last.gid) };
    // The scan stopped at listScanMax before filling the page: continue from where it stopped.
    if (cutCreated !== '') return { items, nextCursor: encodeCursor(Number(cutCreated), cutGid) };
    return { items, nextCursor: null };
  }

  async due(nowMs: number, limit: number, owner: string): Promise<string[]> {
    return this.run(() => this.redis.tandemDue(this.keys.due, nowMs, limit, owner, this.keys.tx, this.options.listScanMax));
  }

  async heartbeat(instanceId: string, nowMs: number): Promise<void> {
    await this.run(() => this.redis.zadd(this.keys.instances, nowMs, instanceId));
  }

  async liveInstances(sinceMs: number): Promise<string[]> {
    return this.run(() => this.redis.zrangebyscore(this.keys.instances, sinceMs, '+inf'));
  }

  async removeInstance(instanceId: string): Promise<void> {
    await this.run(() => this.redis.zrem(this.keys.instances, instanceId));
  }

  async clockMs(): Promise<number> {
    const [seconds, microseconds] = await this.run(() => this.redis.time());
    return Number(seconds) * 1000 + Math.floor(Number(microseconds) / 1000);
  }

  onCommit(observer: (observation: CommitObservation) => void): void {
    this.observers.push(observer);
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  private async migrate(): Promise<void> {
    const current = await this.redis.get(this.keys.schema);
    if (current === null) {
      await this.redis.set(this.keys.schema, schemaVersion, 'NX');
      return;
    }
    if (current !== schemaVersion) {
      throw new Error(`the store at this prefix has schema version ${current}; this coordinator knows version ${schemaVersion}`);
    }
  }

  /** A write, observed as a one-write commit: Redis applies each script on its own. */
  private async timed<T>(write: () => Promise<T>): Promise<T> {
    const startedMs = performance.now();
    const result = await this.run(write);
    const observation = { batchSize: 1, durationMs: performance.now() - startedMs };
    for (const observer of this.observers) observer(observation);
    return result;
  }

  private async run<T>(command: () => Promise<T>): Promise<T> {
    try {
      return await command();
    } catch (error) {
      throw new StoreUnavailableError(`Redis: ${describe(error)}`, { cause: error });
    }
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

function redact(url: string): string {
  return url.replace(/:\/\/([^:@/]*):[^@/]*@/, '://$1:***@');
}

/**
 * The client every Redis-backed store uses for `redis://host:port/db?prefix=tandem:` (not yet
 * connected), and the key prefix taken out of the URL.
 */
export function redisClientFor(url: string, options: { connectTimeoutMs: number; commandTimeoutMs: number }): { redis: Redis; prefix: string } {
  const parsed = new URL(url);
  const prefix = parsed.searchParams.get('prefix') ?? 'tandem:';
  parsed.searchParams.delete('prefix');
  const redis = new Redis(parsed.toString(), {
    lazyConnect: true,
    enableAutoPipelining: true,
    // While Redis is down, fail at once (503) instead of queueing requests without bound.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: options.connectTimeoutMs,
    commandTimeout: options.commandTimeoutMs,
    retryStrategy: (attempt) => Math.min(100 * attempt, 2000),
  });
  redis.on('error', () => undefined); // reconnects on its own; requests meanwhile get 503
  return { redis, prefix };
}
