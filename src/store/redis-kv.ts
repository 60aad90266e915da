// The versioned key-value store on Redis, shared by every coordinator on the server. Each write
// is one Lua script (check the version, take the next revision, write), so it is atomic against
// every other coordinator's writes and versions keep the SQLite store's meaning. Values and
// versions live in two hashes; a sorted set with every score 0 holds the keys, so ZRANGEBYLEX
// lists a prefix in byte order (code point order, as on SQLite). Listing is a read-only
// script, so a page never pairs a value with another write's version. Durability is Redis's
// (see the README: appendfsync always for an acknowledged write to survive a Redis crash).
import type { Redis } from 'ioredis';
import { redisClientFor } from './redis.js';
import { prefixEnd, type KvEntry, type KvOutcome, type KvWrite } from '../kv/kv.js';
import type { KvListQuery, KvPage, KvStore } from '../kv/store.js';

export interface RedisKvOptions {
  keysMax: number;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

// KEYS: values hash, versions hash, keys zset, revision counter.
// ARGV: op ('put'|'delete'), key, expectedVersion ('' = any), valueJson, keysMax.
// Returns {status, version}: status 'put-created' | 'put' | 'delete' | 'conflict' | 'not-found' | 'full'.
const writeScript = `
local current = redis.call('HGET', KEYS[2], ARGV[2])
local currentVersion = 0
if current then currentVersion = tonumber(current) end
if ARGV[3] ~= '' and currentVersion ~= tonumber(ARGV[3]) then return {'conflict', currentVersion} end
if ARGV[1] == 'delete' then
  if not current then return {'not-found', 0} end
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  return {'delete', currentVersion}
end
if not current and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return {'full', 0} end
local version = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[2], version)
redis.call('ZADD', KEYS[3], 0, ARGV[2])
if current then return {'put', version} end
return {'put-created', version}`;

// KEYS: values hash, versions hash, keys zset. ARGV: min, max, limit. Returns key, value, version triples.
const listScript = `
local keys = redis.call('ZRANGEBYLEX', KEYS[3], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, key in ipairs(keys) do
  table.insert(out, key)
  table.insert(out, redis.call('HGET', KEYS[1], key))
  table.insert(out, redis.call('HGET', KEYS[2], key))
end
return out`;

// KEYS: values hash, versions hash. ARGV: key. Returns {value, version} or nil.
const getScript = `
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return nil end
return {value, redis.call('HGET', KEYS[2], ARGV[1])}`;

type KvRedis = Redis & {
  tandemKvWrite(values: string, versions: string, keys: string, revision: string, ...args: string[]): Promise<[string, number]>;
  tandemKvList(values: string, versions: string, keys: string, min: string, max: string, limit: string): Promise<string[]>;
  tandemKvGet(values: string, versions: string, key: string): Promise<[string, string] | null>;
};

export class RedisKvStore implements KvStore {
  private readonly keys;

  private constructor(
    private readonly redis: KvRedis,
    prefix: string,
    private readonly options: RedisKvOptions,
  ) {
    this.keys = { values: `${prefix}kv:values`, versions: `${prefix}kv:versions`, keys: `${prefix}kv:keys`, revision: `${prefix}kv:revision` };
  }

  /** `redis://host:port/db?prefix=tandem:`, the same URL (and prefix) as the transaction store. */
  static async open(url: string, options: RedisKvOptions): Promise<RedisKvStore> {
    const { redis: client, prefix } = redisClientFor(url, options);
    const redis = client as KvRedis;
    redis.defineCommand('tandemKvWrite', { numberOfKeys: 4, lua: writeScript });
    redis.defineCommand('tandemKvList', { numberOfKeys: 3, lua: listScript });
    redis.defineCommand('tandemKvGet', { numberOfKeys: 2, lua: getScript });
    try {
      await redis.connect();
    } catch (error) {
      redis.disconnect();
      throw error;
    }
    return new RedisKvStore(redis, prefix, options);
  }

  async get(key: string): Promise<KvEntry | null> {
    const found = await this.redis.tandemKvGet(this.keys.values, this.keys.versions, key);
    return found ? { key, valueJson: found[0], version: Number(found[1]) } : null;
  }

  async list(query: KvListQuery): Promise<KvPage> {
    const end = prefixEnd(query.prefix);
    // The lower bound is the later of "the prefix itself" and "strictly after the cursor".
    const min = query.after !== null && query.after >= query.prefix ? `(${query.after}` : `[${query.prefix}`;
    const max = end === null ? '+' : `(${end}`;
    const flat = await this.redis.tandemKvList(this.keys.values, this.keys.versions, this.keys.keys, min, max, String(query.limit + 1));
    const entries: KvEntry[] = [];
    for (let index = 0; index + 2 < flat.length; index += 3) entries.push({ key: flat[index], valueJson: flat[index + 1], version: Number(flat[index + 2]) });
    const items = entries.slice(0, query.limit);
    return { items, nextCursor: entries.length > query.limit ? items[items.length - 1].key : null };
  }

  async write(write: KvWrite): Promise<KvOutcome> {
    const expected = write.expectedVersion === null ? '' : String(write.expectedVersion);
    const valueJson = write.type === 'put' ? write.valueJson : '';
    const [status, version] = await this.redis.tandemKvWrite(
      this.keys.values,
      this.keys.versions,
      this.keys.keys,
      this.keys.revision,
      write.type,
      write.key,
      expected,
      valueJson,
      String(this.options.keysMax),
    );
    const key = write.key;
    switch (status) {
      case 'put-created':
      case 'put':
        return { ok: true, type: 'put', key, version: Number(version), created: status === 'put-created' };
      case 'delete':
        return { ok: true, type: 'delete', key, version: Number(version) };
      case 'conflict':
        return { ok: false, reason: 'conflict', key, currentVersion: Number(version) };
      case 'not-found':
        return { ok: false, reason: 'not-found', key };
      case 'full':
        return { ok: false, reason: 'full', key };
      default:
        throw new Error(`the key-value script answered ${String(status)}`);
    }
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
