// The single-instance Redis backend against the real Redis on this machine (127.0.0.1:6379):
// owner checks, fencing tokens, shared/exclusive, semaphores, FIFO queueing, server-sent
// wake-ups, dead waiters, and the mutual-exclusion checker with paused and killed holders.
// Every run uses its own key prefix and deletes its keys at the end.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { LockBusyError, LockLostError, type HeldLock } from '../src/sdk/locks.js';
import { lockKeys, RedisLockClient, runScript, scripts, type RedisLockOptions } from '../src/sdk/redis-lock.js';
import { ClientRoster, FencedCounter, StaleTokenError } from './support/fenced-resource.js';
import { requireService, services } from './support/services.js';

interface RedisFixture {
  redis: Redis;
  prefix: string;
  client(options?: Partial<RedisLockOptions>): RedisLockClient;
}

async function redisFor(t: TestContext): Promise<RedisFixture | null> {
  if (!(await requireService(t, 'redis'))) return null;
  const redis = new Redis({ host: services.redis.host, port: services.redis.port });
  const prefix = `tandem-test:${randomBytes(6).toString('hex')}:`;
  const clients: RedisLockClient[] = [];
  t.after(async () => {
    await Promise.all(clients.map((client) => client.close()));
    const keys: string[] = [];
    for (let cursor = '0'; ; ) {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
      if (cursor === '0') break;
    }
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  return {
    redis,
    prefix,
    client: (options = {}) => {
      const client = new RedisLockClient({ redis, prefix, ...options });
      clients.push(client);
      return client;
    },
  };
}

/** Resolves once `count` waiters are queued on the lock: the arrival order is then fixed. */
async function waitersQueued(client: RedisLockClient, name: string, count: number, semaphore = false): Promise<void> {
  for (let look = 0; look < 500; look++) {
    if ((await client.inspect(name, { semaphore })).waiters.length >= count) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`lock ${name} never had ${count} waiters`);
}

describe('Redis lock: single instance', () => {
  test('release and renew check the owner; tokens come from one counter per lock; an expired lease is not renewed', async (t) => {
    const fixture = await redisFor(t);
    if (!fixture) return;
    const client = fixture.client();
    const first = await client.acquire('job', { ttlMs: 200 });
    const where = lockKeys(fixture.prefix, 'job', false);
    assert.equal(await runScript(fixture.redis, scripts.release, where.keys, ['forged-lease-id', 1]), 0);
    assert.equal(await client.renewLease(where, 'forged-lease-id', 1000), 0);
    assert.equal((await client.inspect('job')).holders.length, 1, 'a stranger could not release it');
    // The next holder is let in when the first lease runs out.
    const second = await client.acquire('job', { ttlMs: 5000, waitMs: 5000 });
    assert.equal(second.token, first.token + 1);
    await assert.rejects(first.renew(), LockLostError);
    assert.ok(first.signal.aborted);
    await second.release();
    // The counter outlives the lock's other keys.
    assert.equal(await fixture.redis.exists(where.holders), 0);
    const third = await client.acquire('job', { ttlMs: 1000 });
    assert.equal(third.token, second.token + 1);
    await third.release();
    await assert.rejects(client.acquire('job', { ttlMs: 0 }), RangeError);
    await assert.rejects(client.acquire('job', { ttlMs: -1 }), RangeError);
    await assert.rejects(client.acquire('pool', { permits: 0 }), RangeError);
  });

  test('shared holders together, exclusive alone', async (t) => {
    const fixture = await redisFor(t);
    if (!fixture) return;
    const client = fixture.client();
    const readers = await Promise.all([1, 2, 3].map(() => client.acquire('doc', { mode: 'shared', ttlMs: 10_000, waitMs: 0 })));
    assert.equal(await client.tryAcquire('doc', { ttlMs: 10_000 }), null);
    const writer = client.acquire('doc', { ttlMs: 10_000, waitMs: 10_000 });
    await waitersQueued(client, 'doc', 1);
    assert.equal(await client.tryAcquire('doc', { mode: 'shared', ttlMs: 10_000 }), null, 'a fair reader queues behind the writer');
    for (const reader of readers) await reader.release();
    const writing = await writer;
    assert.equal(await client.tryAcquire('doc', { mode: 'shared', ttlMs: 10_000, fair: false }), null);
    assert.deepEqual((await client.inspect('doc')).holders.map((holder) => holder.mode), ['exclusive']);
    await writing.release();
  });

  test('fair queueing hands over in arrival order, woken by the server (waiters would not look again for 20 s)', async (t) => {
    const fixture = await redisFor(t);
    if (!fixture) return;
    // A long queue-entry TTL makes a waiter's own retry timer far away: only a wake-up is quick.
    const client = fixture.client({ queueEntryTtlMs: 60_000 });
    const holder = await client.acquire('queue', { ttlMs: 60_000 });
    const arrivals: Array<Promise<HeldLock>> = [];
    for (let index = 0; index < 6; index++) {
      arrivals.push(client.acquire('queue', { ttlMs: 60_000, waitMs: 5000 }));
      await waitersQueued(client, 'queue', index + 1);
    }
    let current = holder;
    const tokens: number[] = [];
    for (const arrival of arrivals) {
      await current.release();
      current = await arrival;
      tokens.push(current.token);
    }
    await current.release();
    assert.deepEqual(tokens, Array.from({ length: 6 }, (_, index) => holder.token + 1 + index));
  });

  test('a semaphore of N permits never has more than N holders', async (t) => {
    const fixture = await redisFor(t);
    if (!fixture) return;
    const client = fixture.client();
    const permits = 3;
    let active = 0;
    let peak = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let round = 0; round < 8; round++) {
          const lease = await client.acquire('pool', { permits, ttlMs: 10_000, waitMs: 10_000 });
          active += 1;
          peak = Math.max(peak, active);
          assert.ok(active <= permits);
          const view = await client.inspect('pool', { semaphore: true });
          assert.ok(view.holders.length <= permits, `Redis shows ${view.holders.length} holders of ${permits} permits`);
          active -= 1;
          await lease.release();
        }
      }),
    );
    assert.ok(peak > 1);
  });

  test('a waiter that died leaves the queue once its place is not refreshed', async (t) => {
    const fixture = await redisFor(t);
    if (!fixture) return;
    const client = fixture.client({ queueEntryTtlMs: 300 });
    const holder = await client.acquire('gate', { ttlMs: 60_000 });
    const where = lockKeys(fixture.prefix, 'gate', false);
    // A client queues and dies: one acquire script call, never repeated.
    await runScript(fixture.redis, scripts.acquire, where.keys, ['dead-waiter', 'x', 60_000, '1 1 1 300']);
    assert.equal((await client.inspect('gate')).waiters.length, 1);
    await holder.release();
    const next = await client.acquire('gate', { ttlMs: 1000, waitMs: 5000 });
    assert.ok(next.token > holder.token);
    await next.release();
  });

  test('mutual exclusion with fencing: paused and killed holders, no lost update', async (t) => {
    const fixture = await redisFor(t);
    if (!fixture) return;
    const resource = new FencedCounter();
    const liveRefusals: string[] = [];
    const counts = { paused: 0, killed: 0, staleWritesRefused: 0 };
    const iterations = 12;
    const clientCount = 6;
    const roster = new ClientRoster(clientCount);
    await Promise.all(
      Array.from({ length: clientCount }, async (_, index) => {
        const client = fixture.client();
        for (let iteration = 0; iteration < iterations; iteration++) {
          const fault = (index + iteration) % 7 === 3 ? 'pause' : (index * 3 + iteration) % 11 === 5 ? 'kill' : 'none';
          const lease = await client.acquire('ledger', { ttlMs: fault === 'none' ? 5000 : 200, waitMs: 30_000 });
          const value = resource.read(lease.token);
          if (fault === 'kill') {
            counts.killed += 1; // dies holding it: no write, no release
            continue;
          }
          if (fault === 'pause') {
            counts.paused += 1;
            // Paused until a newer holder took over (its lease ran out), or nobody else is left.
            await Promise.race([resource.tokenAbove(lease.token), roster.othersDone()]);
          }
          try {
            resource.write(lease.token, value + 1, `client${index}`);
          } catch (error) {
            if (!(error instanceof StaleTokenError)) throw error;
            if (fault === 'pause') counts.staleWritesRefused += 1;
            else liveRefusals.push(error.message);
          }
          await lease.release();
        }
        roster.finished();
      }),
    );
    assert.deepEqual(resource.orderViolations(), []);
    assert.equal(resource.value, resource.accepted.length, 'lost updates');
    assert.deepEqual(liveRefusals, [], 'a holder with a live lease was refused: two holders overlapped');
    assert.ok(counts.paused > 0 && counts.killed > 0 && counts.staleWritesRefused > 0, JSON.stringify(counts));
  });

  test('a waiter that runs out of wait gives up its place', async (t) => {
    const fixture = await redisFor(t);
    if (!fixture) return;
    const client = fixture.client();
    const holder = await client.acquire('short', { ttlMs: 60_000 });
    await assert.rejects(client.acquire('short', { ttlMs: 1000, waitMs: 100 }), LockBusyError);
    assert.deepEqual((await client.inspect('short')).waiters, []);
    await holder.release();
  });
});
