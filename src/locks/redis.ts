// Locks on Redis, shared by every coordinator on the server. A lock name's record (leases,
// queue, last fencing token) is one hash holding the JSON and a version. A change is two Lua
// scripts: the first reads the record, the Redis clock (TIME), the sessions the record names and
// which queued requests' coordinators still heartbeat; the coordinator decides; the second
// writes only if the version is unchanged and every session the new record relies on is still
// live, else the change is decided again from a fresh read (at most `casAttemptsMax` times).
// Each script is atomic, so two coordinators can never both act on one version of a record.
//
// Deciding with the clock of the read is safe: a lease that ran out between read and write is
// treated as held a moment longer, and a new lease's deadline (read time + TTL) is a moment
// earlier than it could be, never later.
//
// Sessions are hashes with PEXPIREAT at their deadline, so Redis itself forgets them on its own
// clock; a sorted set by deadline counts live ones. Waiting coordinators hear of changes
// through pub/sub (PUBLISH from the write script, after the change): fire-and-forget, which is
// why every wait is also re-checked on a timer. The scripts build key names from the prefix,
// so this backend wants a single Redis server (or one hash slot), as the transaction store does.
import type { Redis } from 'ioredis';
import { redisClientFor } from '../store/redis.js';
import type { Session } from './manager.js';
import type { Decision, LockRecord, RecordView } from './shared-state.js';
import { emptyRecord } from './shared-state.js';
import type { SharedLockBackend } from './shared-service.js';

export interface RedisLocksOptions {
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  /** Reads and decisions one change may take when other coordinators keep changing the record. */
  casAttemptsMax: number;
}

const clock = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

// KEYS[1]: record hash. ARGV[1]: key prefix, ARGV[2..]: extra session ids. PUBSUB NUMSUB is
// allowed in scripts; it counts the subscribers of a coordinator's liveness channel.
// Returns {recordJson | '', version, now, {sessionId, owner, ttl, expiresAt, ...}, {liveCoordinatorId, ...}}.
const readScript = `${clock}
local p = ARGV[1]
local rec = redis.call('HGET', KEYS[1], 'r')
local ver = redis.call('HGET', KEYS[1], 'v') or '0'
local ids, seen, coords, seenCoord = {}, {}, {}, {}
for i = 2, #ARGV do if not seen[ARGV[i]] then seen[ARGV[i]] = true; table.insert(ids, ARGV[i]) end end
if rec then
  local d = cjson.decode(rec)
  for _, l in ipairs(d.leases) do
    if type(l.sessionId) == 'string' and not seen[l.sessionId] then seen[l.sessionId] = true; table.insert(ids, l.sessionId) end
  end
  for _, w in ipairs(d.waiters) do
    if type(w.sessionId) == 'string' and not seen[w.sessionId] then seen[w.sessionId] = true; table.insert(ids, w.sessionId) end
    local c = string.match(w.requestId, '^([^.]*)%.')
    if c and not seenCoord[c] then seenCoord[c] = true; table.insert(coords, c) end
  end
end
local sessions = {}
for _, id in ipairs(ids) do
  local s = redis.call('HMGET', p .. 'lock:sess:' .. id, 'owner', 'ttl', 'exp')
  if s[3] and tonumber(s[3]) > now then
    table.insert(sessions, id); table.insert(sessions, s[1]); table.insert(sessions, s[2]); table.insert(sessions, s[3])
  end
end
local live = {}
for _, c in ipairs(coords) do
  -- Live: heartbeat key present, and its subscriber connection still subscribed.
  if redis.call('EXISTS', p .. 'lock:coord:' .. c) == 1 then
    local n = redis.call('PUBSUB', 'NUMSUB', p .. 'lock:alive:' .. c)
    if tonumber(n[2]) > 0 then table.insert(live, c) end
  end
end
return {rec or '', ver, tostring(now), sessions, live}`;

// KEYS[1]: record hash. ARGV: expected version, new record JSON ('' = unchanged), extras JSON
// {notify, mustLive[], extends[[id, expiresAt]], ends[], added[]}, key prefix, lock name, channel.
const writeScript = `${clock}
local p = ARGV[4]
local ver = redis.call('HGET', KEYS[1], 'v') or '0'
if ver ~= ARGV[1] then return 'conflict' end
local x = cjson.decode(ARGV[3])
for _, id in ipairs(x.mustLive) do
  local exp = redis.call('HGET', p .. 'lock:sess:' .. id, 'exp')
  if not exp or tonumber(exp) <= now then return 'conflict' end
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'r', ARGV[2], 'v', tostring(tonumber(ver) + 1)) end
for _, e in ipairs(x.extends) do
  local k = p .. 'lock:sess:' .. e[1]
  local exp = redis.call('HGET', k, 'exp')
  if exp and tonumber(exp) > now and e[2] > tonumber(exp) then
    redis.call('HSET', k, 'exp', tostring(e[2]))
    redis.call('PEXPIREAT', k, e[2])
    redis.call('PEXPIREAT', p .. 'lock:sessnames:' .. e[1], e[2])
    redis.call('ZADD', p .. 'lock:sessions', e[2], e[1])
  end
end
for _, id in ipairs(x.ends) do
  local k = p .. 'lock:sess:' .. id
  local exp = redis.call('HGET', k, 'exp')
  if exp and tonumber(exp) <= now then redis.call('DEL', k) end
  if not redis.call('HGET', k, 'exp') then
    redis.call('ZREM', p .. 'lock:sessions', id)
    redis.call('DEL', p .. 'lock:sessnames:' .. id)
  end
end
for _, id in ipairs(x.added) do
  local exp = redis.call('HGET', p .. 'lock:sess:' .. id, 'exp')
  if exp then
    redis.call('SADD', p .. 'lock:sessnames:' .. id, ARGV[5])
    redis.call('PEXPIREAT', p .. 'lock:sessnames:' .. id, tonumber(exp))
  end
end
if x.notify then redis.call('PUBLISH', ARGV[6], ARGV[5]) end
return 'ok'`;

// ARGV: prefix, session id, owner, ttl, sessionsMax. Returns {'ok', owner, ttl, expiresAt, now} or {'full'}.
const openSessionScript = `${clock}
local p = ARGV[1]
local k = p .. 'lock:sess:' .. ARGV[2]
local s = redis.call('HMGET', k, 'owner', 'ttl', 'exp')
if s[3] and tonumber(s[3]) > now then return {'ok', s[1], s[2], s[3], tostring(now)} end
redis.call('ZREMRANGEBYSCORE', p .. 'lock:sessions', '-inf', now)
if redis.call('ZCARD', p .. 'lock:sessions') >= tonumber(ARGV[5]) then return {'full'} end
local exp = now + tonumber(ARGV[4])
redis.call('HSET', k, 'owner', ARGV[3], 'ttl', ARGV[4], 'exp', tostring(exp))
redis.call('PEXPIREAT', k, exp)
redis.call('ZADD', p .. 'lock:sessions', exp, ARGV[2])
return {'ok', ARGV[3], ARGV[4], tostring(exp), tostring(now)}`;

// ARGV: prefix, session id. Returns {'ok', owner, ttl, expiresAt, now} or {'gone'}.
const keepaliveScript = `${clock}
local p = ARGV[1]
local k = p .. 'lock:sess:' .. ARGV[2]
local s = redis.call('HMGET', k, 'owner', 'ttl', 'exp')
if not s[3] or tonumber(s[3]) <= now then return {'gone'} end
local exp = now + tonumber(s[2])
redis.call('HSET', k, 'exp', tostring(exp))
redis.call('PEXPIREAT', k, exp)
redis.call('PEXPIREAT', p .. 'lock:sessnames:' .. ARGV[2], exp)
redis.call('ZADD', p .. 'lock:sessions', exp, ARGV[2])
return {'ok', s[1], s[2], tostring(exp), tostring(now)}`;

// ARGV: prefix, session id. Returns {'ok', name...} or {'gone'}.
const closeSessionScript = `${clock}
local p = ARGV[1]
local k = p .. 'lock:sess:' .. ARGV[2]
local exp = redis.call('HGET', k, 'exp')
local names = redis.call('SMEMBERS', p .. 'lock:sessnames:' .. ARGV[2])
redis.call('DEL', k, p .. 'lock:sessnames:' .. ARGV[2])
redis.call('ZREM', p .. 'lock:sessions', ARGV[2])
if not exp or tonumber(exp) <= now then return {'gone'} end
table.insert(names, 1, 'ok')
return names`;

type LocksRedis = Redis & {
  tandemLockRead(record: string, ...args: string[]): Promise<[string, string, string, string[], string[]]>;
  tandemLockWrite(record: string, ...args: string[]): Promise<string>;
  tandemLockOpenSession(...args: string[]): Promise<string[]>;
  tandemLockKeepalive(...args: string[]): Promise<string[]>;
  tandemLockCloseSession(...args: string[]): Promise<string[]>;
};

interface ReadResult {
  view: RecordView;
  version: string;
}

export class RedisLockBackend implements SharedLockBackend {
  readonly kind = 'redis';
  private subscriber: Redis | null = null;

  private constructor(
    private readonly redis: LocksRedis,
    private readonly prefix: string,
    private readonly options: RedisLocksOptions,
  ) {}

  /** `redis://host:port/db?prefix=tandem:`: the transaction store's URL and key prefix. */
  static async open(url: string, options: RedisLocksOptions): Promise<RedisLockBackend> {
    const { redis: client, prefix } = redisClientFor(url, options);
    const redis = client as LocksRedis;
    redis.defineCommand('tandemLockRead', { numberOfKeys: 1, lua: readScript });
    redis.defineCommand('tandemLockWrite', { numberOfKeys: 1, lua: writeScript });
    redis.defineCommand('tandemLockOpenSession', { numberOfKeys: 0, lua: openSessionScript });
    redis.defineCommand('tandemLockKeepalive', { numberOfKeys: 0, lua: keepaliveScript });
    redis.defineCommand('tandemLockCloseSession', { numberOfKeys: 0, lua: closeSessionScript });
    try {
      await redis.connect();
    } catch (error) {
      redis.disconnect();
      throw error;
    }
    return new RedisLockBackend(redis, prefix, options);
  }

  private recordKey(name: string): string {
    return `${this.prefix}lock:rec:${name}`;
  }

  private get channel(): string {
    return `${this.prefix}lock:changes`;
  }

  private async load(name: string, extraSessionIds: string[]): Promise<ReadResult> {
    const [recordJson, version, now, flat, live] = await this.redis.tandemLockRead(this.recordKey(name), this.prefix, ...extraSessionIds);
    const record = recordJson === '' ? emptyRecord() : (JSON.parse(recordJson) as LockRecord);
    const sessions = new Map<string, Session>();
    for (let index = 0; index + 3 < flat.length; index += 4) {
      sessions.set(flat[index], { sessionId: flat[index], owner: flat[index + 1], ttlMs: Number(flat[index + 2]), expiresAtMs: Number(flat[index + 3]) });
    }
    return { view: { record, sessions, nowMs: Number(now), liveCoordinators: new Set(live) }, version };
  }

  async change(name: string, extraSessionIds: string[], decide: (view: RecordView) => Decision): Promise<{ view: RecordView; decision: Decision }> {
    for (let attempt = 1; attempt <= this.options.casAttemptsMax; attempt++) {
      const { view, version } = await this.load(name, extraSessionIds);
      const decision = decide(view);
      const known = new Set<string>();
      for (const lease of view.record.leases) if (lease.sessionId !== null) known.add(lease.sessionId);
      for (const waiter of view.record.waiters) if (waiter.sessionId !== null) known.add(waiter.sessionId);
      const extras = {
        notify: decision.notify,
        // A session the new record relies on must not have been closed since the read.
        mustLive: decision.sessionIds.filter((id) => view.sessions.has(id)),
        extends: decision.sessionExtends.map((session) => [session.sessionId, session.expiresAtMs]),
        ends: decision.sessionEnds,
        added: decision.sessionIds.filter((id) => !known.has(id)),
      };
      // Nothing to write: the answers rest on one atomic read, as good as a write's check.
      if (!decision.changed && !decision.notify && extras.extends.length === 0 && extras.ends.length === 0 && extras.added.length === 0) return { view, decision };
      const status = await this.redis.tandemLockWrite(
        this.recordKey(name),
        version,
        decision.changed ? JSON.stringify(decision.record) : '',
        JSON.stringify(extras),
        this.prefix,
        name,
        this.channel,
      );
      if (status === 'ok') return { view, decision };
    }
    throw new Error(`lock "${name}" changed under ${this.options.casAttemptsMax} attempts in a row (lockCasAttemptsMax)`);
  }

  async read(name: string, extraSessionIds: string[]): Promise<RecordView> {
    return (await this.load(name, extraSessionIds)).view;
  }

  async openSession(sessionId: string, owner: string, ttlMs: number, sessionsMax: number): Promise<{ session: Session; nowMs: number } | null> {
    const answer = await this.redis.tandemLockOpenSession(this.prefix, sessionId, owner, String(ttlMs), String(sessionsMax));
    return sessionAnswer(sessionId, answer);
  }

  async keepalive(sessionId: string): Promise<{ session: Session; nowMs: number } | null> {
    return sessionAnswer(sessionId, await this.redis.tandemLockKeepalive(this.prefix, sessionId));
  }

  async closeSession(sessionId: string): Promise<string[] | null> {
    const answer = await this.redis.tandemLockCloseSession(this.prefix, sessionId);
    return answer[0] === 'ok' ? answer.slice(1) : null;
  }

  async heartbeat(coordinatorId: string, livenessMs: number): Promise<void> {
    // PX counts on Redis's clock, so liveness is judged by the same clock as every lease.
    await this.redis.set(`${this.prefix}lock:coord:${coordinatorId}`, '1', 'PX', livenessMs);
  }

  async leave(coordinatorId: string): Promise<void> {
    await this.redis.del(`${this.prefix}lock:coord:${coordinatorId}`);
  }

  async listen(coordinatorId: string, onChange: (name: string) => void, onGap: () => void): Promise<void> {
    const subscriber = this.redis.duplicate({ enableOfflineQueue: true, lazyConnect: true });
    subscriber.on('error', () => undefined);
    subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.channel) onChange(message);
    });
    let ready = false;
    // ioredis re-subscribes by itself after a reconnect; what was published meanwhile is lost.
    subscriber.on('ready', () => {
      if (ready) onGap();
      ready = true;
    });
    await subscriber.connect();
    // The second channel is never published to: being subscribed to it says this coordinator's
    // connection is open. A killed process's connection closes and the subscription with it.
    await subscriber.subscribe(this.channel, `${this.prefix}lock:alive:${coordinatorId}`);
    this.subscriber = subscriber;
  }

  async close(): Promise<void> {
    this.subscriber?.disconnect();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

function sessionAnswer(sessionId: string, answer: string[]): { session: Session; nowMs: number } | null {
  if (answer[0] !== 'ok') return null;
  return { session: { sessionId, owner: answer[1], ttlMs: Number(answer[2]), expiresAtMs: Number(answer[3]) }, nowMs: Number(answer[4]) };
}
