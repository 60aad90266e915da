// The inbox on SQLite (better-sqlite3), in the style of SqliteBarrier: one connection has one
// transaction, so calls take turns, each in its own BEGIN IMMEDIATE … COMMIT.
import type Database from 'better-sqlite3';
import { TransactionEndedInside } from '../../sdk/barrier.js';
import { checkedPurgeOptions, sqliteTimeBefore, type PurgeOptions } from '../../shared/purge.js';
import { assertMessageId, validConsumer, validTableName, type Inbox, type InboxOptions, type InboxResult } from './common.js';

export type SqliteInboxOptions = InboxOptions & {
  /** Calls waiting for the connection beyond this are refused; default sqliteInboxQueuedCallsMax. */
  queuedCallsMax?: number;
};

export const sqliteInboxQueuedCallsMax = 10_000;

/**
 * While `fn` runs, nothing else should write on this connection (it would join the open
 * transaction): give the inbox its own connection, or write only through `applyOnce`.
 * `fn` must not call `applyOnce` on the same inbox (it would wait for itself).
 */
export class SqliteInbox implements Inbox<Database.Database> {
  readonly consumer: string;
  readonly tableName: string;
  private readonly db: Database.Database;
  private readonly queuedCallsMax: number;
  private queuedCalls = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private insertStatement: Database.Statement | undefined;

  constructor(db: Database.Database, options: SqliteInboxOptions) {
    this.db = db;
    this.consumer = validConsumer(options.consumer);
    this.tableName = validTableName(options.tableName);
    this.queuedCallsMax = options.queuedCallsMax ?? sqliteInboxQueuedCallsMax;
  }

  async ensureSchema(): Promise<void> {
    this.db.exec(`CREATE TABLE IF NOT EXISTS ${this.tableName} (
      consumer TEXT NOT NULL,
      message_id TEXT NOT NULL,
      received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
      PRIMARY KEY (consumer, message_id)
    );
    CREATE INDEX IF NOT EXISTS ${this.tableName}_received ON ${this.tableName} (consumer, received_at)`);
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
      return Promise.reject(new Error(`sqlite inbox: more than queuedCallsMax (${this.queuedCallsMax}) calls waiting for the connection`));
    }
    const { olderThanMs, batchMax } = checked;
    this.queuedCalls += 1;
    const run = this.tail
      .then(() => {
        const t = this.tableName;
        return this.db
          .prepare(
            `DELETE FROM ${t} WHERE rowid IN (
               SELECT rowid FROM ${t} WHERE consumer = ? AND received_at < ? ORDER BY received_at LIMIT ?)`,
          )
          .run(this.consumer, sqliteTimeBefore(olderThanMs), batchMax).changes;
      })
      .finally(() => {
        this.queuedCalls -= 1;
      });
    this.tail = run.catch(() => undefined);
    return run;
  }

  applyOnce<T>(messageId: string, fn: (tx: Database.Database) => Promise<T>): Promise<InboxResult<T>> {
    try {
      assertMessageId(messageId);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.queuedCalls >= this.queuedCallsMax) {
      return Promise.reject(new Error(`sqlite inbox: more than queuedCallsMax (${this.queuedCallsMax}) calls waiting for the connection`));
    }
    this.queuedCalls += 1;
    const run = this.tail.then(() => this.applyNow(messageId, fn)).finally(() => {
      this.queuedCalls -= 1;
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async applyNow<T>(messageId: string, fn: (tx: Database.Database) => Promise<T>): Promise<InboxResult<T>> {
    this.insertStatement ??= this.db.prepare(
      `INSERT INTO ${this.tableName} (consumer, message_id) VALUES (?, ?) ON CONFLICT (consumer, message_id) DO NOTHING`,
    );
    this.db.exec('BEGIN IMMEDIATE');
    try {
      if (this.insertStatement.run(this.consumer, messageId).changes !== 1) {
        this.db.exec('ROLLBACK');
        return { applied: false, reason: 'duplicate' };
      }
      const value = await fn(this.db);
      if (!this.db.inTransaction) throw new TransactionEndedInside();
      this.db.exec('COMMIT');
      return { applied: true, value };
    } catch (error) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw error;
    }
  }
}
