// The retention of finished transactions (issue 10, bug 7): the pure rule, every store's purge
// against a real server, the Redis schema migration that indexes finished transactions, and
// the engine's purge loop on a fake clock.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import pg from 'pg';
import { Redis } from 'ioredis';
import { limitDefaults, limitsFromEnv } from '../src/config.js';
import { openStore } from '../src/store/open.js';
import type { Store } from '../src/store/store.js';
import { Engine, type EngineLimits, type EngineTimers } from '../src/tx/engine.js';
import { newTx } from '../src/tx/machine.js';
import { isPurgeable, purgeBatchOf, purgeRequestAt } from '../src/tx/retention.js';
import type { GlobalStatus, HistoryEntry, Tx } from '../src/tx/types.js';
import { closeCoordinator, startCoordinator, tempDir } from './support/coordinator.js';
import { requireService, services } from './support/services.js';

interface Backend {
  name: string;
  service?: 'postgres' | 'redis';
  /** Two coordinators may share it. */
  shared: boolean;
  freshUrl(): Promise<string>;
}

const runId = randomBytes(4).toString('hex');
const pgSchemas: string[] = [];
const redisPrefixes: string[] = [];

const backends: Backend[] = [
  { name: 'sqlite', shared: false, freshUrl: async () => `sqlite:${path.join(tempDir('tandem-h6-retention-'), 'tandem.db')}` },
  {
    name: 'postgres',
    service: 'postgres',
    shared: true,
    async freshUrl() {
      const schema = `tandem_h6_retention_${runId}_${pgSchemas.length}`;
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
    shared: true,
    async freshUrl() {
      const prefix = redisPrefixFor(redisPrefixes.length);
      redisPrefixes.push(prefix);
      return `${services.redis.url}/0?prefix=${encodeURIComponent(prefix)}`;
    },
  },
];

function redisPrefixFor(index: number): string {
  return `tandem-h6-retention:${runId}:${index}:`;
}

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

function makeTx(gid: string, status: GlobalStatus, updatedAtMs: number, overrides: Partial<Tx> = {}): Tx {
  const base = newTx(
    {
      gid,
      mode: 'saga',
      branches: [{ branchId: '01', ops: { action: { url: 'http://127.0.0.1:1/a', status: 'pending', attempts: 0 }, compensate: { url: 'http://127.0.0.1:1/c', status: 'pending', attempts: 0 } } }],
      options: { timeoutToFailMs: 0, requestTimeoutMs: 3000, retryIntervalMs: 1000, retryIntervalMsMax: 60000, retryLimit: null, branchHeaders: {}, concurrent: false },
    },
    t0,
  );
  const finished = status === 'succeeded' || status === 'failed';
  return { ...base, status, phase: finished ? 'done' : 'action', version: 1, updatedAtMs, nextAttemptAtMs: finished ? null : t0 + 1000, lease: null, ...overrides };
}

const history = (status: GlobalStatus, atMs: number): HistoryEntry[] => [
  { atMs: t0, status: 'prepared', phase: 'prepared' },
  { atMs, status, phase: status === 'succeeded' || status === 'failed' ? 'done' : 'action' },
];

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

describe('retention: the rule', () => {
  test('0 keeps everything; otherwise the cutoff is now minus the retention', () => {
    assert.equal(purgeRequestAt(t0, 0, 500), null);
    assert.deepEqual(purgeRequestAt(t0, 1000, 500), { finishedBeforeMs: t0 - 1000, nowMs: t0, limit: 500 });
  });

  test('only finished, old enough and unleased transactions are purgeable, earliest finished first', () => {
    const request = { finishedBeforeMs: t0 + 100, nowMs: t0 + 200, limit: 2 };
    assert.equal(isPurgeable(makeTx('a', 'succeeded', t0 + 99), request), true);
    assert.equal(isPurgeable(makeTx('b', 'failed', t0 + 99), request), true);
    assert.equal(isPurgeable(makeTx('c', 'succeeded', t0 + 100), request), false, 'finished at the cutoff is kept');
    for (const status of ['prepared', 'submitted', 'aborting'] as const) {
      assert.equal(isPurgeable(makeTx('d', status, t0), request), false, `${status} is never purged`);
    }
    assert.equal(isPurgeable(makeTx('e', 'succeeded', t0, { lease: { owner: 'x', untilMs: t0 + 201 } }), request), false, 'a live lease protects');
    assert.equal(isPurgeable(makeTx('f', 'succeeded', t0, { lease: { owner: 'x', untilMs: t0 + 200 } }), request), true, 'an expired lease does not');
    const batch = purgeBatchOf([makeTx('late', 'failed', t0 + 50), makeTx('early', 'succeeded', t0 + 10), makeTx('mid', 'succeeded', t0 + 20)], request);
    assert.deepEqual(batch.map((tx) => tx.gid), ['early', 'mid']);
  });
});

describe('retention: limits', () => {
  test('finishedRetentionMs may be 0 (keep everything); other limits still refuse 0', () => {
    assert.equal(limitDefaults.finishedRetentionMs, 7 * 24 * 3600 * 1000);
    assert.equal(limitsFromEnv({ TANDEM_FINISHED_RETENTION_MS: '0' }).finishedRetentionMs, 0);
    assert.equal(limitsFromEnv({ TANDEM_PURGE_BATCH_MAX: '20', TANDEM_PURGE_INTERVAL_MS: '250' }).purgeBatchMax, 20);
    assert.throws(() => limitsFromEnv({ TANDEM_PURGE_BATCH_MAX: '0' }), /TANDEM_PURGE_BATCH_MAX must be a positive integer/);
    assert.throws(() => limitsFromEnv({ TANDEM_PURGE_INTERVAL_MS: '0' }), /TANDEM_PURGE_INTERVAL_MS/);
    assert.throws(() => limitsFromEnv({ TANDEM_FINISHED_RETENTION_MS: '-1' }), /TANDEM_FINISHED_RETENTION_MS must be a non-negative integer/);
  });
});

for (const backend of backends) {
  describe(`retention: ${backend.name} store`, () => {
    test('purgeFinished deletes old finished transactions whole, earliest first, in bounded batches; never unfinished, recent or leased ones', async (t) => {
      await withStore(t, backend, async (store) => {
        const rows: Array<[string, GlobalStatus, number, Partial<Tx>?]> = [
          ['old-1', 'succeeded', t0 + 10],
          ['old-2', 'failed', t0 + 20],
          ['old-3', 'succeeded', t0 + 30],
          ['leased', 'succeeded', t0 + 5, { lease: { owner: 'other', untilMs: t0 + 5000 } }],
          ['recent', 'succeeded', t0 + 1000],
          ['running', 'submitted', t0],
          ['aborting', 'aborting', t0],
          ['prepared', 'prepared', t0],
        ];
        for (const [gid, status, updatedAtMs, overrides] of rows) {
          assert.equal(await store.insert(makeTx(gid, status, updatedAtMs, overrides), history(status, updatedAtMs)), true);
        }
        const request = { finishedBeforeMs: t0 + 500, nowMs: t0 + 100 };
        assert.equal(await store.purgeFinished({ ...request, limit: 2 }), 2);
        for (const gid of ['old-1', 'old-2']) {
          assert.equal(await store.get(gid), null, `${gid} is gone`);
          assert.deepEqual(await store.history(gid), [], `${gid}'s history is gone`);
        }
        assert.ok(await store.get('old-3'), 'beyond the batch limit: kept for the next batch');
        assert.equal(await store.purgeFinished({ ...request, limit: 10 }), 1);
        assert.equal(await store.purgeFinished({ ...request, limit: 10 }), 0);
        for (const gid of ['leased', 'recent', 'running', 'aborting', 'prepared']) {
          assert.ok(await store.get(gid), `${gid} is kept`);
          assert.equal((await store.history(gid)).length, 2, `${gid} keeps its history`);
        }
        // The indexes forget the purged ones too.
        const listed = (await store.list({ limit: 100 })).items.map((item) => item.gid).sort();
        assert.deepEqual(listed, ['aborting', 'leased', 'prepared', 'recent', 'running']);
        assert.deepEqual((await store.list({ limit: 100, status: 'failed' })).items, []);
        assert.deepEqual((await store.list({ limit: 100, status: 'succeeded' })).items.map((item) => item.gid).sort(), ['leased', 'recent']);
        assert.deepEqual((await store.due(t0 + 100_000, 10, 'me')).sort(), ['aborting', 'prepared', 'running'], 'unfinished work is still due');
        // Once its lease expires, the leased one goes too; the gid is then free again.
        assert.equal(await store.purgeFinished({ finishedBeforeMs: t0 + 500, nowMs: t0 + 5000, limit: 10 }), 1);
        assert.equal(await store.get('leased'), null);
        assert.equal(await store.insert(makeTx('old-1', 'submitted', t0 + 2000), history('submitted', t0 + 2000)), true);
        assert.equal((await store.history('old-1')).length, 2, 'a new transaction of a purged gid starts with its own history only');
      });
    });

    test('a transaction finished by an update is purged by its finish time', async (t) => {
      await withStore(t, backend, async (store) => {
        await store.insert(makeTx('u1', 'submitted', t0), history('submitted', t0));
        assert.equal(await store.purgeFinished({ finishedBeforeMs: t0 + 10_000, nowMs: t0 + 10_000, limit: 10 }), 0, 'unfinished');
        const finished = { ...makeTx('u1', 'succeeded', t0 + 3000), version: 2 };
        assert.equal(await store.update(finished, 1, [{ atMs: t0 + 3000, status: 'succeeded', phase: 'done' }]), true);
        assert.equal(await store.purgeFinished({ finishedBeforeMs: t0 + 3000, nowMs: t0 + 10_000, limit: 10 }), 0, 'finished at the cutoff');
        // A lease released later (a version bump, no status change) keeps the finish time.
        assert.equal(await store.update({ ...finished, version: 3 }, 2, []), true);
        assert.equal(await store.purgeFinished({ finishedBeforeMs: t0 + 3001, nowMs: t0 + 10_000, limit: 10 }), 1);
        assert.equal(await store.get('u1'), null);
      });
    });

    if (backend.shared) {
      test('coordinators purging one store at once delete each transaction once, and all of them', async (t) => {
        await withStore(t, backend, async (store, url) => {
          const count = 60;
          await Promise.all(Array.from({ length: count }, (_, index) => store.insert(makeTx(`p${index}`, 'succeeded', t0 + index), history('succeeded', t0 + index))));
          await store.insert(makeTx('live', 'submitted', t0), history('submitted', t0));
          const other = await openStore(url, storeOptions);
          try {
            const request = { finishedBeforeMs: t0 + 10_000, nowMs: t0 + 10_000, limit: 7 };
            let total = 0;
            for (let round = 0; round < count; round++) {
              const [a, b] = await Promise.all([store.purgeFinished(request), other.purgeFinished(request)]);
              total += a + b;
              if (a + b === 0) break;
            }
            assert.equal(total, count, 'each purged exactly once');
            assert.equal((await store.list({ limit: 100 })).items.length, 1);
            assert.ok(await other.get('live'));
          } finally {
            await other.close();
          }
        });
      });
    }
  });
}

describe('retention: Redis schema 1 → 2', () => {
  test('a store written before the finished index has its finished transactions indexed when opened, and then purged', async (t) => {
    if (!(await requireService(t, 'redis'))) return;
    const prefix = redisPrefixFor(1000);
    redisPrefixes.push(prefix);
    const url = `${services.redis.url}/0?prefix=${encodeURIComponent(prefix)}`;
    const first = await openStore(url, storeOptions);
    for (let index = 0; index < 1203; index++) {
      const status = index % 3 === 0 ? 'failed' : index % 3 === 1 ? 'succeeded' : 'submitted';
      await first.insert(makeTx(`m${index}`, status, t0 + index), history(status, t0 + index));
    }
    await first.close();
    // What a schema 1 coordinator leaves: the same keys without the finished index.
    const redis = new Redis(services.redis.url);
    try {
      await redis.del(`${prefix}finished`);
      await redis.set(`${prefix}schema`, '1');
      const reopened = await openStore(url, storeOptions);
      try {
        assert.equal(await redis.get(`${prefix}schema`), '2');
        assert.equal(await redis.zcard(`${prefix}finished`), 802);
        let purged = 0;
        for (let round = 0; round < 10; round++) purged += await reopened.purgeFinished({ finishedBeforeMs: t0 + 100_000, nowMs: t0, limit: 500 });
        assert.equal(purged, 802);
        assert.equal((await reopened.list({ limit: 100, status: 'submitted' })).items.length, 100, 'unfinished ones stay');
        assert.ok(await reopened.get('m2'));
        assert.equal(await reopened.get('m0'), null);
      } finally {
        await reopened.close();
      }
      await redis.set(`${prefix}schema`, '3');
      await assert.rejects(openStore(url, storeOptions), /schema version 3/);
    } finally {
      redis.disconnect();
    }
  });
});

/** Timers run by hand: the test fires the purge when it chooses, no waiting on real time. */
class ManualTimers implements EngineTimers {
  private next = 1;
  readonly pending = new Map<number, { callback: () => void; delayMs: number }>();
  setTimeout(callback: () => void, delayMs: number): unknown {
    const handle = this.next++;
    this.pending.set(handle, { callback, delayMs });
    return handle;
  }
  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  /** Fires every pending timer of exactly this delay. */
  fire(delayMs: number): number {
    const due = [...this.pending].filter(([, timer]) => timer.delayMs === delayMs);
    for (const [handle, timer] of due) {
      this.pending.delete(handle);
      timer.callback();
    }
    return due.length;
  }
}

const engineLimits: EngineLimits = {
  activeTransactionsMax: 100,
  recoveryIntervalMs: 1_000_001,
  resultWaitersMax: 10,
  recoveryBatchMax: 10,
  leaseMs: 10_000,
  failoverAttemptsMax: 1,
  heartbeatIntervalMs: 1_000_002,
  instanceTtlMs: 5000,
  finishedRetentionMs: 60_000,
  purgeBatchMax: 2,
  purgeIntervalMs: 777,
};

const noCalls = { call: async () => assert.fail('no branch is called') };

describe('retention: the engine purges', () => {
  test('one bounded batch per purge interval, on the engine clock, told to the observer; stop() ends the loop', async () => {
    const store = await openStore(`sqlite:${path.join(tempDir('tandem-h6-retention-engine-'), 'tandem.db')}`, storeOptions);
    let nowMs = t0 + 1_000_000;
    const timers = new ManualTimers();
    const purged: number[] = [];
    const errors: unknown[] = [];
    const engine = new Engine({ store, instanceId: 'h6', caller: noCalls, limits: engineLimits, nowMs: () => nowMs, timers, observer: { purged: (count) => purged.push(count) }, onError: (error) => errors.push(error) });
    try {
      for (let index = 0; index < 3; index++) await store.insert(makeTx(`e${index}`, 'succeeded', nowMs - 1000 + index), history('succeeded', nowMs));
      // Unfinished and not due during the test (the recovery scan would call it).
      await store.insert(makeTx('e-running', 'submitted', t0, { nextAttemptAtMs: nowMs + 10 ** 9 }), history('submitted', t0));
      await engine.start();
      assert.equal(await engine.purgeFinished(), 0, 'none finished 60 s ago yet');
      nowMs += 60_000;
      // The loop's timer: fire it and wait for the batch it starts (joining it).
      assert.equal(timers.fire(engineLimits.purgeIntervalMs), 1);
      assert.equal(await engine.purgeFinished(), 2, 'the batch the timer started: purgeBatchMax of them');
      assert.deepEqual(purged, [2]);
      assert.equal(await store.get('e0'), null);
      assert.equal(await store.get('e1'), null);
      assert.ok(await store.get('e2'));
      assert.equal(await engine.purgeFinished(), 1);
      assert.equal(await engine.purgeFinished(), 0);
      assert.deepEqual(purged, [2, 1], 'empty batches are not reported');
      assert.ok(await store.get('e-running'), 'unfinished work stays');
      assert.equal([...timers.pending.values()].filter((timer) => timer.delayMs === engineLimits.purgeIntervalMs).length, 1, 'the next batch is scheduled once');
      await engine.stop();
      assert.equal([...timers.pending.values()].filter((timer) => timer.delayMs === engineLimits.purgeIntervalMs).length, 0, 'stop() cancels the loop');
      assert.equal(await engine.purgeFinished(), 0, 'a stopped engine purges nothing');
      assert.deepEqual(errors, []);
    } finally {
      await store.close();
    }
  });

  test('finishedRetentionMs 0 runs no purge loop and keeps everything', async () => {
    const store = await openStore(`sqlite:${path.join(tempDir('tandem-h6-retention-keep-'), 'tandem.db')}`, storeOptions);
    const timers = new ManualTimers();
    const engine = new Engine({ store, instanceId: 'h6', caller: noCalls, limits: { ...engineLimits, finishedRetentionMs: 0 }, nowMs: () => t0 + 10 ** 12, timers });
    try {
      await store.insert(makeTx('k1', 'succeeded', t0), history('succeeded', t0));
      await engine.start();
      assert.equal([...timers.pending.values()].filter((timer) => timer.delayMs === engineLimits.purgeIntervalMs).length, 0);
      assert.equal(await engine.purgeFinished(), 0);
      assert.ok(await store.get('k1'));
      await engine.stop();
    } finally {
      await store.close();
    }
  });
});

describe('retention: tandem serve', () => {
  test('the coordinator purges with its limits, counts it in tandem_transactions_purged_total, and a purged gid is 404', async () => {
    // The loop's interval is far off: the test runs the batch itself instead of waiting for it.
    const coordinator = await startCoordinator({ limits: { finishedRetentionMs: 60_000, purgeIntervalMs: 3_600_000 } });
    try {
      const nowMs = Date.now();
      await coordinator.store.insert(makeTx('served-old', 'succeeded', nowMs - 120_000), history('succeeded', nowMs - 120_000));
      await coordinator.store.insert(makeTx('served-new', 'failed', nowMs - 1000), history('failed', nowMs - 1000));
      assert.equal((await fetch(`${coordinator.url}/v1/transactions/served-old`)).status, 200);
      assert.equal(await coordinator.engine.purgeFinished(), 1);
      assert.equal((await fetch(`${coordinator.url}/v1/transactions/served-old`)).status, 404);
      assert.equal((await fetch(`${coordinator.url}/v1/transactions/served-new`)).status, 200);
      const metrics = await (await fetch(`${coordinator.url}/metrics`)).text();
      assert.match(metrics, /^tandem_transactions_purged_total 1$/m);
    } finally {
      await closeCoordinator(coordinator);
    }
  });
});
