// One contract, three backends: every store must pass all of this against a real server.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import pg from 'pg';
import { Redis } from 'ioredis';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/store.js';
import { newTx } from '../src/tx/machine.js';
import type { HistoryEntry, Tx } from '../src/tx/types.js';
import { tempDir } from './support/coordinator.js';
import { requireService, services } from './support/services.js';

interface Backend {
  name: string;
  service?: 'postgres' | 'redis';
  /** A URL to a fresh, empty store; the same URL reopens the same data. */
  freshUrl(): Promise<string>;
}

const runId = randomBytes(4).toString('hex');
const pgSchemas: string[] = [];
const redisPrefixes: string[] = [];

const backends: Backend[] = [
  { name: 'sqlite', freshUrl: async () => `sqlite:${path.join(tempDir('tandem-store-'), 'tandem.db')}` },
  {
    name: 'postgres',
    service: 'postgres',
    async freshUrl() {
      const schema = `tandem_contract_${runId}_${pgSchemas.length}`;
      pgSchemas.push(schema);
      const client = new pg.Client({ connectionString: services.postgres.url });
      await client.connect();
      await client.query(`CREATE SCHEMA ${schema}`);
      await client.end();
      return `${services.postgres.url}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    },
  },
  {
    name: 'redis',
    service: 'redis',
    async freshUrl() {
      const prefix = `tandem-contract:${runId}:${redisPrefixes.length}:`;
      redisPrefixes.push(prefix);
      return `${services.redis.url}/0?prefix=${encodeURIComponent(prefix)}`;
    },
  },
];

after(async () => {
  if (pgSchemas.length > 0) {
    const client = new pg.Client({ connectionString: services.postgres.url });
    await client.connect();
    for (const schema of pgSchemas) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  }
  if (redisPrefixes.length > 0) {
    const redis = new Redis(services.redis.url);
    for (const prefix of redisPrefixes) {
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
    }
    redis.disconnect();
  }
});

const storeOptions = { sqliteSync: 'normal' as const, postgresPoolSizeMax: 4, postgresFlushesInFlightMax: 2, storeConnectTimeoutMs: 3000, storeCommandTimeoutMs: 5000 };
const t0 = 1_700_000_000_000;

function makeTx(gid: string, overrides: Partial<Tx> = {}): Tx {
  const base = newTx(
    {
      gid,
      mode: 'saga',
      branches: [{ branchId: '01', ops: { action: { url: 'http://127.0.0.1:1/a', status: 'pending', attempts: 0 }, compensate: { url: 'http://127.0.0.1:1/c', status: 'pending', attempts: 0 } } }],
      options: { timeoutToFailMs: 0, requestTimeoutMs: 3000, retryIntervalMs: 1000, retryIntervalMsMax: 60000, retryLimit: null, branchHeaders: {}, concurrent: false },
    },
    t0,
  );
  return { ...base, status: 'submitted', phase: 'action', version: 1, nextAttemptAtMs: t0 + 1000, lease: null, ...overrides };
}

const entry = (status: HistoryEntry['status'], phase: string, atMs = t0): HistoryEntry => ({ atMs, status, phase });

async function withStore(t: TestContext, backend: Backend, body: (store: Store, url: string) => Promise<void>): Promise<void> {
  if (backend.service && !(await requireService(t, backend.service))) return;
  const url = await backend.freshUrl();
  const store = await openStore(url, storeOptions);
  try {
    await body(store, url);
  } finally {
    await store.close();
  }
}

for (const backend of backends) {
  describe(`store contract: ${backend.name}`, () => {
    test('insert writes once; a second insert of the gid is refused and changes nothing', async (t) => {
      await withStore(t, backend, async (store) => {
        const tx = makeTx('g1');
        assert.equal(await store.insert(tx, [entry('prepared', 'prepared'), entry('submitted', 'action')]), true);
        assert.equal(await store.insert({ ...tx, status: 'failed' }, [entry('failed', 'done')]), false);
        const stored = await store.get('g1');
        assert.ok(stored);
        assert.equal(stored.status, 'submitted');
        assert.equal(stored.version, 1);
        assert.deepEqual(stored.branches, tx.branches);
        assert.deepEqual((await store.history('g1')).map((h) => `${h.status}/${h.phase}`), ['prepared/prepared', 'submitted/action']);
        assert.equal(await store.get('missing'), null);
      });
    });

    test('update succeeds only on the expected version, and appends history only when it writes', async (t) => {
      await withStore(t, backend, async (store) => {
        await store.insert(makeTx('g2'), [entry('submitted', 'action')]);
        const next = { ...makeTx('g2'), version: 2, status: 'succeeded' as const, phase: 'done', nextAttemptAtMs: null };
        assert.equal(await store.update(next, 5, [entry('failed', 'done')]), false);
        assert.equal(await store.update(next, 1, [entry('succeeded', 'done', t0 + 5)]), true);
        assert.equal(await store.update({ ...next, version: 3 }, 1, []), false, 'the old version is gone');
        const stored = await store.get('g2');
        assert.equal(stored?.status, 'succeeded');
        assert.equal(stored?.version, 2);
        assert.deepEqual((await store.history('g2')).map((h) => h.status), ['submitted', 'succeeded']);
      });
    });

    test('claim takes a free or expired lease, bumps the version, and refuses a held one', async (t) => {
      await withStore(t, backend, async (store) => {
        await store.insert(makeTx('g3'), []);
        const first = await store.claim('g3', 'a', t0, t0 + 100);
        assert.equal(first?.version, 2);
        assert.deepEqual(first?.lease, { owner: 'a', untilMs: t0 + 100 });
        assert.equal(await store.claim('g3', 'b', t0 + 50, t0 + 150), null, 'b must wait for a');
        const again = await store.claim('g3', 'a', t0 + 60, t0 + 160);
        assert.equal(again?.version, 3, 'the holder may renew');
        const taken = await store.claim('g3', 'b', t0 + 161, t0 + 300);
        assert.equal(taken?.lease?.owner, 'b', 'an expired lease can be taken');
        assert.equal(await store.update({ ...makeTx('g3'), version: 4 }, 3, []), false, "a's stale write fails");
        assert.equal((await store.get('g3'))?.lease?.owner, 'b');
        assert.equal(await store.claim('missing', 'a', t0, t0 + 1), null);
      });
    });

    test('due lists unfinished, due, unleased (or own-leased) transactions, earliest first', async (t) => {
      await withStore(t, backend, async (store) => {
        await store.insert(makeTx('late', { nextAttemptAtMs: t0 + 300 }), []);
        await store.insert(makeTx('early', { nextAttemptAtMs: t0 + 100 }), []);
        await store.insert(makeTx('future', { nextAttemptAtMs: t0 + 10_000 }), []);
        await store.insert(makeTx('ended', { status: 'succeeded', phase: 'done', nextAttemptAtMs: null }), []);
        await store.insert(makeTx('leased', { nextAttemptAtMs: t0 + 50, lease: { owner: 'other', untilMs: t0 + 5000 } }), []);
        await store.insert(makeTx('mine', { nextAttemptAtMs: t0 + 200, lease: { owner: 'me', untilMs: t0 + 5000 } }), []);
        assert.deepEqual(await store.due(t0 + 1000, 10, 'me'), ['early', 'mine', 'late']);
        assert.deepEqual(await store.due(t0 + 1000, 1, 'me'), ['early']);
        assert.deepEqual(await store.due(t0 + 6000, 10, 'me'), ['leased', 'early', 'mine', 'late']);
      });
    });

    test('list filters by status and mode and pages newest first, each item once', async (t) => {
      await withStore(t, backend, async (store) => {
        for (let index = 0; index < 23; index++) {
          const status = index % 3 === 0 ? 'failed' : 'succeeded';
          await store.insert(makeTx(`l${String(index).padStart(2, '0')}`, { createdAtMs: t0 + Math.floor(index / 2), status, mode: index % 2 ? 'tcc' : 'saga' }), []);
        }
        const seen: string[] = [];
        let cursor: string | undefined;
        for (let page = 0; page < 10; page++) {
          const result = await store.list({ limit: 5, ...(cursor ? { cursor } : {}) });
          seen.push(...result.items.map((item) => item.gid));
          if (!result.nextCursor) break;
          cursor = result.nextCursor;
        }
        assert.equal(seen.length, 23);
        assert.equal(new Set(seen).size, 23);
        assert.deepEqual(seen.slice(0, 3), ['l22', 'l21', 'l20']);
        const failed = await store.list({ limit: 100, status: 'failed' });
        assert.equal(failed.items.length, 8);
        assert.ok(failed.items.every((item) => item.status === 'failed'));
        const tccFailed = await store.list({ limit: 100, status: 'failed', mode: 'tcc' });
        assert.deepEqual(tccFailed.items.map((item) => item.gid).sort(), ['l03', 'l09', 'l15', 'l21']);
      });
    });

    test('a status change moves the transaction between status filters', async (t) => {
      await withStore(t, backend, async (store) => {
        await store.insert(makeTx('s1'), []);
        assert.equal((await store.list({ limit: 10, status: 'submitted' })).items.length, 1);
        await store.update({ ...makeTx('s1'), version: 2, status: 'failed', phase: 'done', nextAttemptAtMs: null }, 1, []);
        assert.equal((await store.list({ limit: 10, status: 'submitted' })).items.length, 0);
        assert.deepEqual((await store.list({ limit: 10, status: 'failed' })).items.map((item) => item.gid), ['s1']);
        assert.deepEqual(await store.due(t0 + 100_000, 10, 'me'), [], 'an ended transaction is never due');
      });
    });

    test('heartbeats tell live instances; a removed instance is gone at once', async (t) => {
      await withStore(t, backend, async (store) => {
        await store.heartbeat('a', t0);
        await store.heartbeat('b', t0 + 100);
        await store.heartbeat('a', t0 + 200);
        assert.deepEqual((await store.liveInstances(t0 + 150)).sort(), ['a']);
        assert.deepEqual((await store.liveInstances(t0)).sort(), ['a', 'b']);
        await store.removeInstance('a');
        assert.deepEqual(await store.liveInstances(t0), ['b']);
      });
    });

    test('answers with NUL bytes and lone surrogates are stored, and read back with those characters replaced', async (t) => {
      await withStore(t, backend, async (store) => {
        // What a participant might answer: a C string's terminator, half of an emoji pair.
        const raw = 'bad\u0000answer \ud83d and \ude00 end';
        const clean = 'bad\ufffdanswer \ufffd and \ufffd end';
        const kept = 'a whole pair \ud83d\ude00 stays';
        const base = makeTx('nul1');
        const tx: Tx = {
          ...base,
          reason: raw,
          branches: base.branches.map((branch) => ({ ...branch, ops: { ...branch.ops, action: { ...branch.ops.action!, lastError: raw } } })),
        };
        assert.equal(await store.insert(tx, [{ ...entry('submitted', 'action'), reason: raw }]), true);
        const next = { ...tx, version: 2, status: 'aborting' as const, phase: 'compensate', reason: kept };
        assert.equal(await store.update(next, 1, [{ ...entry('aborting', 'compensate'), reason: raw }]), true);
        const stored = await store.get('nul1');
        assert.equal(stored?.reason, kept);
        assert.equal(stored?.branches[0]?.ops.action?.lastError, clean);
        assert.deepEqual((await store.history('nul1')).map((h) => h.reason), [clean, clean]);
        assert.equal(tx.reason, raw, "the caller's object is left as it was");
      });
    });

    test("clockMs tells the store's time: never going back, close to this host's clock", async (t) => {
      await withStore(t, backend, async (store) => {
        const first = await store.clockMs();
        const second = await store.clockMs();
        assert.ok(Number.isSafeInteger(first) && Number.isSafeInteger(second), `integers: ${first}, ${second}`);
        assert.ok(second >= first, `non-decreasing: ${first} then ${second}`);
        // Loose on purpose: the services run on this machine, so their clocks are this host's.
        assert.ok(Math.abs(second - Date.now()) < 5000, `within seconds of Date.now(): ${second} vs ${Date.now()}`);
      });
    });

    test('many concurrent writes all land, and survive closing and reopening', async (t) => {
      await withStore(t, backend, async (store, url) => {
        const batchSizes: number[] = [];
        store.onCommit((observation) => batchSizes.push(observation.batchSize));
        const gids = Array.from({ length: 200 }, (_, index) => `c${index}`);
        const inserted = await Promise.all(gids.map((gid) => store.insert(makeTx(gid), [entry('submitted', 'action')])));
        assert.ok(inserted.every(Boolean));
        const updated = await Promise.all(gids.map((gid) => store.update({ ...makeTx(gid), version: 2, status: 'succeeded', phase: 'done', nextAttemptAtMs: null }, 1, [entry('succeeded', 'done')])));
        assert.ok(updated.every(Boolean));
        assert.ok(batchSizes.length > 0, 'commits are observed');
        const reopened = await openStore(url, storeOptions);
        try {
          const stored = await Promise.all(gids.map((gid) => reopened.get(gid)));
          assert.ok(stored.every((tx) => tx?.status === 'succeeded' && tx.version === 2));
          assert.equal((await reopened.history('c7')).length, 2);
        } finally {
          await reopened.close();
        }
      });
    });
  });
}

describe('store: PostgreSQL group commit', () => {
  test('a write PostgreSQL refuses fails alone; the other writes of its batch land', async (t) => {
    if (!(await requireService(t, 'postgres'))) return;
    const url = await backends[1]!.freshUrl();
    // One flush in flight: the first write goes out alone, the rest queue behind it as one batch.
    const store = await openStore(url, { ...storeOptions, postgresFlushesInFlightMax: 1 });
    try {
      const batchSizes: number[] = [];
      store.onCommit((observation) => batchSizes.push(observation.batchSize));
      const gids = Array.from({ length: 21 }, (_, index) => `b${index}`);
      // 2^70 does not fit BIGINT: PostgreSQL refuses the statement that carries it.
      const writes = gids.map((gid, index) => store.insert(makeTx(gid, index === 11 ? { createdAtMs: 2 ** 70 } : {}), [entry('submitted', 'action')]));
      const outcomes = await Promise.allSettled(writes);
      const rejected = outcomes.flatMap((outcome, index) => (outcome.status === 'rejected' ? [gids[index]] : []));
      assert.deepEqual(rejected, ['b11'], 'only the bad write fails');
      assert.ok(outcomes.every((outcome, index) => index === 11 || (outcome.status === 'fulfilled' && outcome.value === true)));
      const stored = await Promise.all(gids.map((gid) => store.get(gid)));
      assert.deepEqual(stored.map((tx) => tx !== null), gids.map((_, index) => index !== 11));
      assert.equal((await store.history('b3')).length, 1);
      assert.equal(await store.insert(makeTx('after'), []), true, 'later writes are not stalled');
      assert.equal(batchSizes[0], 1, 'the first write went out alone, so the other twenty shared a batch');
    } finally {
      await store.close();
    }
  });
});

describe('store: SQLite group commit', () => {
  test('a write SQLite refuses fails alone; the other writes of its commit land', async () => {
    const url = await backends[0]!.freshUrl();
    const store = await openStore(url, storeOptions);
    try {
      const gids = Array.from({ length: 20 }, (_, index) => `q${index}`);
      // A value SQLite cannot bind: the statement throws, and the commit's transaction with it.
      const bad = { nextAttemptAtMs: true } as unknown as Partial<Tx>;
      const outcomes = await Promise.allSettled(gids.map((gid, index) => store.insert(makeTx(gid, index === 7 ? bad : {}), [entry('submitted', 'action')])));
      const rejected = outcomes.flatMap((outcome, index) => (outcome.status === 'rejected' ? [gids[index]] : []));
      assert.deepEqual(rejected, ['q7'], 'only the bad write fails');
      const stored = await Promise.all(gids.map((gid) => store.get(gid)));
      assert.deepEqual(stored.map((tx) => tx !== null), gids.map((_, index) => index !== 7));
      assert.equal(await store.insert(makeTx('after'), []), true, 'later writes are not stalled');
    } finally {
      await store.close();
    }
  });
});

describe('store URLs', () => {
  test('a malformed or unknown store URL is a clear error', async () => {
    await assert.rejects(openStore('mysql://x', storeOptions), /not understood.*sqlite:PATH/);
    await assert.rejects(openStore('sqlite:', storeOptions), /no file path/);
    await assert.rejects(openStore('postgres://', storeOptions), /no host|not a valid URL/);
  });

  test('an unreachable server is a clear error at open', async () => {
    await assert.rejects(openStore('postgres://postgres@127.0.0.1:1/test', { ...storeOptions, storeConnectTimeoutMs: 1000 }), /cannot open PostgreSQL store/);
    await assert.rejects(openStore('redis://127.0.0.1:1', { ...storeOptions, storeConnectTimeoutMs: 1000 }), /cannot open Redis store/);
  });
});
