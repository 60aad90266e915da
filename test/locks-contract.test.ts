// One contract for every lock backend: the same cases run against the SQLite coordinator's
// service and the shared-store service on PostgreSQL and Redis. On the shared stores "two
// coordinators" are two services opened on the same store, and the cases that need two run
// there only (a SQLite file serves one coordinator).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import pg from 'pg';
import { Redis } from 'ioredis';
import { limitDefaults, type Limits } from '../src/config.js';
import { PostgresLockBackend } from '../src/locks/postgres.js';
import { RedisLockBackend } from '../src/locks/redis.js';
import { LockService, type AcquireInput, type Locks, type Outcome } from '../src/locks/service.js';
import { SharedLockService, type SharedLockBackend } from '../src/locks/shared-service.js';
import { SqliteLockStore } from '../src/locks/store.js';
import { requireService, services } from './support/services.js';

// A long re-check bound: every wake-up here must come from a notification or a store-clock deadline.
const limits: Limits = { ...limitDefaults, lockRecheckMs: 60_000 };

// The services' timers are unref'd (a coordinator's HTTP server keeps its process alive); here
// nothing else would, so a wait whose only pending event is a timer would end the test run.
const keepAlive = setInterval(() => undefined, 1000);
after(() => clearInterval(keepAlive));

interface OpenOptions {
  limits?: Partial<Limits>;
  /** Shared stores: drop every wake-up notification, as a lossy channel would. */
  deaf?: boolean;
}

interface Space {
  open(options?: OpenOptions): Promise<Locks>;
}

/** A backend whose notifications never arrive (its connection stays open): only re-checks can wake its waiters. */
function deaf(backend: SharedLockBackend): SharedLockBackend {
  return new Proxy(backend, {
    get(target, property, receiver) {
      if (property === 'listen') return (coordinatorId: string, _onChange: unknown, onGap: () => void) => target.listen(coordinatorId, () => undefined, onGap);
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

const sharedOpen = async (backend: SharedLockBackend, options: OpenOptions = {}) =>
  SharedLockService.open({ backend: options.deaf ? deaf(backend) : backend, limits: { ...limits, ...options.limits } });

interface Backend {
  name: string;
  service: 'postgres' | 'redis' | null;
  shared: boolean;
  space(t: TestContext): Promise<Space>;
}

const runId = `h7lk${randomBytes(4).toString('hex')}`;
let spaces = 0;

const backends: Backend[] = [
  {
    name: 'sqlite',
    service: null,
    shared: false,
    async space(t) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-locks-contract-'));
      t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
      const file = path.join(dir, 'locks.db');
      return { open: () => LockService.open({ store: new SqliteLockStore(file, { sync: 'full' }), limits }) };
    },
  },
  {
    name: 'postgres',
    service: 'postgres',
    shared: true,
    async space(t) {
      const schema = `${runId}_${spaces++}`;
      const admin = new pg.Client({ connectionString: services.postgres.url });
      await admin.connect();
      await admin.query(`CREATE SCHEMA ${schema}`);
      await admin.end();
      t.after(async () => {
        const client = new pg.Client({ connectionString: services.postgres.url });
        await client.connect();
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await client.end();
      });
      const url = `${services.postgres.url}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
      return {
        open: async (options) => sharedOpen(await PostgresLockBackend.open(url, { connectTimeoutMs: 5000, commandTimeoutMs: 10_000, poolSizeMax: 4 }), options),
      };
    },
  },
  {
    name: 'redis',
    service: 'redis',
    shared: true,
    async space(t) {
      const prefix = `${runId}:${spaces++}:`;
      t.after(async () => {
        const redis = new Redis(services.redis.url);
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
        await redis.quit();
      });
      const url = `${services.redis.url}?prefix=${encodeURIComponent(prefix)}`;
      return {
        open: async (options) => sharedOpen(await RedisLockBackend.open(url, { connectTimeoutMs: 5000, commandTimeoutMs: 10_000, casAttemptsMax: 50 }), options),
      };
    },
  },
];

async function opened(t: TestContext, space: Space, options?: OpenOptions): Promise<Locks> {
  const locks = await space.open(options);
  t.after(() => locks.close());
  return locks;
}

const base: AcquireInput = { name: 'l', mode: 'exclusive', permits: 1, ttlMs: 30_000, sessionId: null, owner: 'test', fair: true, waitMs: 0 };
const ask = (overrides: Partial<AcquireInput>): AcquireInput => ({ ...base, ...overrides });

function granted(outcome: Outcome): Extract<Outcome, { kind: 'granted' }> {
  assert.equal(outcome.kind, 'granted', `expected a grant, got ${JSON.stringify(outcome)}`);
  return outcome as Extract<Outcome, { kind: 'granted' }>;
}

/** Resolves once the lock shows `count` waiters: the store has them queued. Bounded looks. */
async function waitersQueued(locks: Locks, name: string, count: number): Promise<void> {
  for (let look = 0; look < 2000; look++) {
    if ((await locks.inspect(name)).waiters.length >= count) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`lock ${name} never had ${count} waiters`);
}

for (const backend of backends) {
  describe(`lock contract: ${backend.name}`, () => {
    async function ready(t: TestContext): Promise<Space | null> {
      if (backend.service && !(await requireService(t, backend.service))) return null;
      return backend.space(t);
    }

    test('an exclusive lock admits one holder; tokens strictly increase; release hands it on', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const locks = await opened(t, space);
      const first = granted(await locks.acquire(ask({ name: 'x' })));
      assert.equal((await locks.acquire(ask({ name: 'x' }))).kind, 'busy');
      assert.ok(first.ttlRemainingMs > 0 && first.ttlRemainingMs <= 30_000);
      assert.equal((await locks.release('x', first.lease.leaseId)).kind, 'released');
      assert.equal((await locks.release('x', first.lease.leaseId)).kind, 'not-holder');
      const second = granted(await locks.acquire(ask({ name: 'x' })));
      assert.ok(second.lease.token > first.lease.token, `${second.lease.token} > ${first.lease.token}`);
      const view = await locks.inspect('x');
      assert.equal(view.holders.length, 1);
      assert.equal(view.holders[0].token, second.lease.token);
    });

    test('shared holders coexist and keep exclusive out; a semaphore admits its permits; kinds must match', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const locks = await opened(t, space);
      granted(await locks.acquire(ask({ name: 'rw', mode: 'shared' })));
      granted(await locks.acquire(ask({ name: 'rw', mode: 'shared' })));
      assert.equal((await locks.acquire(ask({ name: 'rw' }))).kind, 'busy');
      granted(await locks.acquire(ask({ name: 'sem', mode: 'semaphore', permits: 2 })));
      granted(await locks.acquire(ask({ name: 'sem', mode: 'semaphore', permits: 2 })));
      assert.equal((await locks.acquire(ask({ name: 'sem', mode: 'semaphore', permits: 2 }))).kind, 'busy');
      assert.equal((await locks.acquire(ask({ name: 'sem', mode: 'semaphore', permits: 3 }))).kind, 'mismatch');
      assert.equal((await locks.acquire(ask({ name: 'sem' }))).kind, 'mismatch');
    });

    test('a waiter is answered when the holder releases, and only then', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const locks = await opened(t, space);
      const holder = granted(await locks.acquire(ask({ name: 'w' })));
      let answered = false;
      const waiting = locks.acquire(ask({ name: 'w', waitMs: 20_000 })).finally(() => (answered = true));
      await waitersQueued(locks, 'w', 1);
      assert.equal(answered, false);
      await locks.release('w', holder.lease.leaseId);
      const next = granted(await waiting);
      assert.ok(next.lease.token > holder.lease.token);
    });

    test('fair waiters are served in arrival order; a non-fair request may barge past them when it fits', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const locks = await opened(t, space);
      const reader = granted(await locks.acquire(ask({ name: 'f', mode: 'shared' })));
      const writer = locks.acquire(ask({ name: 'f', waitMs: 20_000, owner: 'writer' }));
      await waitersQueued(locks, 'f', 1);
      assert.equal((await locks.acquire(ask({ name: 'f', mode: 'shared' }))).kind, 'busy', 'a fair reader waits behind the writer');
      const barging = granted(await locks.acquire(ask({ name: 'f', mode: 'shared', fair: false })));
      const second = locks.acquire(ask({ name: 'f', waitMs: 20_000, owner: 'second' }));
      await waitersQueued(locks, 'f', 2);
      await locks.release('f', reader.lease.leaseId);
      await locks.release('f', barging.lease.leaseId);
      const won = granted(await writer);
      assert.equal(won.lease.owner, 'writer');
      assert.equal((await locks.inspect('f')).waiters[0]?.owner, 'second');
      await locks.release('f', won.lease.leaseId);
      assert.equal(granted(await second).lease.owner, 'second');
    });

    test('a wait that runs out answers busy (wait-limit) and leaves the queue', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const locks = await opened(t, space);
      granted(await locks.acquire(ask({ name: 'wl' })));
      const outcome = await locks.acquire(ask({ name: 'wl', waitMs: 300 }));
      assert.deepEqual(outcome, { kind: 'busy', reason: 'wait-limit' });
      assert.equal((await locks.inspect('wl')).waiters.length, 0);
    });

    test('a lease runs out by its TTL and its waiter gets the lock; renew extends, a stranger cannot', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const locks = await opened(t, space);
      const short = granted(await locks.acquire(ask({ name: 'ttl', ttlMs: 300 })));
      const renewed = await locks.renew('ttl', short.lease.leaseId, 400);
      assert.equal(renewed.kind, 'renewed');
      assert.equal((await locks.renew('ttl', 'A'.repeat(22), null)).kind, 'not-holder');
      const next = granted(await locks.acquire(ask({ name: 'ttl', waitMs: 20_000 })));
      assert.ok(next.lease.token > short.lease.token);
      assert.equal((await locks.renew('ttl', short.lease.leaseId, null)).kind, 'not-holder');
    });

    test('sessions: keepalive, a session-bound lease, close releases it; an expired session frees its locks', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const locks = await opened(t, space);
      const opened1 = await locks.openSession(30_000, 'worker');
      assert.equal(opened1.kind, 'session');
      const sessionId = (opened1 as Extract<Outcome, { kind: 'session' }>).session.sessionId;
      assert.equal((await locks.keepalive(sessionId)).kind, 'session');
      granted(await locks.acquire(ask({ name: 's', ttlMs: null, sessionId })));
      assert.equal((await locks.acquire(ask({ name: 's' }))).kind, 'busy');
      const closed = await locks.closeSession(sessionId);
      assert.deepEqual(closed, { kind: 'session-closed', releasedCount: 1 });
      assert.equal((await locks.keepalive(sessionId)).kind, 'no-session');
      granted(await locks.acquire(ask({ name: 's' })));
      assert.equal((await locks.acquire(ask({ name: 'none', ttlMs: null, sessionId }))).kind, 'no-session');

      const brief = (await locks.openSession(300, 'brief')) as Extract<Outcome, { kind: 'session' }>;
      granted(await locks.acquire(ask({ name: 'se', ttlMs: null, sessionId: brief.session.sessionId })));
      granted(await locks.acquire(ask({ name: 'se', waitMs: 20_000 })));
      assert.equal((await locks.keepalive(brief.session.sessionId)).kind, 'no-session');
    });

    test('one session over many locks: concurrent renewals all succeed, closing releases every lease', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const locks = await opened(t, space);
      const session = (await locks.openSession(30_000, 'many')) as Extract<Outcome, { kind: 'session' }>;
      const sessionId = session.session.sessionId;
      const names = Array.from({ length: 8 }, (_, index) => `many-${index}`);
      const leases = await Promise.all(names.map(async (name) => granted(await locks.acquire(ask({ name, ttlMs: null, sessionId }))).lease));
      const renewals = await Promise.all([...leases, ...leases].map((lease) => locks.renew(lease.name, lease.leaseId, null)));
      assert.deepEqual(renewals.map((renewal) => renewal.kind), Array(16).fill('renewed'));
      assert.deepEqual(await locks.closeSession(sessionId), { kind: 'session-closed', releasedCount: 8 });
      for (const name of names) granted(await locks.acquire(ask({ name })));
    });

    test('grants are durable: a reopened service knows the holder and keeps raising tokens', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const first = await space.open();
      const held = granted(await first.acquire(ask({ name: 'd' })));
      await first.close();
      const second = await opened(t, space);
      assert.equal((await second.acquire(ask({ name: 'd' }))).kind, 'busy');
      assert.equal((await second.inspect('d')).holders[0]?.token, held.lease.token);
      assert.equal((await second.release('d', held.lease.leaseId)).kind, 'released');
      assert.ok(granted(await second.acquire(ask({ name: 'd' }))).lease.token > held.lease.token);
    });

    if (!backend.shared) return;

    test('two coordinators: a lock held through one is respected, fenced and handed off through the other', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const a = await opened(t, space);
      const b = await opened(t, space);
      const onA = granted(await a.acquire(ask({ name: 'two' })));
      assert.equal((await b.acquire(ask({ name: 'two' }))).kind, 'busy');
      const waiting = b.acquire(ask({ name: 'two', waitMs: 20_000 }));
      await waitersQueued(a, 'two', 1);
      await a.release('two', onA.lease.leaseId);
      const onB = granted(await waiting);
      assert.ok(onB.lease.token > onA.lease.token);
      assert.equal((await a.acquire(ask({ name: 'two' }))).kind, 'busy');
      assert.equal((await a.release('two', onB.lease.leaseId)).kind, 'released', 'any coordinator may release with the lease id');
      // Fair order holds across coordinators: the first to queue (on A) goes first.
      const holder = granted(await b.acquire(ask({ name: 'order' })));
      const firstInLine = a.acquire(ask({ name: 'order', waitMs: 20_000, owner: 'first' }));
      await waitersQueued(b, 'order', 1);
      const secondInLine = b.acquire(ask({ name: 'order', waitMs: 20_000, owner: 'second' }));
      await waitersQueued(a, 'order', 2);
      await b.release('order', holder.lease.leaseId);
      const first = granted(await firstInLine);
      assert.equal(first.lease.owner, 'first');
      await b.release('order', first.lease.leaseId);
      assert.equal(granted(await secondInLine).lease.owner, 'second');
    });

    test('two coordinators: many contenders on one name never hold it at once, and tokens never repeat', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const a = await opened(t, space);
      const b = await opened(t, space);
      let holding = 0;
      const tokens: number[] = [];
      const worker = async (locks: Locks, rounds: number) => {
        for (let round = 0; round < rounds; round++) {
          const got = granted(await locks.acquire(ask({ name: 'hot', waitMs: 30_000 })));
          holding += 1;
          assert.equal(holding, 1, 'two holders at once');
          tokens.push(got.lease.token);
          await new Promise((resolve) => setImmediate(resolve));
          holding -= 1;
          assert.equal((await locks.release('hot', got.lease.leaseId)).kind, 'released');
        }
      };
      await Promise.all([worker(a, 10), worker(b, 10), worker(a, 10), worker(b, 10)]);
      assert.equal(tokens.length, 40);
      // Pushed while holding, so in grant order: each holder's token beats the one before.
      for (let index = 1; index < tokens.length; index++) assert.ok(tokens[index] > tokens[index - 1], `token ${tokens[index]} after ${tokens[index - 1]}`);
    });

    test('two coordinators: with every notification lost, a waiter is still answered within lockRecheckMs', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const a = await opened(t, space);
      const b = await opened(t, space, { deaf: true, limits: { lockRecheckMs: 200 } });
      const held = granted(await a.acquire(ask({ name: 'lost' })));
      const waiting = b.acquire(ask({ name: 'lost', waitMs: 20_000 }));
      await waitersQueued(a, 'lost', 1);
      await a.release('lost', held.lease.leaseId);
      // No notification reaches b; its re-check (every 200 ms here, 30 s of lease left) must find the grant.
      const next = granted(await waiting);
      assert.ok(next.lease.token > held.lease.token);
    });

    test('two coordinators: a coordinator that stops heartbeating has its queued requests dropped', async (t) => {
      const space = await ready(t);
      if (!space) return;
      const a = await opened(t, space, { limits: { lockCoordinatorHeartbeatMs: 100, lockCoordinatorLivenessMs: 400 } });
      const b = await opened(t, space, { limits: { lockCoordinatorHeartbeatMs: 100, lockCoordinatorLivenessMs: 400, lockRecheckMs: 100 } });
      const held = granted(await a.acquire(ask({ name: 'gone', owner: 'holder' })));
      // b's request queues first; then b goes silent without saying so (as a killed process would).
      const orphan = b.acquire(ask({ name: 'gone', waitMs: 20_000, owner: 'orphan' }));
      await waitersQueued(a, 'gone', 1);
      const next = a.acquire(ask({ name: 'gone', waitMs: 20_000, owner: 'next' }));
      await waitersQueued(a, 'gone', 2);
      (b as SharedLockService)['heartbeatTimer']?.close();
      for (let look = 0; look < 2000 && (await a.inspect('gone')).waiters.length > 1; look++) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.deepEqual((await a.inspect('gone')).waiters.map((waiter) => waiter.owner), ['next']);
      await a.release('gone', held.lease.leaseId);
      assert.equal(granted(await next).lease.owner, 'next');
      assert.equal((await orphan).kind, 'unavailable', 'the silent coordinator learns its request was dropped');
    });
  });
}
