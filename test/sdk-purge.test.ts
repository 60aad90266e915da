// The SDK's purge helpers (issue 10, bug 7) against real SQLite, PostgreSQL and MariaDB: the
// barrier forgets rows older than olderThanMs (only of gids with no younger row), the inbox
// forgets one consumer's old messages, the outbox deletes old published rows only; 0 keeps
// everything; a barrier table made without created_at keeps working and gets the column.
// Rows are aged by rewriting their timestamps, so no test waits on the clock.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import mysql from 'mysql2/promise';
import type { RowDataPacket } from 'mysql2/promise';
import { MysqlBarrier, PostgresBarrier, SqliteBarrier, type BarrierPurge, type BranchRef } from '../src/sdk/barrier.js';
import { MysqlInbox, PostgresInbox, SqliteInbox } from '../src/messaging/inbox/index.js';
import { MysqlOutbox, PostgresOutbox, SqliteOutbox } from '../src/messaging/outbox/index.js';
import { InvalidPurgeOption, purgeBatchMaxLimit, type PurgeOptions } from '../src/shared/purge.js';
import { requireService, services, type ServiceName } from './support/services.js';

const day = 24 * 3600 * 1000;

/** What each database gives the shared tests; every barrier/inbox/outbox call goes through `run`. */
interface Dialect {
  /** A statement with no parameters (the tests build them from their own safe names). */
  exec(sql: string): Promise<void>;
  count(table: string, where?: string): Promise<number>;
  /** An SQL expression for an instant two days ago, in the column's stored form. */
  twoDaysAgo: string;
  now: string;
  /** A barrier table as made without created_at (by hand, by another tool). */
  legacyBarrierDdl(table: string): string;
  barrier(table: string): { ensureSchema(): Promise<void>; call(branch: BranchRef, fn: () => Promise<void>): Promise<unknown> } & BarrierPurge;
  inbox(table: string, consumer: string): { ensureSchema(): Promise<void>; applyOnce(messageId: string, fn: () => Promise<void>): Promise<{ applied: boolean }>; purgeOlderThan(options: PurgeOptions): Promise<number> };
  outbox(table: string): Promise<{ add(messageId: string): Promise<void>; purgeOlderThan(options: PurgeOptions): Promise<number> }>;
  close(): Promise<void>;
}

function sqliteDialect(): Dialect {
  const dir = mkdtempSync(path.join(tmpdir(), 'tandem-h6-purge-'));
  const db = new Database(path.join(dir, 'participant.db'));
  db.pragma('journal_mode = WAL');
  return {
    exec: async (sql) => void db.exec(sql),
    count: async (table, where = '1 = 1') => (db.prepare(`SELECT count(*) AS n FROM ${table} WHERE ${where}`).get() as { n: number }).n,
    twoDaysAgo: `strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days')`,
    now: `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`,
    legacyBarrierDdl: (table) => `CREATE TABLE ${table} (id INTEGER PRIMARY KEY AUTOINCREMENT, trans_type TEXT NOT NULL DEFAULT '', gid TEXT NOT NULL,
      branch_id TEXT NOT NULL, op TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', UNIQUE (gid, branch_id, op))`,
    barrier: (table) => {
      const barrier = new SqliteBarrier(db, { tableName: table });
      return { ensureSchema: () => barrier.ensureSchema(), call: (branch, fn) => barrier.call(branch, fn), purgeOlderThan: (options) => barrier.purgeOlderThan(options) };
    },
    inbox: (table, consumer) => {
      const inbox = new SqliteInbox(db, { tableName: table, consumer });
      return { ensureSchema: () => inbox.ensureSchema(), applyOnce: (id, fn) => inbox.applyOnce(id, fn), purgeOlderThan: (options) => inbox.purgeOlderThan(options) };
    },
    outbox: async (table) => {
      const outbox = new SqliteOutbox(db, { tableName: table });
      outbox.ensureSchema();
      return { add: async (messageId) => void db.transaction(() => outbox.add(db, { target: 'rabbitmq:x/y', body: 'b', messageId }))(), purgeOlderThan: (options) => outbox.purgeOlderThan(options) };
    },
    close: async () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function postgresDialect(): Dialect {
  const pool = new pg.Pool({ connectionString: services.postgres.url, max: 4 });
  return {
    exec: async (sql) => void (await pool.query(sql)),
    count: async (table, where = 'true') => Number((await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE ${where}`)).rows[0]?.n),
    twoDaysAgo: `now() - interval '2 days'`,
    now: 'now()',
    legacyBarrierDdl: (table) => `CREATE TABLE ${table} (id BIGSERIAL PRIMARY KEY, trans_type VARCHAR(45) NOT NULL DEFAULT '', gid VARCHAR(128) NOT NULL,
      branch_id VARCHAR(128) NOT NULL, op VARCHAR(45) NOT NULL, reason VARCHAR(45) NOT NULL DEFAULT '', UNIQUE (gid, branch_id, op))`,
    barrier: (table) => {
      const barrier = new PostgresBarrier(pool, { tableName: table });
      return { ensureSchema: () => barrier.ensureSchema(), call: (branch, fn) => barrier.call(branch, fn), purgeOlderThan: (options) => barrier.purgeOlderThan(options) };
    },
    inbox: (table, consumer) => {
      const inbox = new PostgresInbox(pool, { tableName: table, consumer });
      return { ensureSchema: () => inbox.ensureSchema(), applyOnce: (id, fn) => inbox.applyOnce(id, fn), purgeOlderThan: (options) => inbox.purgeOlderThan(options) };
    },
    outbox: async (table) => {
      const outbox = new PostgresOutbox(pool, { tableName: table });
      await outbox.ensureSchema();
      return {
        add: async (messageId) => {
          const client = await pool.connect();
          try {
            await client.query('BEGIN');
            await outbox.add(client, { target: 'rabbitmq:x/y', body: 'b', messageId });
            await client.query('COMMIT');
          } finally {
            client.release();
          }
        },
        purgeOlderThan: (options) => outbox.purgeOlderThan(options),
      };
    },
    close: () => pool.end(),
  };
}

function mysqlDialect(): Dialect {
  const pool = mysql.createPool({ uri: services.mariadb.url, connectionLimit: 4 });
  return {
    exec: async (sql) => void (await pool.query(sql)),
    count: async (table, where = '1 = 1') => Number((await pool.query<RowDataPacket[]>(`SELECT count(*) AS n FROM ${table} WHERE ${where}`))[0][0]?.n),
    twoDaysAgo: `NOW(3) - INTERVAL 2 DAY`,
    now: 'NOW(3)',
    legacyBarrierDdl: (table) => `CREATE TABLE ${table} (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, trans_type VARCHAR(45) NOT NULL DEFAULT '',
      gid VARBINARY(128) NOT NULL, branch_id VARBINARY(128) NOT NULL, op VARBINARY(45) NOT NULL, reason VARCHAR(45) NOT NULL DEFAULT '',
      UNIQUE KEY ${table}_branch (gid, branch_id, op)) ENGINE = InnoDB`,
    barrier: (table) => {
      const barrier = new MysqlBarrier(pool, { tableName: table });
      return { ensureSchema: () => barrier.ensureSchema(), call: (branch, fn) => barrier.call(branch, fn), purgeOlderThan: (options) => barrier.purgeOlderThan(options) };
    },
    inbox: (table, consumer) => {
      const inbox = new MysqlInbox(pool, { tableName: table, consumer });
      return { ensureSchema: () => inbox.ensureSchema(), applyOnce: (id, fn) => inbox.applyOnce(id, fn), purgeOlderThan: (options) => inbox.purgeOlderThan(options) };
    },
    outbox: async (table) => {
      const outbox = new MysqlOutbox(pool, { tableName: table });
      await outbox.ensureSchema();
      return {
        add: async (messageId) => {
          const connection = await pool.getConnection();
          try {
            await connection.beginTransaction();
            await outbox.add(connection, { target: 'rabbitmq:x/y', body: 'b', messageId });
            await connection.commit();
          } finally {
            connection.release();
          }
        },
        purgeOlderThan: (options) => outbox.purgeOlderThan(options),
      };
    },
    close: () => pool.end(),
  };
}

const databases: Array<{ name: string; service?: ServiceName; open: () => Dialect }> = [
  { name: 'SQLite', open: sqliteDialect },
  { name: 'PostgreSQL', service: 'postgres', open: postgresDialect },
  { name: 'MariaDB', service: 'mariadb', open: mysqlDialect },
];

function tableName(kind: string): string {
  return `tandem_h6_${kind}_${process.pid}_${randomBytes(4).toString('hex')}`;
}

const nothing = async (): Promise<void> => undefined;
const branch = (gid: string, op: string): BranchRef => ({ gid, branchId: '01', op, transType: 'saga' });

async function withDialect(t: TestContext, database: (typeof databases)[number], body: (dialect: Dialect, tables: string[]) => Promise<void>): Promise<void> {
  if (database.service && !(await requireService(t, database.service))) return;
  const dialect = database.open();
  const tables: string[] = [];
  try {
    await body(dialect, tables);
  } finally {
    for (const table of tables) await dialect.exec(`DROP TABLE IF EXISTS ${table}`).catch(() => undefined);
    await dialect.close();
  }
}

for (const database of databases) {
  describe(`SDK purge helpers: ${database.name}`, () => {
    test('barrier: rows older than olderThanMs go in batches of batchMax, but never those of a gid with a younger row; 0 keeps everything', async (t) => {
      await withDialect(t, database, async (dialect, tables) => {
        const table = tableName('barrier');
        tables.push(table);
        const barrier = dialect.barrier(table);
        await barrier.ensureSchema();
        // old: action + compensate (2 rows); mixed: an old action row, a young compensate row;
        // young: one row; batch: 3 old rows over three branches.
        await barrier.call(branch('old', 'action'), nothing);
        await barrier.call(branch('old', 'compensate'), nothing);
        await barrier.call(branch('mixed', 'action'), nothing);
        await barrier.call(branch('young', 'action'), nothing);
        for (const branchId of ['01', '02', '03']) await barrier.call({ ...branch('batch', 'action'), branchId }, nothing);
        await dialect.exec(`UPDATE ${table} SET created_at = ${dialect.twoDaysAgo} WHERE gid IN ('old', 'mixed', 'batch')`);
        await barrier.call(branch('mixed', 'compensate'), nothing);
        assert.equal(await dialect.count(table), 8);

        assert.equal(await barrier.purgeOlderThan({ olderThanMs: 0, batchMax: 100 }), 0, '0 keeps everything');
        assert.equal(await dialect.count(table), 8);
        assert.equal(await barrier.purgeOlderThan({ olderThanMs: day, batchMax: 4 }), 4, 'one batch: batchMax rows');
        assert.equal(await barrier.purgeOlderThan({ olderThanMs: day, batchMax: 4 }), 1);
        assert.equal(await barrier.purgeOlderThan({ olderThanMs: day, batchMax: 4 }), 0);
        assert.equal(await dialect.count(table, `gid IN ('old', 'batch')`), 0);
        assert.equal(await dialect.count(table, `gid = 'mixed'`), 2, 'a gid with a young row keeps all its rows');
        assert.equal(await dialect.count(table, `gid = 'young'`), 1);
        // A forgotten gid's rows no longer guard it: a late action now runs as a first one.
        let ran = false;
        await barrier.call(branch('old', 'action'), async () => void (ran = true));
        assert.equal(ran, true);
      });
    });

    test('barrier: a table made without created_at keeps working, and ensureSchema adds the column so it can be purged', async (t) => {
      await withDialect(t, database, async (dialect, tables) => {
        const table = tableName('legacy');
        tables.push(table);
        await dialect.exec(dialect.legacyBarrierDdl(table));
        const before = dialect.barrier(table);
        let ran = 0;
        assert.deepEqual(await before.call(branch('g1', 'action'), async () => void (ran += 1)), { applied: true, value: undefined });
        assert.deepEqual(await before.call(branch('g1', 'action'), async () => void (ran += 1)), { applied: false, reason: 'duplicate' });
        assert.equal(ran, 1);
        const after = dialect.barrier(table);
        await after.ensureSchema();
        await after.ensureSchema(); // twice: nothing more to add
        await after.call(branch('g2', 'action'), nothing);
        assert.equal(await after.purgeOlderThan({ olderThanMs: day, batchMax: 10 }), 0, 'rows there before count as created at the upgrade');
        await dialect.exec(`UPDATE ${table} SET created_at = ${dialect.twoDaysAgo} WHERE gid = 'g1'`);
        assert.equal(await after.purgeOlderThan({ olderThanMs: day, batchMax: 10 }), 1);
        assert.equal(await dialect.count(table), 1, "g2's row, stamped when it was written, stays");
      });
    });

    test("inbox: forgets this consumer's messages older than olderThanMs, in batches, and no other consumer's", async (t) => {
      await withDialect(t, database, async (dialect, tables) => {
        const table = tableName('inbox');
        tables.push(table);
        const mine = dialect.inbox(table, 'h6-mine');
        const theirs = dialect.inbox(table, 'h6-theirs');
        await mine.ensureSchema();
        await mine.ensureSchema();
        for (const id of ['m1', 'm2', 'm3']) await mine.applyOnce(id, nothing);
        await theirs.applyOnce('m1', nothing);
        await dialect.exec(`UPDATE ${table} SET received_at = ${dialect.twoDaysAgo}`);
        await mine.applyOnce('m4', nothing);
        assert.equal(await mine.purgeOlderThan({ olderThanMs: 0, batchMax: 10 }), 0);
        assert.equal(await mine.purgeOlderThan({ olderThanMs: day, batchMax: 2 }), 2);
        assert.equal(await mine.purgeOlderThan({ olderThanMs: day, batchMax: 2 }), 1);
        assert.equal(await mine.purgeOlderThan({ olderThanMs: day, batchMax: 2 }), 0);
        assert.equal(await dialect.count(table, `consumer = 'h6-theirs'`), 1, "another consumer's rows are its own to purge");
        assert.equal(await dialect.count(table, `consumer = 'h6-mine'`), 1, 'the young message stays');
        assert.deepEqual(await mine.applyOnce('m4', nothing), { applied: false, reason: 'duplicate' });
        assert.deepEqual(await mine.applyOnce('m1', nothing), { applied: true, value: undefined }, 'a forgotten message applies again');
      });
    });

    test('outbox: deletes published rows older than olderThanMs, in batches; never an unpublished row, however old', async (t) => {
      await withDialect(t, database, async (dialect, tables) => {
        const table = tableName('outbox');
        tables.push(table);
        const outbox = await dialect.outbox(table);
        for (const id of ['p1', 'p2', 'p3', 'young', 'pending']) await outbox.add(id);
        await dialect.exec(`UPDATE ${table} SET created_at = ${dialect.twoDaysAgo}`);
        await dialect.exec(`UPDATE ${table} SET published_at = ${dialect.twoDaysAgo} WHERE message_id IN ('p1', 'p2', 'p3')`);
        await dialect.exec(`UPDATE ${table} SET published_at = ${dialect.now} WHERE message_id = 'young'`);
        assert.equal(await outbox.purgeOlderThan({ olderThanMs: 0, batchMax: 10 }), 0);
        assert.equal(await outbox.purgeOlderThan({ olderThanMs: day, batchMax: 2 }), 2);
        assert.equal(await outbox.purgeOlderThan({ olderThanMs: day, batchMax: 2 }), 1);
        assert.equal(await outbox.purgeOlderThan({ olderThanMs: day, batchMax: 2 }), 0);
        assert.equal(await dialect.count(table, `message_id = 'pending'`), 1, 'unpublished: kept');
        assert.equal(await dialect.count(table, `message_id = 'young'`), 1, 'published recently: kept');
        assert.equal(await dialect.count(table), 2);
      });
    });

    test('bad purge options are refused, naming the option', async (t) => {
      await withDialect(t, database, async (dialect, tables) => {
        const table = tableName('options');
        tables.push(table);
        const barrier = dialect.barrier(table);
        await barrier.ensureSchema();
        const inbox = dialect.inbox(`${table}_in`, 'h6');
        tables.push(`${table}_in`);
        await inbox.ensureSchema();
        for (const purge of [barrier.purgeOlderThan.bind(barrier), inbox.purgeOlderThan.bind(inbox)]) {
          await assert.rejects(purge({ olderThanMs: -1, batchMax: 10 }), (error: unknown) => error instanceof InvalidPurgeOption && error.field === 'olderThanMs');
          await assert.rejects(purge({ olderThanMs: day, batchMax: 0 }), (error: unknown) => error instanceof InvalidPurgeOption && error.field === 'batchMax');
          await assert.rejects(purge({ olderThanMs: day, batchMax: purgeBatchMaxLimit + 1 }), /purgeBatchMaxLimit/);
          await assert.rejects(purge({ olderThanMs: 1.5, batchMax: 10 }), /olderThanMs/);
        }
      });
    });
  });
}
