// The inbox on PostgreSQL (pg). Each call takes a pooled client for one READ COMMITTED
// transaction and inserts the inbox row first: a concurrent delivery of the same message
// blocks on that unique key until the first transaction ends, then inserts nothing (it
// committed) or goes ahead (it rolled back).
import type { Pool as PgPool, PoolClient as PgPoolClient } from 'pg';
import { TransactionEndedInside } from '../../sdk/barrier.js';
import { lostConcurrentCreate, rollbackQuietly } from '../../shared/sql.js';
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

export class PostgresInbox implements Inbox<PgPoolClient> {
  readonly consumer: string;
  readonly tableName: string;
  private readonly pool: PgPool;

  constructor(pool: PgPool, options: InboxOptions) {
    this.pool = pool;
    this.consumer = validConsumer(options.consumer);
    this.tableName = validTableName(options.tableName);
  }

  async ensureSchema(): Promise<void> {
    try {
      await this.pool.query(`CREATE TABLE IF NOT EXISTS ${this.tableName} (
        consumer VARCHAR(${inboxConsumerBytesMax}) NOT NULL,
        message_id VARCHAR(${inboxMessageIdBytesMax}) NOT NULL,
        received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer, message_id)
      )`);
    } catch (error) {
      // Two processes creating the table at once: IF NOT EXISTS is not atomic in PostgreSQL.
      if (!lostConcurrentCreate(error)) throw error;
    }
    try {
      // The purge's scan: one consumer's rows by age.
      await this.pool.query(`CREATE INDEX IF NOT EXISTS ${this.tableName}_received ON ${this.tableName} (consumer, received_at)`);
    } catch (error) {
      if (!lostConcurrentCreate(error)) throw error;
    }
  }

  async purgeOlderThan(options: PurgeOptions): Promise<number> {
    const checked = checkedPurgeOptions(options);
    if (!checked) return 0;
    const t = this.tableName;
    const result = await this.pool.query(
      `DELETE FROM ${t} WHERE consumer = $1 AND message_id IN (
         SELECT message_id FROM ${t} WHERE consumer = $1 AND received_at < now() - $2 * interval '1 millisecond'
         ORDER BY received_at LIMIT $3)`,
      [this.consumer, checked.olderThanMs, checked.batchMax],
    );
    return result.rowCount ?? 0;
  }

  async applyOnce<T>(messageId: string, fn: (tx: PgPoolClient) => Promise<T>): Promise<InboxResult<T>> {
    assertMessageId(messageId);
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const inserted = await client.query(
        `INSERT INTO ${this.tableName} (consumer, message_id) VALUES ($1, $2) ON CONFLICT (consumer, message_id) DO NOTHING`,
        [this.consumer, messageId],
      );
      if (inserted.rowCount !== 1) {
        await client.query('ROLLBACK');
        return { applied: false, reason: 'duplicate' };
      }
      const value = await fn(client);
      // After an error inside the transaction, PostgreSQL answers COMMIT with ROLLBACK.
      const committed = await client.query('COMMIT');
      if (committed.command !== 'COMMIT') throw new TransactionEndedInside();
      return { applied: true, value };
    } catch (error) {
      broken = await rollbackQuietly(() => client.query('ROLLBACK'));
      throw error;
    } finally {
      // A client whose ROLLBACK failed may still hold a transaction: destroy it, never reuse it.
      client.release(broken);
    }
  }
}
