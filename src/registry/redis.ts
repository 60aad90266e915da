// Service registrations on Redis: a hash of instances (JSON by "service/instanceId") and, per
// service, a sorted set of instance ids scored by deadline; a sorted set of services scored by
// their latest instance deadline. Deadlines are Redis's clock (TIME). Registering is one Lua
// script, so the limit checks and the write are atomic across coordinators.
import type { Redis } from 'ioredis';
import { redisClientFor } from '../store/redis.js';
import type { Registration } from './registry.js';
import type { RegisterResult, RegistryLimitsShared, RegistryStore, StoredRegistration } from './shared.js';

export interface RedisRegistryOptions {
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

const clock = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

// Drops what expired: instances of one service, and services with no live instance.
const sweep = `
local function sweepService(p, service)
  local key = p .. 'registry:svc:' .. service
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now)) do redis.call('HDEL', p .. 'registry:data', service .. '/' .. id) end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
end`;

// ARGV: prefix, service, instanceId, registration JSON, ttlMs, servicesMax, instancesMax.
const registerScript = `${clock}${sweep}
local p, service, id = ARGV[1], ARGV[2], ARGV[3]
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', p .. 'registry:services', '-inf', now)) do sweepService(p, gone) end
redis.call('ZREMRANGEBYSCORE', p .. 'registry:services', '-inf', now)
sweepService(p, service)
local key = p .. 'registry:svc:' .. service
if not redis.call('ZSCORE', key, id) and redis.call('ZCARD', key) >= tonumber(ARGV[7]) then return 'full-instances' end
if not redis.call('ZSCORE', p .. 'registry:services', service) and redis.call('ZCARD', p .. 'registry:services') >= tonumber(ARGV[6]) then return 'full-services' end
local exp = now + tonumber(ARGV[5])
redis.call('ZADD', key, exp, id)
redis.call('HSET', p .. 'registry:data', service .. '/' .. id, ARGV[4])
local latest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('ZADD', p .. 'registry:services', tonumber(latest[2]), service)
return 'ok'`;

// ARGV: prefix, service, instanceId. Returns 1 if a live registration was removed.
const deregisterScript = `${clock}
local p, service, id = ARGV[1], ARGV[2], ARGV[3]
local key = p .. 'registry:svc:' .. service
local score = redis.call('ZSCORE', key, id)
redis.call('ZREM', key, id)
redis.call('HDEL', p .. 'registry:data', service .. '/' .. id)
if score and tonumber(score) > now then return 1 end
return 0`;

// ARGV: prefix. Returns {json, remainingMs, ...} for every live instance.
const listScript = `${clock}
local p = ARGV[1]
local out = {}
for _, service in ipairs(redis.call('ZRANGEBYSCORE', p .. 'registry:services', '(' .. now, '+inf')) do
  local ids = redis.call('ZRANGEBYSCORE', p .. 'registry:svc:' .. service, '(' .. now, '+inf', 'WITHSCORES')
  for i = 1, #ids, 2 do
    local json = redis.call('HGET', p .. 'registry:data', service .. '/' .. ids[i])
    if json then table.insert(out, json); table.insert(out, tostring(tonumber(ids[i + 1]) - now)) end
  end
end
return out`;

type RegistryRedis = Redis & {
  tandemRegistryRegister(...args: string[]): Promise<string>;
  tandemRegistryDeregister(...args: string[]): Promise<number>;
  tandemRegistryList(prefix: string): Promise<string[]>;
};

export class RedisRegistryStore implements RegistryStore {
  private constructor(
    private readonly redis: RegistryRedis,
    private readonly prefix: string,
  ) {}

  static async open(url: string, options: RedisRegistryOptions): Promise<RedisRegistryStore> {
    const { redis: client, prefix } = redisClientFor(url, options);
    const redis = client as RegistryRedis;
    redis.defineCommand('tandemRegistryRegister', { numberOfKeys: 0, lua: registerScript });
    redis.defineCommand('tandemRegistryDeregister', { numberOfKeys: 0, lua: deregisterScript });
    redis.defineCommand('tandemRegistryList', { numberOfKeys: 0, lua: listScript });
    try {
      await redis.connect();
    } catch (error) {
      redis.disconnect();
      throw error;
    }
    return new RedisRegistryStore(redis, prefix);
  }

  async register(input: Omit<Registration, 'expiresAtMs'>, limits: RegistryLimitsShared): Promise<RegisterResult> {
    const json = JSON.stringify({ service: input.service, instanceId: input.instanceId, url: input.url, weight: input.weight, ttlMs: input.ttlMs });
    const status = await this.redis.tandemRegistryRegister(
      this.prefix,
      input.service,
      input.instanceId,
      json,
      String(input.ttlMs),
      String(limits.servicesMax),
      String(limits.instancesPerServiceMax),
    );
    if (status === 'full-instances') return { ok: false, full: 'instances' };
    if (status === 'full-services') return { ok: false, full: 'services' };
    return { ok: true, registration: { ...input, ttlRemainingMs: input.ttlMs } };
  }

  async deregister(service: string, instanceId: string): Promise<boolean> {
    return (await this.redis.tandemRegistryDeregister(this.prefix, service, instanceId)) === 1;
  }

  async list(): Promise<StoredRegistration[]> {
    const flat = await this.redis.tandemRegistryList(this.prefix);
    const out: StoredRegistration[] = [];
    for (let index = 0; index + 1 < flat.length; index += 2) {
      const stored = JSON.parse(flat[index]) as Omit<StoredRegistration, 'ttlRemainingMs'>;
      out.push({ ...stored, ttlRemainingMs: Number(flat[index + 1]) });
    }
    return out;
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
