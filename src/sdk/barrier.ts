// The branch barrier: lets a participant apply each (gid, branchId, op) at most once, turn a
// Cancel that arrives without its Try into a no-op (null compensation), and refuse a Try that
// arrives after its Cancel (hanging). It works by inserting a row into a table in the
// participant's own database, inside the same local transaction as the business change, so
// the row and the change commit or roll back together.
//
// How each call is decided (U = the undo op, F = the forward op it undoes, see `undoOf`):
//   1. If the op is U, insert F's row with reason = U. If that insert succeeds, F never ran,
//      and now never will (its own insert will hit this row): null compensation.
//   2. Insert the op's own row with reason = op. If it already exists, the op ran before:
//      a duplicate — unless the op is F and the row's reason is U, which is hanging.
//   3. Otherwise run the business function; any throw rolls the rows back with it.
// Step 1 comes first so that a Try and a Cancel for one branch contend on the same row: the
// database's unique index makes the later one wait for the earlier one's commit.
import type Database from 'better-sqlite3';
import type { Pool as PgPool, PoolClient as PgPoolClient } from 'pg';
import type { Pool as MysqlPool, PoolConnection as MysqlPoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { branchQuery, ops, queryPreparedBranchId, undoOf } from '../shared/protocol.js';
import { hasErrorCode, lostConcurrentCreate, rollbackQuietly } from '../shared/sql.js';
import { checkedPurgeOptions, sqliteTimeBefore, type PurgeOptions } from '../shared/purge.js';

export { InvalidPurgeOption, purgeBatchMaxLimit, type PurgeOptions } from '../shared/purge.js';

/** Which branch call this is; every field comes from the coordinator's branch call. */
export type BranchRef = {
  gid: string;
  branchId: string;
  op: string;
  transType: string;
  /**
   * The calling coordinator's lease epoch on the transaction (header `tandem-fence`). When
   * given, the barrier keeps the highest one seen per gid and refuses a call with a smaller
   * one: it comes from a coordinator whose lease has passed to another.
   */
  fence?: number;
};

/** Why a call did not run the business function. */
export type SkipReason = 'duplicate' | 'null-compensation' | 'hanging' | 'stale-fence';

/** The barrier row that holds a gid's highest fence (its reason is the fence, zero-padded so text order is number order). */
export const fenceBranchId = '~fence';
const fenceOp = 'fence';
const fenceDigits = 16;

function paddedFence(fence: number): string {
  return String(fence).padStart(fenceDigits, '0');
}

export type BarrierResult<T> = { applied: true; value: T } | { applied: false; reason: SkipReason };

/** The shape all three backends share; `Tx` is the driver's own handle on the local transaction. */
export interface Barrier<Tx> {
  readonly tableName: string;
  ensureSchema(): Promise<void>;
  call<T>(branch: BranchRef, fn: (tx: Tx) => Promise<T>): Promise<BarrierResult<T>>;
  /**
   * Two-phase messages: whether the local transaction of message `gid` (run through
   * `msgLocal`) committed, rolled back, or is still running. When it neither committed nor is
   * running, this writes the message's barrier row itself (reason rollback), so that a local
   * transaction arriving later cannot commit: the answer can never change from rolled-back.
   */
  queryPrepared(gid: string): Promise<PreparedState>;
}

/** What the three backends add for retention (apart from Barrier, so wrappers of it need not). */
export interface BarrierPurge {
  /**
   * Deletes up to `batchMax` barrier rows older than `olderThanMs` (by created_at, on the
   * database's clock), and only rows of gids that have no younger row; returns how many.
   * `olderThanMs` 0 deletes nothing. A row deleted stops guarding its branch: a call that
   * arrives later runs as if it were the first (a Cancel after its Try's row went is taken
   * for a null compensation), so keep rows longer than any transaction can still call its
   * branches (its retries included). Needs the created_at column: run ensureSchema first.
   */
  purgeOlderThan(options: PurgeOptions): Promise<number>;
}

export type PreparedState = 'committed' | 'rolled-back' | 'ongoing';

/** The barrier row of a message's local transaction: DTM's branch "00", op "msg". */
export function msgBranchRef(gid: string): BranchRef {
  return { gid, branchId: queryPreparedBranchId, op: ops.msg.queryPrepared, transType: 'msg' };
}

const msgRollbackReason = 'rollback';

/**
 * How long queryPrepared waits for a local transaction holding the message's barrier row
 * before answering ongoing (the coordinator asks again later). MySQL counts whole seconds.
 */
export const queryPreparedLockWaitMs = 1000;

/** Steps of queryPrepared on an open transaction; the caller commits. */
async function decidePrepared(rows: BarrierRows, gid: string): Promise<PreparedState> {
  const branch = msgBranchRef(gid);
  if (await rows.insert(branch, branch.op, msgRollbackReason)) return 'rolled-back';
  const reason = await rows.reasonOf(branch, branch.op);
  return reason === msgRollbackReason ? 'rolled-back' : 'committed';
}

export type BarrierOptions = {
  /** Default `tandem_barrier`; must be a plain SQL identifier (letters, digits, underscore). */
  tableName?: string;
};

export const defaultBarrierTableName = 'tandem_barrier';

/**
 * Limits on the key columns, in UTF-8 bytes. They match the column sizes below; checking them
 * up front matters most on MySQL, where INSERT IGNORE would otherwise truncate an overlong
 * value with only a warning and let two different gids share one barrier row.
 */
export const gidBytesMax = 128;
export const branchIdBytesMax = 128;
export const opBytesMax = 45;
export const transTypeBytesMax = 45;

const identifierPattern = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** Thrown for a missing or unusable branch field; `field` is the query parameter's name. */
export class InvalidBranchRef extends Error {
  readonly field: string;
  constructor(field: string, problem: string) {
    super(`branch call ${problem}: ${field}`);
    this.name = 'InvalidBranchRef';
    this.field = field;
  }
}

const branchFields = [
  { key: 'gid', param: branchQuery.gid, bytesMax: gidBytesMax },
  { key: 'branchId', param: branchQuery.branchId, bytesMax: branchIdBytesMax },
  { key: 'op', param: branchQuery.op, bytesMax: opBytesMax },
  { key: 'transType', param: branchQuery.transType, bytesMax: transTypeBytesMax },
] as const;

/**
 * Reads gid, branch_id, op and trans_type (DTM's query parameter names). An absent or empty
 * value throws `InvalidBranchRef` naming the parameter.
 */
export function branchRefFromQuery(query: URLSearchParams | Record<string, string | undefined>): BranchRef {
  const read = (name: string): string | undefined =>
    query instanceof URLSearchParams ? (query.get(name) ?? undefined) : query[name];
  const ref: Partial<BranchRef> = {};
  for (const field of branchFields) {
    const value = read(field.param);
    if (value === undefined || value === '') throw new InvalidBranchRef(field.param, 'is missing query parameter');
    ref[field.key] = value;
  }
  const complete = ref as BranchRef;
  assertBranchRef(complete);
  return complete;
}

/** Checks a BranchRef built by hand as strictly as one read from a query. */
export function assertBranchRef(branch: BranchRef): void {
  for (const field of branchFields) {
    const value: unknown = branch[field.key];
    if (typeof value !== 'string' || value === '') throw new InvalidBranchRef(field.param, 'is missing');
    if (Buffer.byteLength(value, 'utf8') > field.bytesMax) {
      throw new InvalidBranchRef(field.param, `has a value longer than ${field.bytesMax} bytes in`);
    }
  }
}

/**
 * The local transaction ended before the barrier could commit it (an SQL error that `fn`
 * caught, or `fn` committing or rolling back itself): the barrier row may be gone, so the call
 * must not claim it applied.
 */
export class TransactionEndedInside extends Error {
  constructor() {
    super('barrier: the local transaction ended inside fn (a caught SQL error, or fn ended it); nothing is known to be applied');
    this.name = 'TransactionEndedInside';
  }
}

/** True for the ops whose undo is tracked (action, try, prepare, canCommit). */
function isForwardOp(op: string): boolean {
  return Object.values(undoOf).includes(op);
}

function forwardOpOf(op: string): string | undefined {
  return Object.hasOwn(undoOf, op) ? undoOf[op] : undefined;
}

function validTableName(tableName: string | undefined): string {
  const name = tableName ?? defaultBarrierTableName;
  if (!identifierPattern.test(name)) {
    throw new Error(`barrier table name must be a plain SQL identifier (letters, digits, _), got ${JSON.stringify(name)}`);
  }
  return name;
}

/** The two statements the decision needs, run on the backend's open transaction. */
interface BarrierRows {
  /** Inserts the row unless (gid, branchId, op) exists; true when it inserted. */
  insert(branch: BranchRef, op: string, reason: string): Promise<boolean>;
  /**
   * Raises the gid's fence row to `padded` if it is lower (creating it if absent) and returns
   * what it holds now; the row stays locked to this transaction until it ends.
   */
  raiseFence(branch: BranchRef, padded: string): Promise<string>;
  /** The reason stored on an existing row, read past any snapshot (the row may be fresh). */
  reasonOf(branch: BranchRef, op: string): Promise<string | undefined>;
}

/** Steps 1–2 of the header comment: decides whether the business function may run. */
async function decide(rows: BarrierRows, branch: BranchRef): Promise<SkipReason | undefined> {
  if (branch.fence !== undefined) {
    const padded = paddedFence(branch.fence);
    if ((await rows.raiseFence(branch, padded)) > padded) return 'stale-fence';
  }
  const forwardOp = forwardOpOf(branch.op);
  if (forwardOp !== undefined && (await rows.insert(branch, forwardOp, branch.op))) {
    // Also record the undo itself, so a repeat of it is a plain duplicate.
    await rows.insert(branch, branch.op, branch.op);
    return 'null-compensation';
  }
  if (await rows.insert(branch, branch.op, branch.op)) return undefined;
  if (isForwardOp(branch.op)) {
    const reason = await rows.reasonOf(branch, branch.op);
    if (reason !== undefined && reason !== branch.op) return 'hanging';
  }
  return 'duplicate';
}

/** Decides, then runs `fn` when allowed; the caller owns begin/commit/rollback around it. */
async function decideAndRun<Tx, T>(rows: BarrierRows, tx: Tx, branch: BranchRef, fn: (tx: Tx) => Promise<T>): Promise<BarrierResult<T>> {
  const skip = await decide(rows, branch);
  if (skip !== undefined) return { applied: false, reason: skip };
  return { applied: true, value: await fn(tx) };
}

// ---------------------------------------------------------------------------------------------
// SQLite (better-sqlite3)

export type SqliteBarrierOptions = BarrierOptions & {
  /** Calls waiting for the connection beyond this are refused; default 10 000. */
  queuedCallsMax?: number;
};

/**
 * better-sqlite3 is synchronous and one connection has one transaction, so calls take turns:
 * each waits for the previous one to commit or roll back before its BEGIN IMMEDIATE. While a
 * call's `fn` runs, nothing else should use this connection (its statements would join the
 * open transaction): give the barrier its own connection, or write only through `call`.
 * `fn` must not call `call` on the same barrier (it would wait for itself).
 */
export class SqliteBarrier implements Barrier<Database.Database>, BarrierPurge {
  readonly tableName: string;
  private readonly db: Database.Database;
  private readonly queuedCallsMax: number;
  private queuedCalls = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private preparedRows: BarrierRows | undefined;

  constructor(db: Database.Database, options: SqliteBarrierOptions = {}) {
    this.db = db;
    this.tableName = validTableName(options.tableName);
    this.queuedCallsMax = options.queuedCallsMax ?? 10_000;
  }

  async ensureSchema(): Promise<void> {
    this.db.exec(`CREATE TABLE IF NOT EXISTS ${this.tableName} (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      trans_type TEXT NOT NULL DEFAULT '',
      gid TEXT NOT NULL,
      branch_id TEXT NOT NULL,
      op TEXT NOT NULL,
      reason TEXT NOT NULL DEFAULT '',
      created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
      UNIQUE (gid, branch_id, op)
    )`);
    if (!sqliteHasColumn(this.db, this.tableName, 'created_at')) {
      // A table made without it (by hand, or another tool). SQLite adds a column only with a
      // constant default: the rows there now count as created at this upgrade, and the
      // barrier writes the time of every new row itself (see prepareRows).
      this.db.exec(`ALTER TABLE ${this.tableName} ADD COLUMN created_at TEXT NOT NULL DEFAULT '${sqliteTimeBefore(0)}'`);
    }
    // The purge's scan, by age.
    this.db.exec(`CREATE INDEX IF NOT EXISTS ${this.tableName}_created ON ${this.tableName} (created_at)`);
    this.preparedRows = undefined;
  }

  /** Takes its turn behind the calls: a statement run while one is open would join its transaction. */
  purgeOlderThan(options: PurgeOptions): Promise<number> {
    let checked: PurgeOptions | null;
    try {
      checked = checkedPurgeOptions(options);
    } catch (error) {
      return Promise.reject(error);
    }
    if (!checked) return Promise.resolve(0);
    if (this.queuedCalls >= this.queuedCallsMax) {
      return Promise.reject(new Error(`sqlite barrier: more than ${this.queuedCallsMax} calls waiting for the connection`));
    }
    const { olderThanMs, batchMax } = checked;
    this.queuedCalls += 1;
    const run = this.tail.then(() => this.purgeNow(olderThanMs, batchMax)).finally(() => {
      this.queuedCalls -= 1;
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  private purgeNow(olderThanMs: number, batchMax: number): number {
    if (!sqliteHasColumn(this.db, this.tableName, 'created_at')) throw new Error(`sqlite barrier: ${this.tableName} has no created_at column; run ensureSchema() first`);
    const t = this.tableName;
    const result = this.db
      .prepare(
        `DELETE FROM ${t} WHERE id IN (
           SELECT o.id FROM ${t} o
           WHERE o.created_at < @before AND NOT EXISTS (SELECT 1 FROM ${t} n WHERE n.gid = o.gid AND n.created_at >= @before)
           ORDER BY o.created_at LIMIT @batchMax)`,
      )
      .run({ before: sqliteTimeBefore(olderThanMs), batchMax });
    return result.changes;
  }

  call<T>(branch: BranchRef, fn: (tx: Database.Database) => Promise<T>): Promise<BarrierResult<T>> {
    assertBranchRef(branch);
    if (this.queuedCalls >= this.queuedCallsMax) {
      return Promise.reject(new Error(`sqlite barrier: more than ${this.queuedCallsMax} calls waiting for the connection`));
    }
    this.queuedCalls += 1;
    const run = this.tail.then(() => this.callNow(branch, fn)).finally(() => {
      this.queuedCalls -= 1;
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Waits behind calls on this connection, so an in-process local transaction ends first. */
  queryPrepared(gid: string): Promise<PreparedState> {
    assertBranchRef(msgBranchRef(gid));
    if (this.queuedCalls >= this.queuedCallsMax) {
      return Promise.reject(new Error(`sqlite barrier: more than ${this.queuedCallsMax} calls waiting for the connection`));
    }
    this.queuedCalls += 1;
    const run = this.tail.then(() => this.queryPreparedNow(gid)).finally(() => {
      this.queuedCalls -= 1;
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  private queryPreparedNow(gid: string): Promise<PreparedState> {
    try {
      this.db.exec('BEGIN IMMEDIATE');
    } catch (error) {
      // Another process holds the write lock: its transaction may be the message's.
      if (isSqliteBusy(error)) return Promise.resolve('ongoing');
      throw error;
    }
    return decidePrepared(this.rows(), gid).then(
      (state) => {
        this.db.exec('COMMIT');
        return state;
      },
      (error: unknown) => {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw error;
      },
    );
  }

  private async callNow<T>(branch: BranchRef, fn: (tx: Database.Database) => Promise<T>): Promise<BarrierResult<T>> {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const result = await decideAndRun(this.rows(), this.db, branch, fn);
      if (!this.db.inTransaction) throw new TransactionEndedInside();
      this.db.exec('COMMIT');
      return result;
    } catch (error) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw error;
    }
  }

  /** Prepared on first use, because preparing needs the table that ensureSchema creates. */
  private rows(): BarrierRows {
    this.preparedRows ??= this.prepareRows();
    return this.preparedRows;
  }

  private prepareRows(): BarrierRows {
    // Stamped here rather than left to the column default, which a column added by ALTER TABLE
    // has only as a constant; a table without the column (ensureSchema never run) still works.
    const stamped = sqliteHasColumn(this.db, this.tableName, 'created_at');
    const insert = this.db.prepare(
      stamped
        ? `INSERT INTO ${this.tableName} (trans_type, gid, branch_id, op, reason, created_at)
           VALUES (?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT (gid, branch_id, op) DO NOTHING`
        : `INSERT INTO ${this.tableName} (trans_type, gid, branch_id, op, reason) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (gid, branch_id, op) DO NOTHING`,
    );
    const select = this.db.prepare(`SELECT reason FROM ${this.tableName} WHERE gid = ? AND branch_id = ? AND op = ?`);
    const raise = this.db.prepare(
      `INSERT INTO ${this.tableName} (trans_type, gid, branch_id, op, reason) VALUES (?, ?, '${fenceBranchId}', '${fenceOp}', ?)
       ON CONFLICT (gid, branch_id, op) DO UPDATE SET reason = MAX(reason, excluded.reason) RETURNING reason`,
    );
    return {
      insert: async (branch, op, reason) => insert.run(branch.transType, branch.gid, branch.branchId, op, reason).changes === 1,
      raiseFence: async (branch, padded) => (raise.get(branch.transType, branch.gid, padded) as { reason: string }).reason,
      reasonOf: async (branch, op) => {
        const row = select.get(branch.gid, branch.branchId, op) as { reason: string } | undefined;
        return row?.reason;
      },
    };
  }
}

function sqliteHasColumn(db: Database.Database, table: string, column: string): boolean {
  return (db.prepare(`SELECT 1 FROM pragma_table_info(?) WHERE name = ?`).all(table, column) as unknown[]).length > 0;
}

function isSqliteBusy(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED';
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL (pg)

/**
 * Each call takes a pooled client for one READ COMMITTED transaction. A concurrent insert of
 * the same key waits for the first transaction to end, then does nothing: that is what makes
 * two concurrent Cancels run the compensation once.
 */
export class PostgresBarrier implements Barrier<PgPoolClient>, BarrierPurge {
  readonly tableName: string;
  private readonly pool: PgPool;

  constructor(pool: PgPool, options: BarrierOptions = {}) {
    this.pool = pool;
    this.tableName = validTableName(options.tableName);
  }

  async ensureSchema(): Promise<void> {
    try {
      await this.pool.query(`CREATE TABLE IF NOT EXISTS ${this.tableName} (
        id BIGSERIAL PRIMARY KEY,
        trans_type VARCHAR(${transTypeBytesMax}) NOT NULL DEFAULT '',
        gid VARCHAR(${gidBytesMax}) NOT NULL,
        branch_id VARCHAR(${branchIdBytesMax}) NOT NULL,
        op VARCHAR(${opBytesMax}) NOT NULL,
        reason VARCHAR(${opBytesMax}) NOT NULL DEFAULT '',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (gid, branch_id, op)
      )`);
    } catch (error) {
      // Two processes creating the table at once: IF NOT EXISTS is not atomic in PostgreSQL,
      // and the loser sees a unique violation on the catalog. The table exists; that is enough.
      if (!lostConcurrentCreate(error)) throw error;
    }
    const column = await this.pool.query(
      `SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'created_at'`,
      [this.tableName],
    );
    // A table made without it: added with a default, so the rows there now count as created at
    // this upgrade (PostgreSQL 11+ does this without rewriting the table).
    if (column.rowCount === 0) await this.pool.query(`ALTER TABLE ${this.tableName} ADD COLUMN IF NOT EXISTS created_at TIMESTAMPTZ NOT NULL DEFAULT now()`);
    try {
      // The purge's scan, by age.
      await this.pool.query(`CREATE INDEX IF NOT EXISTS ${this.tableName}_created ON ${this.tableName} (created_at)`);
    } catch (error) {
      if (!lostConcurrentCreate(error)) throw error;
    }
  }

  async purgeOlderThan(options: PurgeOptions): Promise<number> {
    const checked = checkedPurgeOptions(options);
    if (!checked) return 0;
    const t = this.tableName;
    // One statement: now() is one instant throughout it.
    const result = await this.pool.query(
      `DELETE FROM ${t} WHERE id IN (
         SELECT o.id FROM ${t} o
         WHERE o.created_at < now() - $1 * interval '1 millisecond'
           AND NOT EXISTS (SELECT 1 FROM ${t} n WHERE n.gid = o.gid AND n.created_at >= now() - $1 * interval '1 millisecond')
         ORDER BY o.created_at LIMIT $2)`,
      [checked.olderThanMs, checked.batchMax],
    );
    return result.rowCount ?? 0;
  }

  async call<T>(branch: BranchRef, fn: (tx: PgPoolClient) => Promise<T>): Promise<BarrierResult<T>> {
    assertBranchRef(branch);
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const result = await decideAndRun(this.rows(client), client, branch, fn);
      // After an error inside the transaction, PostgreSQL answers COMMIT with ROLLBACK, not
      // an error: `fn` must have caught it. Nothing was applied, so saying so is the only truth.
      const committed = await client.query('COMMIT');
      if (committed.command !== 'COMMIT') throw new TransactionEndedInside();
      return result;
    } catch (error) {
      broken = await rollbackQuietly(() => client.query('ROLLBACK'));
      throw error;
    } finally {
      // A client whose ROLLBACK failed may still hold a transaction: destroy it, never reuse it.
      client.release(broken);
    }
  }

  async queryPrepared(gid: string): Promise<PreparedState> {
    assertBranchRef(msgBranchRef(gid));
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      // The insert waits on the row of a local transaction still running; bound that wait.
      await client.query(`SET LOCAL lock_timeout = ${queryPreparedLockWaitMs}`);
      const state = await decidePrepared(this.rows(client), gid);
      await client.query('COMMIT');
      return state;
    } catch (error) {
      broken = await rollbackQuietly(() => client.query('ROLLBACK'));
      if (hasErrorCode(error, '55P03')) return 'ongoing';
      throw error;
    } finally {
      client.release(broken);
    }
  }

  private rows(client: PgPoolClient): BarrierRows {
    return {
      insert: async (branch, op, reason) => {
        const result = await client.query(
          `INSERT INTO ${this.tableName} (trans_type, gid, branch_id, op, reason) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (gid, branch_id, op) DO NOTHING`,
          [branch.transType, branch.gid, branch.branchId, op, reason],
        );
        return result.rowCount === 1;
      },
      raiseFence: async (branch, padded) => {
        const result = await client.query<{ reason: string }>(
          `INSERT INTO ${this.tableName} AS t (trans_type, gid, branch_id, op, reason) VALUES ($1, $2, '${fenceBranchId}', '${fenceOp}', $3)
           ON CONFLICT (gid, branch_id, op) DO UPDATE SET reason = GREATEST(t.reason, EXCLUDED.reason) RETURNING reason`,
          [branch.transType, branch.gid, padded],
        );
        return result.rows[0].reason;
      },
      reasonOf: async (branch, op) => {
        // READ COMMITTED takes a fresh snapshot per statement, so a row committed while our
        // insert waited is visible here.
        const result = await client.query<{ reason: string }>(
          `SELECT reason FROM ${this.tableName} WHERE gid = $1 AND branch_id = $2 AND op = $3`,
          [branch.gid, branch.branchId, op],
        );
        return result.rows[0]?.reason;
      },
    };
  }
}


// ---------------------------------------------------------------------------------------------
// MySQL / MariaDB (mysql2/promise)

/**
 * Each call takes a pooled connection for one InnoDB transaction; INSERT IGNORE on the unique
 * key waits for a concurrent insert of the same key to end, like PostgreSQL. The key columns
 * are VARBINARY so that matching is exact: the default collations would treat `Order-1` and
 * `order-1 ` (trailing space) as the same gid.
 */
export class MysqlBarrier implements Barrier<MysqlPoolConnection>, BarrierPurge {
  readonly tableName: string;
  private readonly pool: MysqlPool;

  constructor(pool: MysqlPool, options: BarrierOptions = {}) {
    this.pool = pool;
    this.tableName = validTableName(options.tableName);
  }

  async ensureSchema(): Promise<void> {
    await this.pool.query(`CREATE TABLE IF NOT EXISTS ${this.tableName} (
      id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      trans_type VARCHAR(${transTypeBytesMax}) NOT NULL DEFAULT '',
      gid VARBINARY(${gidBytesMax}) NOT NULL,
      branch_id VARBINARY(${branchIdBytesMax}) NOT NULL,
      op VARBINARY(${opBytesMax}) NOT NULL,
      reason VARCHAR(${opBytesMax}) NOT NULL DEFAULT '',
      created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      UNIQUE KEY ${this.tableName}_branch (gid, branch_id, op),
      KEY ${this.tableName}_created (created_at)
    ) ENGINE = InnoDB`);
    // A table made without the column, or before the purge's index: add what is missing. The
    // rows there now count as created at this upgrade.
    const [columns] = await this.pool.query<RowDataPacket[]>(
      `SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'created_at'`,
      [this.tableName],
    );
    if (columns.length === 0) await this.pool.query(`ALTER TABLE ${this.tableName} ADD COLUMN created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)`);
    const [indexes] = await this.pool.query<RowDataPacket[]>(
      `SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'created_at' AND seq_in_index = 1`,
      [this.tableName],
    );
    if (indexes.length === 0) await this.pool.query(`CREATE INDEX ${this.tableName}_created ON ${this.tableName} (created_at)`);
  }

  async purgeOlderThan(options: PurgeOptions): Promise<number> {
    const checked = checkedPurgeOptions(options);
    if (!checked) return 0;
    const t = this.tableName;
    const microseconds = checked.olderThanMs * 1000;
    // MariaDB deletes from a table it also reads only through a derived table it materializes
    // (one with LIMIT always is). created_at and NOW(3) share the session's time zone.
    const connection = await this.pool.getConnection();
    try {
      // READ COMMITTED: no gap locks, which at REPEATABLE READ could hold back the barrier's
      // own inserts behind the purge's range (applies to the next statement only).
      await connection.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
      const [result] = await connection.query<ResultSetHeader>(
        `DELETE t FROM ${t} t JOIN (
           SELECT o.id FROM ${t} o
           WHERE o.created_at < NOW(3) - INTERVAL ? MICROSECOND
             AND NOT EXISTS (SELECT 1 FROM ${t} n WHERE n.gid = o.gid AND n.created_at >= NOW(3) - INTERVAL ? MICROSECOND)
           ORDER BY o.created_at, o.id LIMIT ?) v ON t.id = v.id`,
        [microseconds, microseconds, checked.batchMax],
      );
      return result.affectedRows;
    } finally {
      connection.release();
    }
  }

  async call<T>(branch: BranchRef, fn: (tx: MysqlPoolConnection) => Promise<T>): Promise<BarrierResult<T>> {
    assertBranchRef(branch);
    const connection = await this.pool.getConnection();
    let broken: Error | undefined;
    try {
      await connection.beginTransaction();
      const result = await decideAndRun(this.rows(connection), connection, branch, fn);
      // A deadlock inside `fn` that `fn` caught has rolled the barrier rows back and left the
      // session in autocommit; COMMIT would then succeed without having applied anything.
      const [open] = await connection.query<RowDataPacket[]>('SELECT @@in_transaction AS open');
      if (Number(open[0]?.open) !== 1) throw new TransactionEndedInside();
      await connection.commit();
      return result;
    } catch (error) {
      broken = await rollbackQuietly(() => connection.rollback());
      throw error;
    } finally {
      if (broken) connection.destroy();
      else connection.release();
    }
  }

  async queryPrepared(gid: string): Promise<PreparedState> {
    assertBranchRef(msgBranchRef(gid));
    const connection = await this.pool.getConnection();
    try {
      // The insert waits on the row of a local transaction still running; bound that wait.
      // The session keeps the setting, so the connection is destroyed rather than reused.
      await connection.query(`SET SESSION innodb_lock_wait_timeout = ${Math.max(1, Math.ceil(queryPreparedLockWaitMs / 1000))}`);
      await connection.beginTransaction();
      const state = await decidePrepared(this.rows(connection), gid);
      await connection.commit();
      return state;
    } catch (error) {
      await rollbackQuietly(() => connection.rollback());
      if (hasErrorCode(error, 1205)) return 'ongoing';
      throw error;
    } finally {
      connection.destroy();
    }
  }

  private rows(connection: MysqlPoolConnection): BarrierRows {
    return {
      insert: async (branch, op, reason) => {
        const [result] = await connection.query<ResultSetHeader>(
          `INSERT IGNORE INTO ${this.tableName} (trans_type, gid, branch_id, op, reason) VALUES (?, ?, ?, ?, ?)`,
          [branch.transType, branch.gid, branch.branchId, op, reason],
        );
        return result.affectedRows === 1;
      },
      raiseFence: async (branch, padded) => {
        await connection.query(
          `INSERT INTO ${this.tableName} (trans_type, gid, branch_id, op, reason) VALUES (?, ?, '${fenceBranchId}', '${fenceOp}', ?)
           ON DUPLICATE KEY UPDATE reason = GREATEST(reason, VALUES(reason))`,
          [branch.transType, branch.gid, padded],
        );
        // The upsert holds the row's lock; a locking read sees its latest value.
        const [rows] = await connection.query<RowDataPacket[]>(
          `SELECT reason FROM ${this.tableName} WHERE gid = ? AND branch_id = '${fenceBranchId}' AND op = '${fenceOp}' FOR UPDATE`,
          [branch.gid],
        );
        return String(rows[0]?.reason ?? '');
      },
      reasonOf: async (branch, op) => {
        // A locking read sees the latest committed row; a plain SELECT under REPEATABLE READ
        // could read an older snapshot that predates the row we just collided with.
        const [rows] = await connection.query<RowDataPacket[]>(
          `SELECT reason FROM ${this.tableName} WHERE gid = ? AND branch_id = ? AND op = ? LOCK IN SHARE MODE`,
          [branch.gid, branch.branchId, op],
        );
        const reason: unknown = rows[0]?.reason;
        return typeof reason === 'string' ? reason : undefined;
      },
    };
  }
}
