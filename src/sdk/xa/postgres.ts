// The XA participant on PostgreSQL (pg): PREPARE TRANSACTION / COMMIT PREPARED /
// ROLLBACK PREPARED. Needs `max_prepared_transactions` > 0 on the server.
//
// A prepared transaction keeps its row locks, the barrier row included, until COMMIT or
// ROLLBACK PREPARED. That is why rollback first rolls back the prepared xid and only then
// inserts its barrier row: the other order would wait on our own prepared transaction.
import type { Pool, PoolClient } from 'pg';
import { PostgresBarrier, TransactionEndedInside, assertBranchRef, type BranchRef } from '../barrier.js';
import { Ongoing } from '../participant.js';
import {
  BarrierRowBusy,
  InvalidXid,
  XaParticipant,
  XaProtocolViolation,
  assertXidBytes,
  assertXidPart,
  commitWithoutPrepared,
  postgresXidBytesMax,
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

const pgCodes = {
  /** COMMIT/ROLLBACK PREPARED of an identifier that is not prepared. */
  undefinedObject: '42704',
  /** lock_timeout expired. */
  lockNotAvailable: '55P03',
} as const;

/** What inserting a barrier row found: our row went in, or the reason on the row already there. */
type Claim = { inserted: true } | { inserted: false; reason: string | undefined };

export class PostgresXa extends XaParticipant<PoolClient> {
  readonly tableName: string;
  private readonly pool: Pool;
  private readonly barrier: PostgresBarrier;

  constructor(pool: Pool, options: XaOptions = {}) {
    super(options);
    this.pool = pool;
    // The barrier's table and its validation of the name are reused as they are.
    this.barrier = new PostgresBarrier(pool, { tableName: options.tableName });
    this.tableName = this.barrier.tableName;
  }

  ensureSchema(): Promise<void> {
    return this.barrier.ensureSchema();
  }

  /** `<prefix>/<gid>/<branchId>`, at most `postgresXidBytesMax` bytes. */
  xidOf(branch: { gid: string; branchId: string }): string {
    assertXidPart('gid', branch.gid);
    assertXidPart('branchId', branch.branchId);
    const xid = [this.xidPrefix, branch.gid, branch.branchId].join(xidSeparator);
    assertXidBytes('xid', xid, postgresXidBytesMax, 'postgresXidBytesMax');
    return xid;
  }

  async local<T>(branch: BranchRef, fn: (tx: PoolClient) => Promise<T>): Promise<XaLocalResult<T>> {
    assertBranchRef(branch);
    const xid = this.xidOf(branch);
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const claim = await this.claimActionRow(client, branch, xaOps.action);
      if (!claim.inserted) {
        await client.query('ROLLBACK');
        return { applied: false, reason: claim.reason === xaOps.action ? 'duplicate' : 'hanging' };
      }
      const value = await fn(client);
      // On a transaction that an error inside fn aborted, PostgreSQL answers PREPARE with
      // ROLLBACK rather than an error: nothing was prepared, so it must not count as done.
      const prepared = await client.query(`PREPARE TRANSACTION ${xidLiteral(xid)}`);
      if (prepared.command !== 'PREPARE') throw new TransactionEndedInside();
      return { applied: true, value };
    } catch (error) {
      broken = await rollbackQuietly(() => client.query('ROLLBACK'));
      if (error instanceof BarrierRowBusy) {
        // Held by this branch's own prepared xid: an earlier call prepared it already.
        if (await this.isPrepared(xid)) return { applied: false, reason: 'duplicate' };
        throw new Ongoing(error.message);
      }
      throw error;
    } finally {
      // A client whose ROLLBACK failed may still hold a transaction: destroy it, never reuse it.
      client.release(broken);
    }
  }

  async commit(branch: BranchRef): Promise<XaCommitResult> {
    const xid = this.xidOrUndefined(branch);
    if (xid === undefined) return commitWithoutPrepared(undefined, branch, this.onAnomaly);
    try {
      await this.pool.query(`COMMIT PREPARED ${xidLiteral(xid)}`);
      return 'committed';
    } catch (error) {
      if (!hasErrorCode(error, pgCodes.undefinedObject)) throw error;
    }
    return commitWithoutPrepared(await this.probeActionRow(branch), branch, this.onAnomaly);
  }

  async rollback(branch: BranchRef): Promise<XaRollbackResult> {
    const xid = this.xidOrUndefined(branch);
    // No xid can be formed, so no action can ever prepare one: nothing to undo or to block.
    if (xid === undefined) return 'not-prepared';
    let rolledBack = false;
    try {
      await this.pool.query(`ROLLBACK PREPARED ${xidLiteral(xid)}`);
      rolledBack = true;
    } catch (error) {
      if (!hasErrorCode(error, pgCodes.undefinedObject)) throw error;
    }
    const claim = await this.inTransaction(async (client) => {
      const found = await this.claimActionRow(client, branch, xaOps.rollback);
      return { value: found, commit: found.inserted };
    });
    if (claim.inserted) return rolledBack ? 'rolled-back' : 'not-prepared';
    if (claim.reason === xaOps.action) {
      throw new XaProtocolViolation(`rollback of gid ${branch.gid} branch ${branch.branchId}, whose action has committed`);
    }
    return rolledBack ? 'rolled-back' : 'already-rolled-back';
  }

  async listPrepared(xidsMax = recoveryXidsMaxDefault): Promise<PreparedXid[]> {
    const head = this.xidPrefix + xidSeparator;
    const result = await this.pool.query<{ gid: string }>(
      `SELECT gid FROM pg_prepared_xacts
       WHERE database = current_database() AND left(gid, $1) = $2
       ORDER BY prepared LIMIT $3`,
      [head.length, head, xidsMax],
    );
    return result.rows.map(({ gid: xid }) => {
      const parts = splitXidParts(xid, 3);
      return parts && parts[0] === this.xidPrefix ? { xid, branch: { gid: parts[1], branchId: parts[2] } } : { xid };
    });
  }

  async isPrepared(xid: string): Promise<boolean> {
    const result = await this.pool.query('SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()', [xid]);
    return result.rowCount === 1;
  }

  private xidOrUndefined(branch: BranchRef): string | undefined {
    try {
      return this.xidOf(branch);
    } catch (error) {
      if (error instanceof InvalidXid) return undefined;
      throw error;
    }
  }

  /**
   * Inserts the branch's 'action' barrier row with `reason`, waiting at most
   * `barrierLockWaitMs` for a transaction that holds it (then throws BarrierRowBusy). The
   * bound applies to this insert only; `fn`'s own statements keep the session's lock_timeout.
   */
  private async claimActionRow(client: PoolClient, branch: BranchRef, reason: string): Promise<Claim> {
    const saved = await client.query<{ value: string }>("SELECT current_setting('lock_timeout') AS value");
    await client.query("SELECT set_config('lock_timeout', $1, true)", [`${this.barrierLockWaitMs}ms`]);
    let inserted: boolean;
    try {
      const result = await client.query(
        `INSERT INTO ${this.tableName} (trans_type, gid, branch_id, op, reason) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (gid, branch_id, op) DO NOTHING`,
        [xaTransType, branch.gid, branch.branchId, xaOps.action, reason],
      );
      inserted = result.rowCount === 1;
    } catch (error) {
      if (hasErrorCode(error, pgCodes.lockNotAvailable)) throw new BarrierRowBusy(branch, this.barrierLockWaitMs);
      throw error;
    }
    await client.query("SELECT set_config('lock_timeout', $1, true)", [saved.rows[0].value]);
    if (inserted) return { inserted: true };
    // READ COMMITTED: a fresh snapshot per statement sees the row our insert collided with.
    const existing = await client.query<{ reason: string }>(
      `SELECT reason FROM ${this.tableName} WHERE gid = $1 AND branch_id = $2 AND op = $3`,
      [branch.gid, branch.branchId, xaOps.action],
    );
    return { inserted: false, reason: existing.rows[0]?.reason };
  }

  /**
   * The reason on the action's committed barrier row, or undefined if there is none. Probes
   * by inserting and rolling back, because only an insert waits for a transaction that holds
   * the row uncommitted (a running or freshly prepared action); a SELECT would not see it.
   */
  private async probeActionRow(branch: BranchRef): Promise<string | undefined> {
    const claim = await this.inTransaction(async (client) => ({ value: await this.claimActionRow(client, branch, 'probe'), commit: false }));
    return claim.inserted ? undefined : claim.reason;
  }

  /** Runs `fn` in a transaction that commits only if `fn` says so; a busy barrier row becomes Ongoing. */
  private async inTransaction<T>(fn: (client: PoolClient) => Promise<{ value: T; commit: boolean }>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const { value, commit } = await fn(client);
      if (commit) {
        const committed = await client.query('COMMIT');
        if (committed.command !== 'COMMIT') throw new TransactionEndedInside();
      } else {
        await client.query('ROLLBACK');
      }
      return value;
    } catch (error) {
      broken = await rollbackQuietly(() => client.query('ROLLBACK'));
      if (error instanceof BarrierRowBusy) throw new Ongoing(error.message);
      throw error;
    } finally {
      client.release(broken);
    }
  }
}
