// The XA participant on MySQL/MariaDB (mysql2/promise): XA START/END/PREPARE/COMMIT/ROLLBACK
// and XA RECOVER. A prepared XA transaction survives its session and a server restart
// (MariaDB ≥ 10.5.2, MySQL ≥ 5.7.7) and can be committed from any session. Older servers roll
// it back when its session closes, which this participant does right after XA PREPARE, so they
// are refused before the first transaction (see xaServerVerdict).
//
// The xid is gtrid = `<prefix>/<gid>`, bqual = `<branchId>`, formatID 1 (the default).
// As on PostgreSQL, a prepared XA transaction keeps its row locks, so rollback first rolls
// the xid back and only then inserts its barrier row.
import { setTimeout as delay } from 'node:timers/promises';
import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { MysqlBarrier, assertBranchRef, type BranchRef } from '../barrier.js';
import { Ongoing } from '../participant.js';
import {
  BarrierRowBusy,
  InvalidXid,
  XaParticipant,
  XaProtocolViolation,
  assertXidBytes,
  assertXidPart,
  commitWithoutPrepared,
  mysqlBqualBytesMax,
  mysqlGtridBytesMax,
  recoveryXidsMaxDefault,
  splitXidParts,
  xaOps,
  xaTransType,
  xidLiteral,
  xidSeparator,
  type PreparedXid,
  type XaCommitResult,
  type XaLocalResult,
  type XaOptions,
  type XaRollbackResult,
} from './common.js';
import { hasErrorCode, rollbackQuietly } from '../../shared/sql.js';

const mysqlErrnos = {
  /** ER_XAER_NOTA: unknown XID (not prepared, or active in another session). */
  unknownXid: 1397,
  /** ER_XAER_DUPID: the XID exists already (prepared, or active in another session). */
  duplicateXid: 1440,
  /** ER_LOCK_WAIT_TIMEOUT: innodb_lock_wait_timeout expired. */
  lockWaitTimeout: 1205,
} as const;

/** Longest `local` waits, after XA PREPARE, for the server to end the preparing session (see detach). */
export const mysqlSessionEndWaitMsMax = 2000;
/** Interval of that wait's checks. */
export const mysqlSessionEndPollMs = 5;

/** XA RECOVER lists the xids of every format; ours use the default. */
const xidFormatId = 1;

/**
 * The first releases whose prepared XA transactions outlive the session that prepared them:
 * MySQL 5.7.7 (earlier ones roll them back on client disconnect and clean shutdown: MySQL 5.7
 * manual, restrictions on XA transactions) and MariaDB 10.5.2 (MDEV-742, listed in the 10.5.2
 * release notes).
 */
export const mysqlXaVersionsMin = { MySQL: [5, 7, 7], MariaDB: [10, 5, 2] } as const;

export type XaServerVerdict =
  | { trusted: true; product: 'MySQL' | 'MariaDB'; version: string }
  | { trusted: false; reason: string };

/**
 * Whether the server that answers `SELECT VERSION()` with `versionText` keeps a prepared XA
 * transaction after its session closes. MariaDB says so in its version ("10.11.6-MariaDB-…",
 * after "5.5.5-" where a proxy passes the handshake version on); everything else is read as
 * MySQL's numbering (Percona Server, Aurora and other forks follow it).
 */
export function xaServerVerdict(versionText: string): XaServerVerdict {
  const product = /mariadb/i.test(versionText) ? 'MariaDB' : 'MySQL';
  const match = /^(?:5\.5\.5-(?=\d+\.\d+\.\d+-MariaDB))?(\d+)\.(\d+)\.(\d+)/i.exec(versionText.trim());
  const minimum = mysqlXaVersionsMin[product];
  const needed = `MySQL ${mysqlXaVersionsMin.MySQL.join('.')} or MariaDB ${mysqlXaVersionsMin.MariaDB.join('.')}`;
  if (!match) return { trusted: false, reason: `cannot read the server version "${versionText}"; the MySQL XA participant needs ${needed} or later` };
  const parts = [Number(match[1]), Number(match[2]), Number(match[3])];
  const version = parts.join('.');
  if (compareVersions(parts, minimum) >= 0) return { trusted: true, product, version };
  return {
    trusted: false,
    reason:
      `${product} ${version} (${versionText}) rolls a prepared XA transaction back when its session closes, ` +
      `so a later XA COMMIT would report success for lost work; the MySQL XA participant needs ${needed} or later`,
  };
}

function compareVersions(a: readonly number[], b: readonly number[]): number {
  for (let index = 0; index < Math.max(a.length, b.length); index += 1) {
    const difference = (a[index] ?? 0) - (b[index] ?? 0);
    if (difference !== 0) return difference;
  }
  return 0;
}

/** The server would lose prepared work (see xaServerVerdict); nothing was written. */
export class UntrustedXaServer extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'UntrustedXaServer';
  }
}

type Claim = { inserted: true } | { inserted: false; reason: string | undefined };
type Xid = { gtrid: string; bqual: string };

export class MysqlXa extends XaParticipant<PoolConnection> {
  readonly tableName: string;
  private readonly pool: Pool;
  private readonly barrier: MysqlBarrier;
  /** innodb_lock_wait_timeout counts whole seconds. */
  private readonly lockWaitSeconds: number;
  /** The server's version check, made once per participant (a failed query is tried again). */
  private serverChecked: Promise<void> | null = null;

  constructor(pool: Pool, options: XaOptions = {}) {
    super(options);
    this.pool = pool;
    this.barrier = new MysqlBarrier(pool, { tableName: options.tableName });
    this.tableName = this.barrier.tableName;
    this.lockWaitSeconds = Math.ceil(this.barrierLockWaitMs / 1000);
  }

  /** Refuses a server that would lose prepared work (UntrustedXaServer), then creates the barrier table. */
  async ensureSchema(): Promise<void> {
    await this.checkServer();
    await this.barrier.ensureSchema();
  }

  /**
   * Resolves once the server is known to keep prepared XA transactions past their session;
   * rejects with UntrustedXaServer otherwise. Also run before the first action, for apps that
   * create the barrier table by their own migrations.
   */
  checkServer(): Promise<void> {
    this.serverChecked ??= this.readVerdict().catch((error: unknown) => {
      if (!(error instanceof UntrustedXaServer)) this.serverChecked = null;
      throw error;
    });
    return this.serverChecked;
  }

  private async readVerdict(): Promise<void> {
    const [rows] = await this.pool.query<RowDataPacket[]>('SELECT VERSION() AS version');
    const verdict = xaServerVerdict(String(rows[0]?.version ?? ''));
    if (!verdict.trusted) throw new UntrustedXaServer(verdict.reason);
  }

  /** The xid as XA statements take it and as `listPrepared` reports it: `'<prefix>/<gid>','<branchId>'`. */
  xidOf(branch: { gid: string; branchId: string }): string {
    const { gtrid, bqual } = this.xidParts(branch);
    return `${xidLiteral(gtrid)},${xidLiteral(bqual)}`;
  }

  async local<T>(branch: BranchRef, fn: (tx: PoolConnection) => Promise<T>): Promise<XaLocalResult<T>> {
    assertBranchRef(branch);
    await this.checkServer();
    const xid = this.xidOf(branch);
    const connection = await this.pool.getConnection();
    try {
      await connection.query(`XA START ${xid}`);
    } catch (error) {
      connection.release();
      if (!hasErrorCode(error, mysqlErrnos.duplicateXid)) throw error;
      // Prepared already by an earlier call, or still running in another session.
      if (await this.isPrepared(branch)) return { applied: false, reason: 'duplicate' };
      throw new Ongoing(`the action of gid ${branch.gid} branch ${branch.branchId} is running in another session`);
    }
    let value: T;
    try {
      const claim = await this.claimActionRow(connection, branch, xaOps.action);
      if (!claim.inserted) {
        await this.abandon(connection, xid);
        connection.release();
        return { applied: false, reason: claim.reason === xaOps.action ? 'duplicate' : 'hanging' };
      }
      value = await fn(connection);
      await connection.query(`XA END ${xid}`);
      await connection.query(`XA PREPARE ${xid}`);
    } catch (error) {
      // A session whose XA ROLLBACK failed may still hold the transaction; closing it makes
      // the server roll back anything not yet prepared.
      if (await rollbackQuietly(() => this.abandon(connection, xid))) connection.destroy();
      else connection.release();
      if (error instanceof BarrierRowBusy) {
        if (await this.isPrepared(branch)) return { applied: false, reason: 'duplicate' };
        throw new Ongoing(error.message);
      }
      throw error;
    }
    await this.detach(connection);
    return { applied: true, value };
  }

  /**
   * MariaDB keeps a prepared transaction attached to the session that prepared it: that
   * session refuses further writes (XAER_RMFAIL) and other sessions cannot commit it
   * (XAER_NOTA) until it ends. So the session is closed, and `local` answers only once the
   * server has let it go (bounded by `mysqlSessionEndWaitMsMax`), so that the coordinator's
   * commit, which may follow at once, finds the xid. Should the wait run out, commit answers
   * "ongoing" until the session is gone.
   */
  private async detach(connection: PoolConnection): Promise<void> {
    const threadId = connection.threadId;
    connection.destroy();
    const deadlineMs = Date.now() + mysqlSessionEndWaitMsMax;
    try {
      while (Date.now() < deadlineMs) {
        const [rows] = await this.pool.query<RowDataPacket[]>('SELECT COUNT(*) AS sessions FROM information_schema.PROCESSLIST WHERE ID = ?', [threadId]);
        if (Number(rows[0]?.sessions) === 0) return;
        await delay(mysqlSessionEndPollMs);
      }
    } catch {
      // The transaction is prepared either way; only the wait for its session was cut short.
    }
  }

  async commit(branch: BranchRef): Promise<XaCommitResult> {
    const xid = this.xidOrUndefined(branch);
    if (xid === undefined) return commitWithoutPrepared(undefined, branch, this.onAnomaly);
    try {
      await this.pool.query(`XA COMMIT ${xid}`);
      return 'committed';
    } catch (error) {
      if (!hasErrorCode(error, mysqlErrnos.unknownXid)) throw error;
      await this.failIfStillAttached(branch);
    }
    return commitWithoutPrepared(await this.probeActionRow(branch), branch, this.onAnomaly);
  }

  async rollback(branch: BranchRef): Promise<XaRollbackResult> {
    const xid = this.xidOrUndefined(branch);
    if (xid === undefined) return 'not-prepared';
    let rolledBack = false;
    try {
      await this.pool.query(`XA ROLLBACK ${xid}`);
      rolledBack = true;
    } catch (error) {
      if (!hasErrorCode(error, mysqlErrnos.unknownXid)) throw error;
      await this.failIfStillAttached(branch);
    }
    const claim = await this.inTransaction(async (connection) => {
      const found = await this.claimActionRow(connection, branch, xaOps.rollback);
      return { value: found, commit: found.inserted };
    });
    if (claim.inserted) return rolledBack ? 'rolled-back' : 'not-prepared';
    if (claim.reason === xaOps.action) {
      throw new XaProtocolViolation(`rollback of gid ${branch.gid} branch ${branch.branchId}, whose action has committed`);
    }
    return rolledBack ? 'rolled-back' : 'already-rolled-back';
  }

  async listPrepared(xidsMax = recoveryXidsMaxDefault): Promise<PreparedXid[]> {
    const found: PreparedXid[] = [];
    for (const xid of await this.recoverXids()) {
      if (found.length >= xidsMax) break;
      const head = this.xidPrefix + xidSeparator;
      if (!xid.gtrid.startsWith(head)) continue;
      const text = `'${xid.gtrid}','${xid.bqual}'`;
      const parts = splitXidParts(xid.gtrid, 2);
      const branchIdValid = splitXidParts(xid.bqual, 1) !== undefined;
      found.push(parts && branchIdValid ? { xid: text, branch: { gid: parts[1], branchId: xid.bqual } } : { xid: text });
    }
    return found;
  }

  async isPrepared(branch: { gid: string; branchId: string }): Promise<boolean> {
    const { gtrid, bqual } = this.xidParts(branch);
    return (await this.recoverXids()).some((xid) => xid.gtrid === gtrid && xid.bqual === bqual);
  }

  /** Unknown to XA COMMIT/ROLLBACK yet listed as prepared: its session has not ended yet (see detach). */
  private async failIfStillAttached(branch: BranchRef): Promise<void> {
    if (await this.isPrepared(branch)) {
      throw new Ongoing(`gid ${branch.gid} branch ${branch.branchId} is prepared but still attached to the session that prepared it`);
    }
  }

  private xidParts(branch: { gid: string; branchId: string }): Xid {
    assertXidPart('gid', branch.gid);
    assertXidPart('branchId', branch.branchId);
    const gtrid = this.xidPrefix + xidSeparator + branch.gid;
    assertXidBytes('gtrid', gtrid, mysqlGtridBytesMax, 'mysqlGtridBytesMax');
    assertXidBytes('branchId', branch.branchId, mysqlBqualBytesMax, 'mysqlBqualBytesMax');
    return { gtrid, bqual: branch.branchId };
  }

  private xidOrUndefined(branch: BranchRef): string | undefined {
    try {
      return this.xidOf(branch);
    } catch (error) {
      if (error instanceof InvalidXid) return undefined;
      throw error;
    }
  }

  /** Every prepared xid of our format on the server; XA RECOVER returns gtrid and bqual joined. */
  private async recoverXids(): Promise<Xid[]> {
    const [rows] = await this.pool.query<RowDataPacket[]>('XA RECOVER');
    const xids: Xid[] = [];
    for (const row of rows) {
      if (Number(row.formatID) !== xidFormatId) continue;
      const data: unknown = row.data;
      const bytes = Buffer.isBuffer(data) ? data : Buffer.from(String(data), 'utf8');
      const gtridBytes = Number(row.gtrid_length);
      const bqualBytes = Number(row.bqual_length);
      xids.push({
        gtrid: bytes.subarray(0, gtridBytes).toString('utf8'),
        bqual: bytes.subarray(gtridBytes, gtridBytes + bqualBytes).toString('utf8'),
      });
    }
    return xids;
  }

  /** Ends and rolls back the session's unprepared XA transaction (XA END fails harmlessly if it ended). */
  private async abandon(connection: PoolConnection, xid: string): Promise<void> {
    await rollbackQuietly(() => connection.query(`XA END ${xid}`));
    await connection.query(`XA ROLLBACK ${xid}`);
  }

  /**
   * Inserts the branch's 'action' barrier row with `reason`, waiting at most
   * `barrierLockWaitMs` (rounded up to seconds) for a transaction that holds it; then throws
   * BarrierRowBusy. The session's own lock wait is restored for whatever runs next.
   */
  private async claimActionRow(connection: PoolConnection, branch: BranchRef, reason: string): Promise<Claim> {
    const [saved] = await connection.query<RowDataPacket[]>('SELECT @@session.innodb_lock_wait_timeout AS seconds');
    await connection.query('SET SESSION innodb_lock_wait_timeout = ?', [this.lockWaitSeconds]);
    let inserted: boolean;
    try {
      const [result] = await connection.query<ResultSetHeader>(
        `INSERT IGNORE INTO ${this.tableName} (trans_type, gid, branch_id, op, reason) VALUES (?, ?, ?, ?, ?)`,
        [xaTransType, branch.gid, branch.branchId, xaOps.action, reason],
      );
      inserted = result.affectedRows === 1;
    } catch (error) {
      if (hasErrorCode(error, mysqlErrnos.lockWaitTimeout)) throw new BarrierRowBusy(branch, this.barrierLockWaitMs);
      throw error;
    } finally {
      await connection.query('SET SESSION innodb_lock_wait_timeout = ?', [Number(saved[0]?.seconds)]);
    }
    if (inserted) return { inserted: true };
    // A locking read sees the latest committed row, not an older REPEATABLE READ snapshot.
    const [rows] = await connection.query<RowDataPacket[]>(
      `SELECT reason FROM ${this.tableName} WHERE gid = ? AND branch_id = ? AND op = ? LOCK IN SHARE MODE`,
      [branch.gid, branch.branchId, xaOps.action],
    );
    const existing: unknown = rows[0]?.reason;
    return { inserted: false, reason: typeof existing === 'string' ? existing : undefined };
  }

  /** See PostgresXa: only an insert waits for a row held uncommitted, so probe by insert and roll back. */
  private async probeActionRow(branch: BranchRef): Promise<string | undefined> {
    const claim = await this.inTransaction(async (connection) => ({ value: await this.claimActionRow(connection, branch, 'probe'), commit: false }));
    return claim.inserted ? undefined : claim.reason;
  }

  private async inTransaction<T>(fn: (connection: PoolConnection) => Promise<{ value: T; commit: boolean }>): Promise<T> {
    const connection = await this.pool.getConnection();
    let broken: Error | undefined;
    try {
      await connection.beginTransaction();
      const { value, commit } = await fn(connection);
      if (commit) await connection.commit();
      else await connection.rollback();
      return value;
    } catch (error) {
      broken = await rollbackQuietly(() => connection.rollback());
      if (error instanceof BarrierRowBusy) throw new Ongoing(error.message);
      throw error;
    } finally {
      if (broken) connection.destroy();
      else connection.release();
    }
  }
}
