// Redis store (ioredis). Each transaction is a hash; sorted sets index it by due time, by
// creation time, by status and (once finished) by finish time; its history is a list. Every change that touches several keys
// is one Lua script, so it applies whole or not at all. Commands issued in the same turn of the
// event loop are pipelined together (ioredis auto-pipelining): the Redis form of group commit.
// Durability is Redis's: with appendonly yes and appendfsync always an acknowledged write
// survives a Redis crash; with everysec up to a second of writes may be lost; without AOF,
// everything since the last snapshot. The README says so.
import { Redis } from 'ioredis';
import type { HistoryEntry, Tx } from '../tx/types.js';
import { isFinal } from '../tx/types.js';
import {
  StoreUnavailableError,
  decodeCursor,
  storableWrite,
  encodeCursor,
  summarize,
  type CommitObservation,
  type ListPage,
  type ListQuery,
  type PurgeRequest,
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

// Schema 2 added the finished zset (gid by finish time, for the retention); opening a schema 1
// store fills it from the status indexes (see migrate).
const schemaVersion = '2';

// KEYS: tx hash, due zset, created zset, history list, finished zset
// ARGV: gid, body, version, status, mode, createdAtMs, next ('' = none), owner, until, statusKeyPrefix,
//       finishedAtMs ('' = not finished), history entries…
const insertScript = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[2], 'version', ARGV[3], 'status', ARGV[4], 'mode', ARGV[5],
  'created', ARGV[6], 'next', ARGV[7], 'owner', ARGV[8], 'until', ARGV[9])
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1]) end
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
redis.call('ZADD', ARGV[10] .. ARGV[4], ARGV[6], ARGV[1])
if ARGV[11] ~= '' then redis.call('ZADD', KEYS[5], ARGV[11], ARGV[1]) end
for i = 12, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
return 1`;

// KEYS: tx hash, due zset, history list, finished zset
// ARGV: gid, expectedVersion, body, version, status, next, owner, until, statusKeyPrefix,
//       finishedAtMs ('' = not finished), history entries…
// The finished index is written in the same script as the status, so it never disagrees (a
// status never leaves succeeded or failed, so nothing ever takes a gid out of it but the purge).
const updateScript = `
local current = redis.call('HMGET', KEYS[1], 'version', 'status', 'created')
if not current[1] or current[1] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[3], 'version', ARGV[4], 'status', ARGV[5], 'next', ARGV[6], 'owner', ARGV[7], 'until', ARGV[8])
if ARGV[6] == '' then redis.call('ZREM', KEYS[2], ARGV[1]) else redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1]) end
if current[2] ~= ARGV[5] then
  redis.call('ZREM', ARGV[9] .. current[2], ARGV[1])
  redis.call('ZADD', ARGV[9] .. ARGV[5], current[3], ARGV[1])
end
if ARGV[10] ~= '' then redis.call('ZADD', KEYS[4], ARGV[10], ARGV[1]) end
for i = 11, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
return 1`;

// KEYS: finished zset, due zset, created zset.
// ARGV: finishedBeforeMs, nowMs, limit, txKeyPrefix, historyKeyPrefix, statusKeyPrefix, scanMax.
// Deletes finished transactions that finished before finishedBeforeMs, earliest first, each
// with its history and every index entry; one script, so each goes whole and two coordinators
// purging at once never both see one. A leased one is stepped over (up to scanMax looked at);
// an index entry whose transaction is gone or not finished is dropped, never the transaction.
const purgeScript = `
local purged, kept, scanned = 0, 0, 0
local limit, scanMax = tonumber(ARGV[3]), tonumber(ARGV[7])
while purged < limit and scanned < scanMax do
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', kept, 100)
  if #page == 0 then break end
  for _, gid in ipairs(page) do
    if purged >= limit or scanned >= scanMax then break end
    scanned = scanned + 1
    local f = redis.call('HMGET', ARGV[4] .. gid, 'status', 'until')
    if f[1] ~= 'succeeded' and f[1] ~= 'failed' then
      redis.call('ZREM', KEYS[1], gid)
    elseif f[2] and f[2] ~= '' and tonumber(f[2]) > tonumber(ARGV[2]) then
      kept = kept + 1
    else
      redis.call('DEL', ARGV[4] .. gid, ARGV[5] .. gid)
      redis.call('ZREM', KEYS[1], gid)
      redis.call('ZREM', KEYS[2], gid)
      redis.call('ZREM', KEYS[3], gid)
      redis.call('ZREM', ARGV[6] .. f[1], gid)
      purged = purged + 1
    end
  end
end
return purged`;

// KEYS: a status zset, finished zset. ARGV: offset, count, txKeyPrefix. The migration to schema
// 2: indexes one page of finished transactions by their finish time. Returns the page's size.
const backfillScript = `
local page = redis.call('ZRANGE', KEYS[1], ARGV[1], tonumber(ARGV[1]) + tonumber(ARGV[2]) - 1)
for _, gid in ipairs(page) do
  local f = redis.call('HMGET', ARGV[3] .. gid, 'status', 'body')
  if (f[1] == 'succeeded' or f[1] == 'failed') and f[2] then
    local updated = cjson.decode(f[2]).updatedAtMs
    if updated then redis.call('ZADD', KEYS[2], updated, gid) end
  end
end
return #page`;

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
  tandemPurge(...args: Array<string | number>): Promise<number>;
  tandemBackfill(...args: Array<string | number>): Promise<number>;
}

/** Entries of one status index the schema 2 migration indexes per script call. */
const backfillPageSize = 500;

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
      finished: `${prefix}finished`,
    };
  }

  /** `redis://host:port/db?prefix=tandem:`. Connects and checks the schema version. */
  static async open(url: string, options: RedisStoreOptions): Promise<RedisStore> {
    const { redis: client, prefix } = redisClientFor(url, options);
    const redis = client as ScriptedRedis;
    redis.defineCommand('tandemInsert', { numberOfKeys: 5, lua: insertScript });
    redis.defineCommand('tandemUpdate', { numberOfKeys: 4, lua: updateScript });
    redis.defineCommand('tandemPurge', { numberOfKeys: 3, lua: purgeScript });
    redis.defineCommand('tandemBackfill', { numberOfKeys: 2, lua: backfillScript });
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
        this.keys.finished,
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
        finishedAtOf(tx),
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
        this.keys.finished,
        tx.gid,
        expectedVersion,
        JSON.stringify(tx),
        tx.version,
        tx.status,
        tx.nextAttemptAtMs ?? '',
        tx.lease?.owner ?? '',
        tx.lease?.untilMs ?? '',
        this.keys.status,
        finishedAtOf(tx),
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

  async purgeFinished(request: PurgeRequest): Promise<number> {
    return this.run(() =>
      this.redis.tandemPurge(
        this.keys.finished,
        this.keys.due,
        this.keys.created,
        request.finishedBeforeMs,
        request.nowMs,
        request.limit,
        this.keys.tx,
        this.keys.history,
        this.keys.status,
        this.options.listScanMax,
      ),
    );
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

  /**
   * A new prefix starts at the current schema. Schema 1 (no finished index) moves to 2 by
   * indexing every finished transaction by its finish time, page by page; that is idempotent,
   * so coordinators starting together may all do it. A 1.x coordinator refuses to open a
   * schema 2 store; one still running during the upgrade writes no finished index, so what it
   * finishes afterwards is never purged: stop them before starting this version.
   */
  private async migrate(): Promise<void> {
    const current = await this.redis.get(this.keys.schema);
    if (current === null) {
      await this.redis.set(this.keys.schema, schemaVersion, 'NX');
      const raced = await this.redis.get(this.keys.schema);
      if (raced === schemaVersion) return;
      return this.migrateFrom(raced);
    }
    return this.migrateFrom(current);
  }

  private async migrateFrom(current: string | null): Promise<void> {
    if (current === schemaVersion) return;
    if (current !== '1') {
      throw new Error(`the store at this prefix has schema version ${current}; this coordinator knows version ${schemaVersion}`);
    }
    for (const status of ['succeeded', 'failed']) {
      for (let offset = 0; ; offset += backfillPageSize) {
        const seen = await this.redis.tandemBackfill(this.keys.status + status, this.keys.finished, offset, backfillPageSize, this.keys.tx);
        if (seen < backfillPageSize) break;
      }
    }
    await this.redis.set(this.keys.schema, schemaVersion);
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

/** The finished index's score: the finish time of a finished transaction, '' otherwise. */
function finishedAtOf(tx: Tx): number | '' {
  return isFinal(tx) ? tx.updatedAtMs : '';
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
