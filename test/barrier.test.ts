// The branch barrier against real databases: SQLite (a temp file), PostgreSQL and MariaDB.
// Each test gets its own tables, so runs never see each other's rows; the business effect is
// a counter row written in the same local transaction as the barrier row.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import mysql from 'mysql2/promise';
import type { RowDataPacket } from 'mysql2/promise';
import {
  type Barrier,
  type BranchRef,
  InvalidBranchRef,
  MysqlBarrier,
  PostgresBarrier,
  SqliteBarrier,
  TransactionEndedInside,
  branchRefFromQuery,
} from '../src/sdk/barrier.js';
import { requireService, services, type ServiceName } from './support/services.js';

/** A safety net for tests that await an event: a bug fails them instead of hanging the run. */
const awaitedEventMsMax = 30_000;

/** What each backend provides to the shared tests. */
interface Fixture<Tx> {
  barrier: Barrier<Tx>;
  /** Adds one to the named counter inside the barrier's local transaction. */
  bump(tx: Tx, effect: string): Promise<void>;
  countOf(effect: string): Promise<number>;
  /** Resolves once another session is waiting on a row lock in the barrier table. */
  someoneWaitsOnBarrierRow(): Promise<void>;
  close(): Promise<void>;
}

function uniqueTableName(): string {
  return `tandem_barrier_test_${process.pid}_${randomBytes(4).toString('hex')}`;
}

/** Polls a condition that no driver can announce (a lock wait inside the database). */
async function waitFor(what: string, pollIntervalMs: number, check: () => Promise<boolean>): Promise<void> {
  const attemptsMax = 200;
  for (let attempt = 0; attempt < attemptsMax; attempt += 1) {
    if (await check()) return;
    await delay(pollIntervalMs);
  }
  throw new Error(`gave up waiting for ${what}`);
}

async function sqliteFixture(): Promise<Fixture<Database.Database>> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tandem-barrier-'));
  const db = new Database(path.join(dir, 'participant.db'));
  db.pragma('journal_mode = WAL');
  const barrier = new SqliteBarrier(db, { tableName: uniqueTableName() });
  await barrier.ensureSchema();
  const effects = `${barrier.tableName}_effect`;
  db.exec(`CREATE TABLE ${effects} (name TEXT PRIMARY KEY, n INTEGER NOT NULL)`);
  return {
    barrier,
    bump: async (tx, effect) => {
      tx.prepare(`INSERT INTO ${effects} (name, n) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET n = n + 1`).run(effect);
    },
    countOf: async (effect) => {
      const row = db.prepare(`SELECT n FROM ${effects} WHERE name = ?`).get(effect) as { n: number } | undefined;
      return row?.n ?? 0;
    },
    // One connection runs one call at a time: a second call always waits its turn.
    someoneWaitsOnBarrierRow: async () => undefined,
    close: async () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postgresFixture(): Promise<Fixture<pg.PoolClient>> {
  const pool = new pg.Pool({ connectionString: services.postgres.url, max: 4 });
  const barrier = new PostgresBarrier(pool, { tableName: uniqueTableName() });
  await barrier.ensureSchema();
  const effects = `${barrier.tableName}_effect`;
  await pool.query(`CREATE TABLE ${effects} (name TEXT PRIMARY KEY, n INTEGER NOT NULL)`);
  return {
    barrier,
    bump: async (tx, effect) => {
      await tx.query(`INSERT INTO ${effects} (name, n) VALUES ($1, 1) ON CONFLICT (name) DO UPDATE SET n = ${effects}.n + 1`, [effect]);
    },
    countOf: async (effect) => {
      const result = await pool.query<{ n: number }>(`SELECT n FROM ${effects} WHERE name = $1`, [effect]);
      return result.rows[0]?.n ?? 0;
    },
    someoneWaitsOnBarrierRow: () =>
      waitFor('a PostgreSQL session waiting on the barrier row', 5, async () => {
        const result = await pool.query<{ waiting: string }>(
          `SELECT count(*) AS waiting FROM pg_stat_activity
           WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || ' %'`,
          [barrier.tableName],
        );
        return Number(result.rows[0].waiting) > 0;
      }),
    close: async () => {
      await pool.query(`DROP TABLE IF EXISTS ${barrier.tableName}, ${effects}`);
      await pool.end();
    },
  };
}

async function mariadbFixture(): Promise<Fixture<mysql.PoolConnection>> {
  const pool = mysql.createPool({ uri: services.mariadb.url, connectionLimit: 4 });
  const barrier = new MysqlBarrier(pool, { tableName: uniqueTableName() });
  await barrier.ensureSchema();
  const effects = `${barrier.tableName}_effect`;
  await pool.query(`CREATE TABLE ${effects} (name VARCHAR(64) PRIMARY KEY, n INT NOT NULL) ENGINE = InnoDB`);
  return {
    barrier,
    bump: async (tx, effect) => {
      await tx.query(`INSERT INTO ${effects} (name, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1`, [effect]);
    },
    countOf: async (effect) => {
      const [rows] = await pool.query<RowDataPacket[]>(`SELECT n FROM ${effects} WHERE name = ?`, [effect]);
      return rows.length === 0 ? 0 : Number(rows[0].n);
    },
    someoneWaitsOnBarrierRow: () =>
      // InnoDB refreshes its INNODB_TRX snapshot only after 100 ms without readers, so polling
      // faster than that would read the same stale snapshot forever.
      waitFor('a MariaDB transaction waiting on the barrier row', 150, async () => {
        const [rows] = await pool.query<RowDataPacket[]>(
          `SELECT COUNT(*) AS waiting FROM information_schema.INNODB_TRX
           WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE CONCAT('%', ?, ' %')`,
          [barrier.tableName],
        );
        return Number(rows[0].waiting) > 0;
      }),
    close: async () => {
      await pool.query(`DROP TABLE IF EXISTS ${barrier.tableName}, ${effects}`);
      await pool.end();
    },
  };
}

function branch(gid: string, op: string, transType = 'tcc'): BranchRef {
  return { gid, branchId: '01', op, transType };
}

/** A promise plus the function that resolves it, for handing control between two calls. */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

function barrierSuite<Tx>(name: string, service: ServiceName | undefined, makeFixture: () => Promise<Fixture<Tx>>): void {
  /** Returns the fixture, or undefined when the service is absent and the test was skipped. */
  async function setUp(t: TestContext): Promise<Fixture<Tx> | undefined> {
    if (service !== undefined && !(await requireService(t, service))) return undefined;
    const fixture = await makeFixture();
    t.after(() => fixture.close());
    return fixture;
  }

  describe(`${name} barrier`, () => {
    test('a duplicate action applies once', async (t) => {
      const f = await setUp(t);
      if (!f) return;
      const action = (tx: Tx) => f.bump(tx, 'action').then(() => 'reserved');
      assert.deepEqual(await f.barrier.call(branch('g-dup', 'action', 'saga'), action), { applied: true, value: 'reserved' });
      assert.deepEqual(await f.barrier.call(branch('g-dup', 'action', 'saga'), action), { applied: false, reason: 'duplicate' });
      assert.equal(await f.countOf('action'), 1);
      // An op without an undo (confirm) is deduplicated the same way.
      const confirm = (tx: Tx) => f.bump(tx, 'confirm');
      assert.equal((await f.barrier.call(branch('g-dup', 'confirm'), confirm)).applied, true);
      assert.deepEqual(await f.barrier.call(branch('g-dup', 'confirm'), confirm), { applied: false, reason: 'duplicate' });
      assert.equal(await f.countOf('confirm'), 1);
    });

    test('a call with a fence below one already seen for the gid is refused unapplied (a coordinator that lost its lease)', async (t) => {
      const f = await setUp(t);
      if (!f) return;
      const fenced = (op: string, fence: number): BranchRef => ({ ...branch('g-fence', op), fence });
      // The new lease holder (fence 12) calls first; the old one (fence 9) arrives late.
      assert.equal((await f.barrier.call(fenced('try', 12), (tx) => f.bump(tx, 'try'))).applied, true);
      assert.deepEqual(await f.barrier.call(fenced('confirm', 9), (tx) => f.bump(tx, 'confirm')), { applied: false, reason: 'stale-fence' });
      assert.equal(await f.countOf('confirm'), 0);
      // Equal and higher fences pass (numbers compare as numbers: 100 > 12), and raise the mark.
      assert.equal((await f.barrier.call(fenced('confirm', 100), (tx) => f.bump(tx, 'confirm'))).applied, true);
      assert.deepEqual(await f.barrier.call({ ...branch('g-fence', 'confirm', 'tcc'), branchId: '02', fence: 99 }, (tx) => f.bump(tx, 'confirm')), { applied: false, reason: 'stale-fence' });
      // Calls without a fence (DTM's coordinator sends none) are not fenced; other gids are apart.
      assert.equal((await f.barrier.call({ ...branch('g-fence', 'try'), branchId: '03' }, (tx) => f.bump(tx, 'try'))).applied, true);
      assert.equal((await f.barrier.call({ ...branch('g-fence-other', 'try'), fence: 1 }, (tx) => f.bump(tx, 'try'))).applied, true);
      assert.equal(await f.countOf('confirm'), 1);
    });

    test('a cancel without its try is a null compensation', async (t) => {
      const f = await setUp(t);
      if (!f) return;
      const cancel = (tx: Tx) => f.bump(tx, 'cancel');
      assert.deepEqual(await f.barrier.call(branch('g-null', 'cancel'), cancel), { applied: false, reason: 'null-compensation' });
      assert.equal(await f.countOf('cancel'), 0);
      assert.deepEqual(await f.barrier.call(branch('g-null', 'cancel'), cancel), { applied: false, reason: 'duplicate' });
      assert.equal(await f.countOf('cancel'), 0);
    });

    test('a try after its cancel is hanging and does not run', async (t) => {
      const f = await setUp(t);
      if (!f) return;
      await f.barrier.call(branch('g-hang', 'cancel'), (tx) => f.bump(tx, 'cancel'));
      const late = await f.barrier.call(branch('g-hang', 'try'), (tx) => f.bump(tx, 'try'));
      assert.deepEqual(late, { applied: false, reason: 'hanging' });
      assert.equal(await f.countOf('try'), 0);
      // The same holds for a saga action that arrives after its compensation.
      await f.barrier.call(branch('g-hang', 'compensate', 'saga'), (tx) => f.bump(tx, 'compensate'));
      const lateAction = await f.barrier.call(branch('g-hang', 'action', 'saga'), (tx) => f.bump(tx, 'action'));
      assert.deepEqual(lateAction, { applied: false, reason: 'hanging' });
      assert.equal(await f.countOf('action'), 0);
      assert.equal(await f.countOf('compensate'), 0);
    });

    test('two concurrent cancels after a try run the cancel once', { timeout: awaitedEventMsMax }, async (t) => {
      const f = await setUp(t);
      if (!f) return;
      assert.equal((await f.barrier.call(branch('g-race', 'try'), (tx) => f.bump(tx, 'try'))).applied, true);
      const firstInside = signal();
      const releaseFirst = signal();
      const cancel = async (tx: Tx) => {
        await f.bump(tx, 'cancel');
        firstInside.resolve();
        await releaseFirst.promise;
        return 'cancelled';
      };
      const first = f.barrier.call(branch('g-race', 'cancel'), cancel);
      await firstInside.promise;
      // The first cancel holds its barrier row uncommitted; the second must wait on it.
      const second = f.barrier.call(branch('g-race', 'cancel'), cancel);
      try {
        await f.someoneWaitsOnBarrierRow();
      } finally {
        // Even when waiting failed: an open transaction would block the DROP TABLE in cleanup.
        releaseFirst.resolve();
      }
      const results = await Promise.all([first, second]);
      assert.deepEqual(results, [
        { applied: true, value: 'cancelled' },
        { applied: false, reason: 'duplicate' },
      ]);
      assert.equal(await f.countOf('cancel'), 1);
    });

    test('a failing call rolls back its barrier row so a retry runs', async (t) => {
      const f = await setUp(t);
      if (!f) return;
      const failure = new Error('stock service unavailable');
      const failing = async (tx: Tx) => {
        await f.bump(tx, 'action');
        throw failure;
      };
      await assert.rejects(f.barrier.call(branch('g-retry', 'action', 'saga'), failing), (error) => error === failure);
      assert.equal(await f.countOf('action'), 0);
      const retried = await f.barrier.call(branch('g-retry', 'action', 'saga'), (tx) => f.bump(tx, 'action').then(() => 'ok'));
      assert.deepEqual(retried, { applied: true, value: 'ok' });
      assert.equal(await f.countOf('action'), 1);
      // A compensation after a forward op that rolled back is a null compensation.
      await assert.rejects(f.barrier.call(branch('g-retry', 'try'), failing), (error) => error === failure);
      const cancel = await f.barrier.call(branch('g-retry', 'cancel'), (tx) => f.bump(tx, 'cancel'));
      assert.deepEqual(cancel, { applied: false, reason: 'null-compensation' });
      assert.equal(await f.countOf('cancel'), 0);
    });
  });
}

barrierSuite('SQLite', undefined, sqliteFixture);
barrierSuite('PostgreSQL', 'postgres', postgresFixture);
barrierSuite('MariaDB', 'mariadb', mariadbFixture);

test('PostgreSQL: a call whose fn swallowed an SQL error rejects instead of claiming success', async (t) => {
  if (!(await requireService(t, 'postgres'))) return;
  const f = await postgresFixture();
  t.after(() => f.close());
  const swallowing = async (tx: pg.PoolClient) => {
    await f.bump(tx, 'action');
    await tx.query('SELECT 1 / 0').catch(() => undefined);
  };
  await assert.rejects(f.barrier.call(branch('g-swallow', 'action', 'saga'), swallowing), TransactionEndedInside);
  assert.equal(await f.countOf('action'), 0);
  // Nothing was recorded, so a retry runs.
  assert.equal((await f.barrier.call(branch('g-swallow', 'action', 'saga'), (tx) => f.bump(tx, 'action'))).applied, true);
  assert.equal(await f.countOf('action'), 1);
});

describe('branch refs', () => {
  test('branchRefFromQuery reads DTM query names', () => {
    const query = new URLSearchParams({ gid: 'g1', trans_type: 'saga', branch_id: '02', op: 'action' });
    assert.deepEqual(branchRefFromQuery(query), { gid: 'g1', branchId: '02', op: 'action', transType: 'saga' });
    assert.deepEqual(branchRefFromQuery({ gid: 'g1', trans_type: 'tcc', branch_id: '03', op: 'try' }), {
      gid: 'g1',
      branchId: '03',
      op: 'try',
      transType: 'tcc',
    });
  });

  test('branchRefFromQuery names the missing parameter', () => {
    const complete = { gid: 'g1', trans_type: 'saga', branch_id: '02', op: 'action' };
    for (const missing of Object.keys(complete) as (keyof typeof complete)[]) {
      const query = { ...complete, [missing]: undefined };
      assert.throws(
        () => branchRefFromQuery(query),
        (error) => error instanceof InvalidBranchRef && error.field === missing && error.message.includes(missing),
      );
    }
    assert.throws(() => branchRefFromQuery({ ...complete, gid: '' }), /gid/);
    assert.throws(() => branchRefFromQuery({ ...complete, gid: 'x'.repeat(129) }), /longer than 128 bytes in: gid/);
  });

  test('a table name must be a plain identifier', () => {
    const db = new Database(':memory:');
    try {
      assert.throws(() => new SqliteBarrier(db, { tableName: 'barrier; DROP TABLE orders' }), /plain SQL identifier/);
      assert.throws(() => new SqliteBarrier(db, { tableName: '' }), /plain SQL identifier/);
      assert.equal(new SqliteBarrier(db).tableName, 'tandem_barrier');
    } finally {
      db.close();
    }
  });
});
