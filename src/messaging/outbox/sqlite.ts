// The outbox on SQLite (better-sqlite3). SQLite has one writer at a time and no row locks, so
// holding a write transaction open across the publishes (BEGIN IMMEDIATE … COMMIT) would stop
// every writer, the application's `add` included, for as long as the broker takes to confirm;
// and better-sqlite3 waits for a busy lock synchronously, blocking the event loop of a process
// that runs both. Instead a claim is a column pair written in one short statement:
//
//   claim:   UPDATE … SET claimed_by = <batch token>, claimed_until = now + claimTtlMs
//            WHERE id IN (due, unclaimed or expired rows in id order LIMIT n) RETURNING …
//   publish: outside any transaction
//   record:  one short transaction: published rows get published_at (whoever holds the claim
//            now: the broker confirmed them); failed rows get their backoff, if still ours.
//
// This is the row-lock design with the lock made explicit: another relay skips claimed rows
// (SKIP LOCKED), and the expiry plays the part of the server noticing a dead connection. A
// relay killed mid-batch leaves its rows claimed until `claimTtlMs` has passed; then another
// relay publishes them again. The relay refuses a claim that could expire while its publishes
// are still waiting (claimTtlMs must exceed twice publishTimeoutMs), so in the normal path no
// two relays publish one row.
import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import {
  OutboxInputError,
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

export type SqliteOutboxOptions = OutboxOptions & {
  /** How long a relay's claim on a batch lasts; default `sqliteClaimTtlMs`. */
  claimTtlMs?: number;
};

/** Default claim lifetime: rows of a relay that died wait this long before another relay takes them. */
export const sqliteClaimTtlMs = 60_000;

interface ClaimedRow {
  id: number | bigint;
  target: string;
  message_id: string;
  body: Buffer;
  headers: string;
  attempts: number;
}

interface Statements {
  claim: Database.Statement;
  published: Database.Statement;
  failed: Database.Statement;
  release: Database.Statement;
  cleanup: Database.Statement;
}

/** The same text format as strftime('%Y-%m-%dT%H:%M:%fZ'), so stored times compare as strings. */
function isoAfterMs(ms: number): string {
  return new Date(Date.now() + ms).toISOString();
}

export class SqliteOutbox implements OutboxStore {
  readonly tableName: string;
  readonly claimTtlMs: number;
  private readonly db: Database.Database;
  private readonly bodyBytesMax: number;
  /** Distinguishes this store's batches from every other relay's, and from its own older ones. */
  private readonly ownerPrefix = randomUUID();
  private batchSeq = 0;
  private prepared: Statements | undefined;
  private readonly insertStatements = new WeakMap<Database.Database, Database.Statement>();

  /**
   * `db` serves the relay and the schema. The relay never keeps a transaction open across an
   * await, so it may share the application's connection as long as the application's own
   * transactions never span an await either (better-sqlite3's `db.transaction` never does);
   * otherwise give the relay a connection of its own. `add` uses whichever connection the
   * caller's transaction is on.
   */
  constructor(db: Database.Database, options: SqliteOutboxOptions = {}) {
    this.db = db;
    this.tableName = validOutboxTableName(options.tableName);
    this.bodyBytesMax = validBodyBytesMax(options.bodyBytesMax);
    this.claimTtlMs = options.claimTtlMs ?? sqliteClaimTtlMs;
    if (!Number.isSafeInteger(this.claimTtlMs) || this.claimTtlMs < 1) throw new RangeError(`outbox: claimTtlMs must be a positive integer`);
  }

  ensureSchema(): void {
    const t = this.tableName;
    // AUTOINCREMENT: ids never come back after the cleanup deletes the newest rows.
    this.db.exec(`CREATE TABLE IF NOT EXISTS ${t} (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      target TEXT NOT NULL,
      message_id TEXT NOT NULL UNIQUE,
      body BLOB NOT NULL,
      headers TEXT NOT NULL DEFAULT '{}',
      created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
      published_at TEXT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      last_error TEXT NULL,
      next_attempt_at TEXT NULL,
      claimed_by TEXT NULL,
      claimed_until TEXT NULL
    );
    CREATE INDEX IF NOT EXISTS ${t}_unpublished ON ${t} (id) WHERE published_at IS NULL;
    CREATE INDEX IF NOT EXISTS ${t}_published ON ${t} (published_at) WHERE published_at IS NOT NULL;`);
  }

  /**
   * Writes one message on `tx`, the connection whose transaction holds the business change
   * (call it inside `db.transaction(…)`). Synchronous, as better-sqlite3 transactions are.
   * Bad input, or a message id already in the table, throws OutboxInputError and writes nothing.
   */
  add(tx: Database.Database, message: OutboxMessage): OutboxAdded {
    const values = outboxRowValues(message, this.bodyBytesMax, randomUUID);
    try {
      const result = this.insertOn(tx).run(values.target, values.messageId, values.body, values.headersJson);
      return { id: String(result.lastInsertRowid), messageId: values.messageId };
    } catch (error) {
      if ((error as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new OutboxInputError('messageId', `${JSON.stringify(values.messageId)} is already in the outbox`);
      }
      throw error;
    }
  }

  async relayBatch(batchSize: number, handle: (rows: OutboxRow[]) => Promise<RowOutcome[]>): Promise<number> {
    const statements = this.statements();
    this.assertNoTransaction();
    this.batchSeq += 1;
    const owner = `${this.ownerPrefix}/${this.batchSeq}`;
    const now = isoAfterMs(0);
    const claimed = statements.claim.all({ owner, now, until: isoAfterMs(this.claimTtlMs), batchSize }) as ClaimedRow[];
    if (claimed.length === 0) return 0;
    // RETURNING gives no order; the relay issues publishes in id order.
    claimed.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
    const rows = claimed.map((row) => ({
      id: String(row.id),
      target: row.target,
      messageId: row.message_id,
      body: row.body,
      headers: parseHeadersColumn(row.headers),
      attempts: row.attempts,
    }));
    let outcomes: RowOutcome[];
    try {
      outcomes = await handle(rows);
    } catch (error) {
      this.db.transaction(() => {
        for (const row of rows) statements.release.run({ id: row.id, owner });
      })();
      throw error;
    }
    this.assertNoTransaction();
    this.record(statements, owner, outcomes);
    return rows.length;
  }

  /** Our statements would silently join someone else's open transaction on this connection. */
  private assertNoTransaction(): void {
    if (this.db.inTransaction) {
      throw new Error('sqlite outbox: the relay connection is inside a transaction (one that spans an await?); give the relay a connection of its own');
    }
  }

  /** See purgePublished: published rows older than `olderThanMs` go, up to `batchMax`; 0 keeps all. */
  purgeOlderThan(options: PurgeOptions): Promise<number> {
    return purgePublished(this, options);
  }

  async deletePublished(retentionMs: number, rowsMax: number): Promise<number> {
    this.assertNoTransaction();
    return this.statements().cleanup.run({ before: isoAfterMs(-retentionMs), rowsMax }).changes;
  }

  private record(statements: Statements, owner: string, outcomes: RowOutcome[]): void {
    const now = isoAfterMs(0);
    this.db.transaction(() => {
      for (const outcome of outcomes) {
        if (outcome.published) statements.published.run({ id: outcome.id, now });
        else statements.failed.run({ id: outcome.id, owner, error: outcome.error, next: isoAfterMs(outcome.retryAfterMs) });
      }
    }).immediate();
  }

  private insertOn(tx: Database.Database): Database.Statement {
    let statement = this.insertStatements.get(tx);
    if (!statement) {
      statement = tx.prepare(`INSERT INTO ${this.tableName} (target, message_id, body, headers) VALUES (?, ?, ?, ?)`);
      this.insertStatements.set(tx, statement);
    }
    return statement;
  }

  /** Prepared on first use, because preparing needs the table that ensureSchema creates. */
  private statements(): Statements {
    this.prepared ??= this.prepareStatements();
    return this.prepared;
  }

  private prepareStatements(): Statements {
    const t = this.tableName;
    return {
      // One statement claims atomically: SQLite runs it under the write lock.
      claim: this.db.prepare(
        `UPDATE ${t} SET claimed_by = @owner, claimed_until = @until
         WHERE id IN (
           SELECT id FROM ${t}
           WHERE published_at IS NULL
             AND (next_attempt_at IS NULL OR next_attempt_at <= @now)
             AND (claimed_until IS NULL OR claimed_until <= @now)
           ORDER BY id LIMIT @batchSize)
         RETURNING id, target, message_id, body, headers, attempts`,
      ),
      // Confirmed by the broker: published, even if our claim expired and another relay holds it.
      published: this.db.prepare(
        `UPDATE ${t} SET published_at = @now, attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL,
           claimed_by = NULL, claimed_until = NULL
         WHERE id = @id AND published_at IS NULL`,
      ),
      failed: this.db.prepare(
        `UPDATE ${t} SET attempts = attempts + 1, last_error = @error, next_attempt_at = @next,
           claimed_by = NULL, claimed_until = NULL
         WHERE id = @id AND claimed_by = @owner`,
      ),
      release: this.db.prepare(`UPDATE ${t} SET claimed_by = NULL, claimed_until = NULL WHERE id = @id AND claimed_by = @owner`),
      cleanup: this.db.prepare(
        `DELETE FROM ${t} WHERE id IN (
           SELECT id FROM ${t} WHERE published_at IS NOT NULL AND published_at < @before ORDER BY published_at LIMIT @rowsMax)`,
      ),
    };
  }
}
