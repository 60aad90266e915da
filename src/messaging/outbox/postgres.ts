// The outbox on PostgreSQL: `add` inserts a row on the application's own transaction; the
// relay claims rows with SELECT … FOR UPDATE SKIP LOCKED in a transaction of its own and keeps
// the row locks until it has recorded the outcomes. Other relays skip locked rows, so in the
// normal path no two relays publish one row. If the relay dies, PostgreSQL sees its socket
// close, rolls the transaction back and releases the locks: the rows are due again at once.
import { randomUUID } from 'node:crypto';
import type { ClientBase, Pool, PoolClient } from 'pg';
import { hasErrorCode, lostConcurrentCreate, rollbackQuietly } from '../../shared/sql.js';
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

interface ClaimedRow {
  id: string;
  target: string;
  message_id: string;
  body: Buffer;
  headers: unknown;
  attempts: number;
}

export class PostgresOutbox implements OutboxStore {
  readonly tableName: string;
  private readonly pool: Pool;
  private readonly bodyBytesMax: number;

  /** `pool` serves the relay and the schema; `add` uses the caller's own client. */
  constructor(pool: Pool, options: OutboxOptions = {}) {
    this.pool = pool;
    this.tableName = validOutboxTableName(options.tableName);
    this.bodyBytesMax = validBodyBytesMax(options.bodyBytesMax);
  }

  async ensureSchema(): Promise<void> {
    const t = this.tableName;
    const statements = [
      `CREATE TABLE IF NOT EXISTS ${t} (
        id BIGSERIAL PRIMARY KEY,
        target TEXT NOT NULL,
        message_id TEXT NOT NULL UNIQUE,
        body BYTEA NOT NULL,
        headers JSONB NOT NULL DEFAULT '{}',
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        published_at TIMESTAMPTZ NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NULL,
        next_attempt_at TIMESTAMPTZ NULL
      )`,
      // The relay's scan: unpublished rows in id order. Partial, so it stays as small as the backlog.
      `CREATE INDEX IF NOT EXISTS ${t}_unpublished ON ${t} (id) WHERE published_at IS NULL`,
      // The retention cleanup's scan.
      `CREATE INDEX IF NOT EXISTS ${t}_published ON ${t} (published_at) WHERE published_at IS NOT NULL`,
    ];
    for (const statement of statements) {
      try {
        await this.pool.query(statement);
      } catch (error) {
        // Two processes creating the schema at once: IF NOT EXISTS is not atomic in PostgreSQL,
        // and the loser sees a unique violation on the catalog. The object exists; enough.
        if (!lostConcurrentCreate(error)) throw error;
      }
    }
  }

  /**
   * Writes one message on `tx`, a client inside the caller's BEGIN, so that it commits or rolls
   * back with the business change. Bad input throws OutboxInputError before any statement runs.
   * A message id already in the table also throws OutboxInputError; PostgreSQL has then
   * aborted the caller's transaction, which must roll back.
   */
  async add(tx: ClientBase, message: OutboxMessage): Promise<OutboxAdded> {
    const values = outboxRowValues(message, this.bodyBytesMax, randomUUID);
    try {
      const result = await tx.query<{ id: string }>(
        `INSERT INTO ${this.tableName} (target, message_id, body, headers) VALUES ($1, $2, $3, $4::jsonb) RETURNING id::text AS id`,
        [values.target, values.messageId, values.body, values.headersJson],
      );
      return { id: result.rows[0].id, messageId: values.messageId };
    } catch (error) {
      if (hasErrorCode(error, '23505')) throw new OutboxInputError('messageId', `${JSON.stringify(values.messageId)} is already in the outbox (the transaction is aborted)`);
      throw error;
    }
  }

  async relayBatch(batchSize: number, handle: (rows: OutboxRow[]) => Promise<RowOutcome[]>): Promise<number> {
    const client = await this.pool.connect();
    // A checked-out client whose connection breaks emits 'error'; unheard, it would crash the
    // process. The next query fails anyway, which is how the batch learns of it.
    const ignore = (): void => undefined;
    client.on('error', ignore);
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const rows = await this.claim(client, batchSize);
      if (rows.length > 0) await this.record(client, await handle(rows));
      await client.query('COMMIT');
      return rows.length;
    } catch (error) {
      broken = await rollbackQuietly(() => client.query('ROLLBACK'));
      throw error;
    } finally {
      client.off('error', ignore);
      // A client whose ROLLBACK failed may still hold a transaction: destroy it, never reuse it.
      client.release(broken);
    }
  }

  /** See purgePublished: published rows older than `olderThanMs` go, up to `batchMax`; 0 keeps all. */
  purgeOlderThan(options: PurgeOptions): Promise<number> {
    return purgePublished(this, options);
  }

  async deletePublished(retentionMs: number, rowsMax: number): Promise<number> {
    const result = await this.pool.query(
      `DELETE FROM ${this.tableName} WHERE id IN (
         SELECT id FROM ${this.tableName}
         WHERE published_at IS NOT NULL AND published_at < now() - $1 * interval '1 millisecond'
         ORDER BY published_at LIMIT $2)`,
      [retentionMs, rowsMax],
    );
    return result.rowCount ?? 0;
  }

  private async claim(client: PoolClient, batchSize: number): Promise<OutboxRow[]> {
    const result = await client.query<ClaimedRow>(
      `SELECT id::text AS id, target, message_id, body, headers, attempts FROM ${this.tableName}
       WHERE published_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= now())
       -- Qualified: a bare "id" would sort by the text alias above (as text, and without the index).
       ORDER BY ${this.tableName}.id LIMIT $1 FOR UPDATE SKIP LOCKED`,
      [batchSize],
    );
    return result.rows.map((row) => ({
      id: row.id,
      target: row.target,
      messageId: row.message_id,
      body: row.body,
      headers: parseHeadersColumn(row.headers),
      attempts: row.attempts,
    }));
  }

  /** Two statements whatever the batch size: one for the confirmed rows, one for the failed. */
  private async record(client: PoolClient, outcomes: RowOutcome[]): Promise<void> {
    const publishedIds: string[] = [];
    const failedIds: string[] = [];
    const errors: string[] = [];
    const delaysMs: number[] = [];
    for (const outcome of outcomes) {
      if (outcome.published) {
        publishedIds.push(outcome.id);
      } else {
        failedIds.push(outcome.id);
        errors.push(outcome.error);
        delaysMs.push(outcome.retryAfterMs);
      }
    }
    if (publishedIds.length > 0) {
      await client.query(
        `UPDATE ${this.tableName} SET published_at = clock_timestamp(), attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL
         WHERE id = ANY($1::bigint[])`,
        [publishedIds],
      );
    }
    if (failedIds.length > 0) {
      // clock_timestamp(), not now(): now() is when the batch began, before the publish wait.
      await client.query(
        `UPDATE ${this.tableName} AS t
         SET attempts = t.attempts + 1, last_error = f.error, next_attempt_at = clock_timestamp() + f.delay_ms * interval '1 millisecond'
         FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS f(id, error, delay_ms)
         WHERE t.id = f.id`,
        [failedIds, errors, delaysMs],
      );
    }
  }
}
