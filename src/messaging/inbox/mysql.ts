// The inbox on MySQL / MariaDB (mysql2/promise). INSERT IGNORE on the primary key waits for a
// concurrent insert of the same key to end, like PostgreSQL. Key columns are VARBINARY so
// that matching is exact (the default collations would equate `m-1` and `M-1 `).
import type { Pool as MysqlPool, PoolConnection as MysqlPoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import { TransactionEndedInside } from '../../sdk/barrier.js';
import { rollbackQuietly } from '../../shared/sql.js';
import { checkedPurgeOptions, type PurgeOptions } from '../../shared/purge.js';
import {
  assertMessageId,
  inboxConsumerBytesMax,
  inboxMessageIdBytesMax,
  validConsumer,
  validTableName,
  type Inbox,
  type InboxOptions,
  type InboxResult,
} from './common.js';

export class MysqlInbox implements Inbox<MysqlPoolConnection> {
  readonly consumer: string;
  readonly tableName: string;
  private readonly pool: MysqlPool;

  constructor(pool: MysqlPool, options: InboxOptions) {
    this.pool = pool;
    this.consumer = validConsumer(options.consumer);
    this.tableName = validTableName(options.tableName);
  }

  async ensureSchema(): Promise<void> {
    await this.pool.query(`CREATE TABLE IF NOT EXISTS ${this.tableName} (
      consumer VARBINARY(${inboxConsumerBytesMax}) NOT NULL,
      message_id VARBINARY(${inboxMessageIdBytesMax}) NOT NULL,
      received_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      PRIMARY KEY (consumer, message_id),
      KEY ${this.tableName}_received (consumer, received_at)
    ) ENGINE = InnoDB`);
    // A table made before the purge's index gets it.
    const [indexes] = await this.pool.query<RowDataPacket[]>(
      `SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?`,
      [this.tableName, `${this.tableName}_received`],
    );
    if (indexes.length === 0) await this.pool.query(`CREATE INDEX ${this.tableName}_received ON ${this.tableName} (consumer, received_at)`);
  }

  async purgeOlderThan(options: PurgeOptions): Promise<number> {
    const checked = checkedPurgeOptions(options);
    if (!checked) return 0;
    const connection = await this.pool.getConnection();
    try {
      // READ COMMITTED: no gap locks in front of the rows applyOnce is inserting.
      await connection.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
      // received_at and NOW(3) share the session's time zone.
      const [result] = await connection.query<ResultSetHeader>(
        `DELETE FROM ${this.tableName} WHERE consumer = ? AND received_at < NOW(3) - INTERVAL ? MICROSECOND ORDER BY received_at LIMIT ?`,
        [this.consumer, checked.olderThanMs * 1000, checked.batchMax],
      );
      return result.affectedRows;
    } finally {
      connection.release();
    }
  }

  async applyOnce<T>(messageId: string, fn: (tx: MysqlPoolConnection) => Promise<T>): Promise<InboxResult<T>> {
    assertMessageId(messageId);
    const connection = await this.pool.getConnection();
    let broken: Error | undefined;
    try {
      await connection.beginTransaction();
      const [inserted] = await connection.query<ResultSetHeader>(
        `INSERT IGNORE INTO ${this.tableName} (consumer, message_id) VALUES (?, ?)`,
        [this.consumer, messageId],
      );
      if (inserted.affectedRows !== 1) {
        await connection.rollback();
        return { applied: false, reason: 'duplicate' };
      }
      const value = await fn(connection);
      // A deadlock inside `fn` that `fn` caught has rolled the inbox row back and left the
      // session in autocommit; COMMIT would then succeed without having applied anything.
      const [open] = await connection.query<RowDataPacket[]>('SELECT @@in_transaction AS open');
      if (Number(open[0]?.open) !== 1) throw new TransactionEndedInside();
      await connection.commit();
      return { applied: true, value };
    } catch (error) {
      broken = await rollbackQuietly(() => connection.rollback());
      throw error;
    } finally {
      if (broken) connection.destroy();
      else connection.release();
    }
  }
}
