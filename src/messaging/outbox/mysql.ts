// The outbox on MySQL 8 / MariaDB 10.6+ (InnoDB): the same design as PostgreSQL. The relay
// claims rows with SELECT … FOR UPDATE SKIP LOCKED and holds the row locks until it has
// recorded the outcomes; a relay that dies has its transaction rolled back by the server.
//
// The relay's transactions run at READ COMMITTED: under InnoDB's default REPEATABLE READ the
// claim would also take gap locks on the index, and the application's `add` (an insert at the
// end of that index) would wait for the relay's publishes to finish.
import { randomUUID } from 'node:crypto';
import type { Connection, Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import {
  OutboxInputError,
  outboxMessageIdBytesMax,
  outboxRowValues,
  parseHeadersColumn,
  purgePublished,
  validBodyBytesMax,
  validOutboxTableName,
  type OutboxAdded,
  type OutboxMessage,
  type OutboxOptions,
  type OutboxRow,
  type OutboxStore,
  type RowOutcome,
} from './relay.js';
import type { PurgeOptions } from '../../shared/purge.js';
import { brokerTargetBytesMax } from '../types.js';
import { hasErrorCode, rollbackQuietly } from '../../shared/sql.js';

/** ER_DUP_ENTRY. */
const duplicateKeyErrno = 1062;

export class MysqlOutbox implements OutboxStore {
  readonly tableName: string;
  private readonly pool: Pool;
  private readonly bodyBytesMax: number;

  /** `pool` serves the relay and the schema; `add` uses the caller's own connection. */
  constructor(pool: Pool, options: OutboxOptions = {}) {
    this.pool = pool;
    this.tableName = validOutboxTableName(options.tableName);
    this.bodyBytesMax = validBodyBytesMax(options.bodyBytesMax);
  }

  /**
   * message_id is VARBINARY so that matching is exact (the default collations would make
   * `A-1` and `a-1 ` one id). The (published_at, id) index serves both the relay's scan
   * (published_at IS NULL, in id order) and the retention cleanup (a range on published_at).
   */
  async ensureSchema(): Promise<void> {
    const t = this.tableName;
    await this.pool.query(`CREATE TABLE IF NOT EXISTS ${t} (
      id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
      target VARCHAR(${brokerTargetBytesMax}) NOT NULL,
      message_id VARBINARY(${outboxMessageIdBytesMax}) NOT NULL,
      body LONGBLOB NOT NULL,
      headers LONGTEXT NOT NULL,
      created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      published_at DATETIME(3) NULL,
      attempts INT NOT NULL DEFAULT 0,
      last_error TEXT NULL,
      next_attempt_at DATETIME(3) NULL,
      UNIQUE KEY ${t}_message_id (message_id),
      KEY ${t}_unpublished (published_at, id)
    ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4`);
  }

  /**
   * Writes one message on `tx`, a connection inside the caller's transaction, so that it commits
   * or rolls back with the business change. Bad input, or a message id already in the table,
   * throws OutboxInputError and writes nothing (the caller's transaction stays usable).
   */
  async add(tx: Connection, message: OutboxMessage): Promise<OutboxAdded> {
    const values = outboxRowValues(message, this.bodyBytesMax, randomUUID);
    try {
      const [result] = await tx.query<ResultSetHeader>(
        `INSERT INTO ${this.tableName} (target, message_id, body, headers) VALUES (?, ?, ?, ?)`,
        [values.target, values.messageId, values.body, values.headersJson],
      );
      return { id: String(result.insertId), messageId: values.messageId };
    } catch (error) {
      if (hasErrorCode(error, duplicateKeyErrno)) throw new OutboxInputError('messageId', `${JSON.stringify(values.messageId)} is already in the outbox`);
      throw error;
    }
  }

  async relayBatch(batchSize: number, handle: (rows: OutboxRow[]) => Promise<RowOutcome[]>): Promise<number> {
    const connection = await this.pool.getConnection();
    let broken: Error | undefined;
    try {
      // Applies to the next transaction only, so a pool shared with the application keeps its level.
      await connection.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
      await connection.beginTransaction();
      const rows = await this.claim(connection, batchSize);
      if (rows.length > 0) await this.record(connection, await handle(rows));
      await connection.commit();
      return rows.length;
    } catch (error) {
      broken = await rollbackQuietly(() => connection.rollback());
      throw error;
    } finally {
      if (broken) connection.destroy();
      else connection.release();
    }
  }

  /** See purgePublished: published rows older than `olderThanMs` go, up to `batchMax`; 0 keeps all. */
  purgeOlderThan(options: PurgeOptions): Promise<number> {
    return purgePublished(this, options);
  }

  async deletePublished(retentionMs: number, rowsMax: number): Promise<number> {
    const connection = await this.pool.getConnection();
    try {
      // READ COMMITTED again: no gap lock in front of the rows that `add` is inserting.
      await connection.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
      const [result] = await connection.query<ResultSetHeader>(
        `DELETE FROM ${this.tableName}
         WHERE published_at IS NOT NULL AND published_at < NOW(3) - INTERVAL ? MICROSECOND
         ORDER BY published_at LIMIT ?`,
        [retentionMs * 1000, rowsMax],
      );
      return result.affectedRows;
    } finally {
      connection.release();
    }
  }

  private async claim(connection: PoolConnection, batchSize: number): Promise<OutboxRow[]> {
    const [rows] = await connection.query<RowDataPacket[]>(
      `SELECT id, target, message_id, body, headers, attempts FROM ${this.tableName}
       WHERE published_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= NOW(3))
       ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED`,
      [batchSize],
    );
    return rows.map((row) => ({
      id: String(row.id),
      target: String(row.target),
      messageId: Buffer.isBuffer(row.message_id) ? row.message_id.toString('utf8') : String(row.message_id),
      body: Buffer.isBuffer(row.body) ? row.body : Buffer.from(String(row.body)),
      headers: parseHeadersColumn(row.headers),
      attempts: Number(row.attempts),
    }));
  }

  private async record(connection: PoolConnection, outcomes: RowOutcome[]): Promise<void> {
    const publishedIds = outcomes.filter((outcome) => outcome.published).map((outcome) => outcome.id);
    if (publishedIds.length > 0) {
      await connection.query(
        `UPDATE ${this.tableName} SET published_at = NOW(3), attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL
         WHERE id IN (?)`,
        [publishedIds],
      );
    }
    // Failures are rare and each has its own error and delay: one statement per row is fine.
    for (const outcome of outcomes) {
      if (outcome.published) continue;
      await connection.query(
        `UPDATE ${this.tableName} SET attempts = attempts + 1, last_error = ?, next_attempt_at = NOW(3) + INTERVAL ? MICROSECOND
         WHERE id = ?`,
        [outcome.error, outcome.retryAfterMs * 1000, outcome.id],
      );
    }
  }
}
