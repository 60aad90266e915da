// XA participants on the real PostgreSQL and MariaDB for the XA tests: an accounts table per
// test file (unique names, so parallel test files never share rows or xids), a business
// operation that moves money and refuses an overdraft, and cleanup that rolls back whatever
// the test left prepared before dropping the tables.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import mysql from 'mysql2/promise';
import type { RowDataPacket } from 'mysql2/promise';
import { BusinessFailure } from '../../src/sdk/participant.js';
import { MysqlXa, PostgresXa, type XaParticipant } from '../../src/sdk/xa/index.js';
import { services } from './services.js';

export type XaBackend = 'postgres' | 'mariadb';
export const xaBackends: readonly XaBackend[] = ['postgres', 'mariadb'];

/** The names one fixture uses; a child participant process gets the same ones. */
export interface XaNames {
  xidPrefix: string;
  accountsTable: string;
  barrierTable: string;
}

export function xaNames(tag: string): XaNames {
  const suffix = randomBytes(4).toString('hex');
  return {
    xidPrefix: `xat_${tag}_${suffix}`,
    accountsTable: `xat_${tag}_acct_${suffix}`,
    barrierTable: `xat_${tag}_bar_${suffix}`,
  };
}

/** The action's payload in these tests. */
export interface Move {
  account: string;
  amount: number;
}

export function isMove(value: unknown): value is Move {
  if (typeof value !== 'object' || value === null) return false;
  const { account, amount } = value as Record<string, unknown>;
  return typeof account === 'string' && typeof amount === 'number' && Number.isInteger(amount);
}

export interface XaFixture {
  backend: XaBackend;
  names: XaNames;
  /** The participant, typed loosely so one test body serves both drivers. */
  xa: XaParticipant<unknown>;
  /** Adds `amount` to `account` inside the local transaction; refuses an overdraft. */
  move(tx: unknown, move: Move): Promise<void>;
  open(account: string, balance: number): Promise<void>;
  balance(account: string): Promise<number>;
  /** Prepared xids with our prefix, read straight from pg_prepared_xacts / XA RECOVER. */
  rawPrepared(): Promise<string[]>;
  /** Rolls back anything left prepared, drops the tables (when `drop`), ends the pool. */
  close(options?: { drop?: boolean }): Promise<void>;
}

export type XaFixtureOptions = { barrierLockWaitMs?: number; create?: boolean };

export async function openXaFixture(backend: XaBackend, names: XaNames, options: XaFixtureOptions = {}): Promise<XaFixture> {
  const fixture = backend === 'postgres' ? postgresFixture(names, options) : mariadbFixture(names, options);
  if (options.create ?? true) {
    await fixture.xa.ensureSchema();
    await fixture.createAccounts();
  }
  return fixture;
}

type Internal = XaFixture & { createAccounts(): Promise<void> };

/** Refuses the move as a business failure when the balance would go negative. */
function refuseOverdraft(changedRows: number, move: Move): void {
  if (changedRows !== 1) throw new BusinessFailure(`account ${move.account} cannot move ${move.amount}`);
}

function postgresFixture(names: XaNames, options: XaFixtureOptions): Internal {
  const pool = new pg.Pool({ connectionString: services.postgres.url, max: 6 });
  const xa = new PostgresXa(pool, { xidPrefix: names.xidPrefix, tableName: names.barrierTable, barrierLockWaitMs: options.barrierLockWaitMs ?? 200 });
  const table = names.accountsTable;
  return {
    backend: 'postgres',
    names,
    xa: xa as XaParticipant<unknown>,
    createAccounts: async () => {
      await pool.query(`CREATE TABLE IF NOT EXISTS ${table} (id TEXT PRIMARY KEY, balance INTEGER NOT NULL)`);
    },
    move: async (tx, move) => {
      const client = tx as pg.PoolClient;
      const result = await client.query(`UPDATE ${table} SET balance = balance + $1 WHERE id = $2 AND balance + $1 >= 0`, [move.amount, move.account]);
      refuseOverdraft(result.rowCount ?? 0, move);
    },
    open: async (account, balance) => {
      await pool.query(`INSERT INTO ${table} (id, balance) VALUES ($1, $2)`, [account, balance]);
    },
    balance: async (account) => {
      const result = await pool.query<{ balance: number }>(`SELECT balance FROM ${table} WHERE id = $1`, [account]);
      if (result.rowCount !== 1) throw new Error(`no account ${account}`);
      return result.rows[0].balance;
    },
    rawPrepared: async () => {
      const result = await pool.query<{ gid: string }>(
        'SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, $1) ORDER BY gid',
        [`${names.xidPrefix}/`],
      );
      return result.rows.map((row) => row.gid);
    },
    close: async ({ drop = true } = {}) => {
      try {
        await rollBackLeftovers(xa);
        if (drop) await pool.query(`DROP TABLE IF EXISTS ${table}, ${names.barrierTable}`);
      } finally {
        await pool.end();
      }
    },
  };
}

function mariadbFixture(names: XaNames, options: XaFixtureOptions): Internal {
  const pool = mysql.createPool({ uri: services.mariadb.url, connectionLimit: 6 });
  const xa = new MysqlXa(pool, { xidPrefix: names.xidPrefix, tableName: names.barrierTable, barrierLockWaitMs: options.barrierLockWaitMs ?? 200 });
  const table = names.accountsTable;
  return {
    backend: 'mariadb',
    names,
    xa: xa as XaParticipant<unknown>,
    createAccounts: async () => {
      await pool.query(`CREATE TABLE IF NOT EXISTS ${table} (id VARCHAR(64) PRIMARY KEY, balance INT NOT NULL) ENGINE = InnoDB`);
    },
    move: async (tx, move) => {
      const connection = tx as mysql.PoolConnection;
      const [result] = await connection.query<mysql.ResultSetHeader>(
        `UPDATE ${table} SET balance = balance + ? WHERE id = ? AND balance + ? >= 0`,
        [move.amount, move.account, move.amount],
      );
      refuseOverdraft(result.affectedRows, move);
    },
    open: async (account, balance) => {
      await pool.query(`INSERT INTO ${table} (id, balance) VALUES (?, ?)`, [account, balance]);
    },
    balance: async (account) => {
      const [rows] = await pool.query<RowDataPacket[]>(`SELECT balance FROM ${table} WHERE id = ?`, [account]);
      if (rows.length !== 1) throw new Error(`no account ${account}`);
      return Number(rows[0].balance);
    },
    rawPrepared: async () => {
      const [rows] = await pool.query<RowDataPacket[]>('XA RECOVER');
      const head = `${names.xidPrefix}/`;
      return rows
        .map((row) => {
          const data = Buffer.isBuffer(row.data) ? row.data : Buffer.from(String(row.data));
          const gtridBytes = Number(row.gtrid_length);
          return `${data.subarray(0, gtridBytes).toString()},${data.subarray(gtridBytes).toString()}`;
        })
        .filter((xid) => xid.startsWith(head))
        .sort();
    },
    close: async ({ drop = true } = {}) => {
      try {
        await rollBackLeftovers(xa);
        if (drop) await pool.query(`DROP TABLE IF EXISTS ${table}, ${names.barrierTable}`);
      } finally {
        await pool.end();
      }
    },
  };
}

/** A failed test must not leave prepared transactions holding locks on the server. */
async function rollBackLeftovers(xa: XaParticipant<unknown>): Promise<void> {
  for (const prepared of await xa.listPrepared()) {
    if (!prepared.branch) continue;
    await xa.rollback({ ...prepared.branch, op: 'rollback', transType: 'xa' });
  }
}

/** A branch reference as the coordinator's call would carry it. */
export function xaBranch(gid: string, branchId: string, op: 'action' | 'commit' | 'rollback') {
  return { gid, branchId, op, transType: 'xa' };
}

/** A gid unique to this run, in the coordinator's alphabet. */
export function testGid(label: string): string {
  return `${label}-${randomBytes(6).toString('hex')}`;
}
