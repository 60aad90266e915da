// One contract for every key-value backend: the same cases run against SQLite, PostgreSQL and
// Redis. Each backend gets fresh tables / a fresh key prefix per run, and "two coordinators"
// are two store instances opened on the same database.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import pg from 'pg';
import { Redis } from 'ioredis';
import type { KvWrite } from '../src/kv/kv.js';
import { SqliteKvStore, type KvStore } from '../src/kv/store.js';
import { PostgresKvStore } from '../src/store/postgres-kv.js';
import { RedisKvStore } from '../src/store/redis-kv.js';
import { requireService, services } from './support/services.js';

interface Backend {
  name: string;
  service: 'postgres' | 'redis' | null;
  /** A fresh, empty store space; `open` may be called several times to get several instances on it. */
  space(t: TestContext, keysMax?: number): Promise<{ open(): Promise<KvStore> }>;
}

const runId = `h5kv${randomBytes(4).toString('hex')}`;
let spaces = 0;

const backends: Backend[] = [
  {
    name: 'sqlite',
    service: null,
    async space(t, keysMax = 1000) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-kv-contract-'));
      t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
      const file = path.join(dir, 'kv.db');
      return { open: async () => new SqliteKvStore(file, { sync: 'full', keysMax }) };
    },
  },
  {
    name: 'postgres',
    service: 'postgres',
    async space(t, keysMax = 1000) {
      const tablePrefix = `${runId}_${spaces++}_`;
      t.after(async () => {
        const client = new pg.Client({ connectionString: services.postgres.url });
        await client.connect();
        await client.query(`DROP TABLE IF EXISTS ${tablePrefix}kv_entries, ${tablePrefix}kv_counters`);
        await client.end();
      });
      return {
        open: () =>
          PostgresKvStore.open(services.postgres.url, { keysMax, tablePrefix, writesPerCommitMax: 100, connectTimeoutMs: 5000, commandTimeoutMs: 10_000, poolSizeMax: 4 }),
      };
    },
  },
  {
    name: 'redis',
    service: 'redis',
    async space(t, keysMax = 1000) {
      const prefix = `${runId}:${spaces++}:`;
      t.after(async () => {
        const redis = new Redis(services.redis.url);
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
        await redis.quit();
      });
      return { open: () => RedisKvStore.open(`${services.redis.url}?prefix=${encodeURIComponent(prefix)}`, { keysMax, connectTimeoutMs: 5000, commandTimeoutMs: 10_000 }) };
    },
  },
];

async function opened(t: TestContext, space: { open(): Promise<KvStore> }): Promise<KvStore> {
  const store = await space.open();
  t.after(() => store.close());
  return store;
}

const put = (key: string, value: unknown, expectedVersion: number | null = null): KvWrite => ({ type: 'put', key, valueJson: JSON.stringify(value), expectedVersion });
const del = (key: string, expectedVersion: number | null = null): KvWrite => ({ type: 'delete', key, expectedVersion });

for (const backend of backends) {
  describe(`kv store contract: ${backend.name}`, () => {
    const ready = async (t: TestContext) => backend.service === null || (await requireService(t, backend.service));

    test('versions, compare-and-set, create-only, and no reuse of a version after delete', async (t) => {
      if (!(await ready(t))) return;
      const kv = await opened(t, await backend.space(t));
      assert.equal(await kv.get('config/limits'), null);
      const created = await kv.write(put('config/limits', { rps: 10 }, 0));
      assert.ok(created.ok && created.type === 'put' && created.created);
      assert.deepEqual(await kv.get('config/limits'), { key: 'config/limits', valueJson: '{"rps":10}', version: created.version });
      assert.deepEqual(await kv.write(put('config/limits', 1, 0)), { ok: false, reason: 'conflict', key: 'config/limits', currentVersion: created.version });
      const updated = await kv.write(put('config/limits', { rps: 20 }, created.version));
      assert.ok(updated.ok && updated.type === 'put' && !updated.created && updated.version > created.version);
      assert.deepEqual(await kv.write(del('config/limits', created.version)), { ok: false, reason: 'conflict', key: 'config/limits', currentVersion: updated.version });
      assert.deepEqual(await kv.write(del('config/limits', updated.version)), { ok: true, type: 'delete', key: 'config/limits', version: updated.version });
      assert.deepEqual(await kv.write(del('config/limits')), { ok: false, reason: 'not-found', key: 'config/limits' });
      assert.deepEqual(await kv.write(put('absent', 1, 7)), { ok: false, reason: 'conflict', key: 'absent', currentVersion: 0 });
      const reborn = await kv.write(put('config/limits', 5));
      assert.ok(reborn.ok && reborn.version > updated.version);
      assert.equal((await kv.write(put('config/limits', 0, created.version))).ok, false);
    });

    test('lists by prefix in code point order, a page at a time', async (t) => {
      if (!(await ready(t))) return;
      const kv = await opened(t, await backend.space(t));
      for (const key of ['users/3', 'users/1', 'users/2', 'usersx', 'user', 'orders/1', 'users/€', 'users/Z']) assert.ok((await kv.write(put(key, key.length))).ok);
      const first = await kv.list({ prefix: 'users/', after: null, limit: 2 });
      assert.deepEqual(first.items.map((item) => item.key), ['users/1', 'users/2']);
      assert.equal(first.nextCursor, 'users/2');
      const second = await kv.list({ prefix: 'users/', after: first.nextCursor, limit: 2 });
      assert.deepEqual(second.items.map((item) => item.key), ['users/3', 'users/Z']);
      const third = await kv.list({ prefix: 'users/', after: second.nextCursor, limit: 2 });
      assert.deepEqual(third.items.map((item) => item.key), ['users/€']);
      assert.equal(third.nextCursor, null);
      assert.equal((await kv.list({ prefix: '', after: null, limit: 100 })).items.length, 8);
      // A cursor before the prefix must not widen the range.
      assert.deepEqual((await kv.list({ prefix: 'users/', after: 'a', limit: 1 })).items.map((item) => item.key), ['users/1']);
      const entry = (await kv.list({ prefix: 'orders/', after: null, limit: 10 })).items[0];
      assert.deepEqual(entry, await kv.get('orders/1'));
    });

    test('kvKeysMax refuses a new key but still updates existing ones', async (t) => {
      if (!(await ready(t))) return;
      const kv = await opened(t, await backend.space(t, 2));
      assert.ok((await kv.write(put('a', 1))).ok);
      assert.ok((await kv.write(put('b', 1))).ok);
      assert.deepEqual(await kv.write(put('c', 1)), { ok: false, reason: 'full', key: 'c' });
      assert.ok((await kv.write(put('a', 2))).ok);
      assert.ok((await kv.write(del('b'))).ok);
      assert.ok((await kv.write(put('c', 1))).ok);
    });

    test('two instances on one store: concurrent read-modify-write loses no update', async (t) => {
      if (!(await ready(t))) return;
      const space = await backend.space(t);
      const instances = [await opened(t, space), await opened(t, space)];
      const workers = 6;
      const incrementsEach = 8;
      let conflicts = 0;
      await Promise.all(
        Array.from({ length: workers }, async (_, worker) => {
          const kv = instances[worker % instances.length];
          for (let done = 0, attempts = 0; done < incrementsEach; attempts++) {
            assert.ok(attempts < 2000, 'read-modify-write should converge');
            const current = await kv.get('counter');
            const next = current === null ? 1 : (JSON.parse(current.valueJson) as number) + 1;
            const outcome = await kv.write(put('counter', next, current?.version ?? 0));
            if (outcome.ok) done += 1;
            else if (outcome.reason === 'conflict') conflicts += 1;
            else assert.fail(`unexpected ${outcome.reason}`);
          }
        }),
      );
      const final = await instances[1].get('counter');
      assert.equal(final && JSON.parse(final.valueJson), workers * incrementsEach);
      assert.ok(conflicts > 0, 'the writers should have collided at least once');
    });

    test('two instances on one store share one revision counter: versions never repeat', async (t) => {
      if (!(await ready(t))) return;
      const space = await backend.space(t);
      const [a, b] = [await opened(t, space), await opened(t, space)];
      const versions: number[] = [];
      for (let round = 0; round < 4; round++) {
        for (const [kv, key] of [[a, 'from-a'], [b, 'from-b']] as const) {
          const outcome = await kv.write(put(key, round));
          assert.ok(outcome.ok);
          versions.push(outcome.version);
        }
      }
      assert.deepEqual(versions, [...versions].sort((x, y) => x - y));
      assert.equal(new Set(versions).size, versions.length, `versions ${versions.join(',')} repeat`);
    });

    test('writes in one turn of the event loop each get their own version, in order', async (t) => {
      if (!(await ready(t))) return;
      const kv = await opened(t, await backend.space(t));
      const outcomes = await Promise.all([kv.write(put('x', 1, 0)), kv.write(put('x', 2, 0)), kv.write(put('y', 1)), kv.write(del('x'))]);
      assert.equal(outcomes[0].ok, true);
      assert.equal(outcomes[1].ok, false, 'the second create-only write sees the first');
      assert.equal(outcomes[3].ok, true);
      assert.equal(await kv.get('x'), null);
      const y = await kv.get('y');
      assert.ok(y && outcomes[0].ok && y.version > outcomes[0].version);
    });

    test('keys and the revision counter survive a reopen', async (t) => {
      if (!(await ready(t))) return;
      const space = await backend.space(t);
      const first = await space.open();
      const written = await first.write(put('durable', { ok: true }));
      await first.write(put('gone', 1));
      const gone = await first.write(del('gone'));
      await first.close();
      const second = await opened(t, space);
      assert.ok(written.ok && gone.ok);
      assert.deepEqual(await second.get('durable'), { key: 'durable', valueJson: '{"ok":true}', version: written.version });
      const next = await second.write(put('fresh', 1));
      assert.ok(next.ok && next.version > gone.version, 'versions keep increasing across the reopen');
    });
  });
}
