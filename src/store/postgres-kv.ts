// The versioned key-value store on PostgreSQL, shared by every coordinator on the database.
// The revision counter is one row; each commit locks it first (SELECT … FOR UPDATE), so writes
// from all coordinators are serialised on it, every version check sees the latest committed
// state, and versions keep the SQLite store's meaning (one counter over the whole store, never
// reused). Writes asked for in one turn of the event loop share one transaction (group commit),
// and a write resolves only once that transaction has committed.
import pg from 'pg';
import { decide, prefixEnd, type KvEntry, type KvOutcome, type KvWrite } from '../kv/kv.js';
import type { KvListQuery, KvPage, KvStore } from '../kv/store.js';

export interface PostgresKvOptions {
  keysMax: number;
  /** Prepended to the table names, so several deployments (or test runs) share one database. */
  tablePrefix: string;
  /** Writes that share one commit at most; the rest wait for the next. */
  writesPerCommitMax: number;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  poolSizeMax: number;
}

interface PendingWrite {
  write: KvWrite;
  resolve: (outcome: KvOutcome) => void;
  reject: (error: unknown) => void;
}

const tablePrefixPattern = /^[a-z_][a-z0-9_]{0,30}$/;

export class PostgresKvStore implements KvStore {
  private queue: PendingWrite[] = [];
  private flushing = false;
  private closed = false;
  private readonly entries: string;
  private readonly counters: string;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly options: PostgresKvOptions,
  ) {
    this.entries = `${options.tablePrefix}kv_entries`;
    this.counters = `${options.tablePrefix}kv_counters`;
  }

  static async open(url: string, options: PostgresKvOptions): Promise<PostgresKvStore> {
    if (!tablePrefixPattern.test(options.tablePrefix)) throw new Error(`tablePrefix ${JSON.stringify(options.tablePrefix)} must match ${tablePrefixPattern}`);
    const pool = new pg.Pool({ connectionString: url, max: options.poolSizeMax, connectionTimeoutMillis: options.connectTimeoutMs, query_timeout: options.commandTimeoutMs });
    pool.on('error', () => undefined);
    const store = new PostgresKvStore(pool, options);
    try {
      await store.migrate();
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw error;
    }
    return store;
  }

  private async migrate(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      // Two coordinators starting at once would race on CREATE TABLE IF NOT EXISTS.
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [this.entries]);
      // COLLATE "C" orders keys by UTF-8 bytes, which is code point order, as on SQLite and Redis.
      await client.query(`CREATE TABLE IF NOT EXISTS ${this.entries} (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL, version BIGINT NOT NULL)`);
      await client.query(`CREATE TABLE IF NOT EXISTS ${this.counters} (id INT PRIMARY KEY, revision BIGINT NOT NULL, key_count BIGINT NOT NULL)`);
      await client.query(`INSERT INTO ${this.counters} (id, revision, key_count) VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING`);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async get(key: string): Promise<KvEntry | null> {
    const result = await this.pool.query<{ key: string; value: string; version: string }>(`SELECT key, value, version FROM ${this.entries} WHERE key = $1`, [key]);
    const row = result.rows[0];
    return row ? { key: row.key, valueJson: row.value, version: Number(row.version) } : null;
  }

  async list(query: KvListQuery): Promise<KvPage> {
    const end = prefixEnd(query.prefix);
    const after = query.after ?? '';
    const result = await this.pool.query<{ key: string; value: string; version: string }>(
      `SELECT key, value, version FROM ${this.entries} WHERE key >= $1 AND ($2::text IS NULL OR key < $2) AND key > $3 ORDER BY key LIMIT $4`,
      [query.prefix, end, after, query.limit + 1],
    );
    const items = result.rows.slice(0, query.limit).map((row) => ({ key: row.key, valueJson: row.value, version: Number(row.version) }));
    return { items, nextCursor: result.rows.length > query.limit ? items[items.length - 1].key : null };
  }

  write(write: KvWrite): Promise<KvOutcome> {
    if (this.closed) return Promise.reject(new Error('the key-value store is closed'));
    return new Promise<KvOutcome>((resolve, reject) => {
      this.queue.push({ write, resolve, reject });
      if (!this.flushing) {
        this.flushing = true;
        setImmediate(() => void this.flushLoop());
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    // Bounded: each pass takes up to writesPerCommitMax queued writes and no new ones arrive.
    for (let pass = 0; this.flushing && pass < 1000; pass++) await new Promise((resolve) => setImmediate(resolve));
    await this.pool.end();
  }

  /** One commit at a time: they would serialise on the counter row anyway. */
  private async flushLoop(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.writesPerCommitMax);
      try {
        const outcomes = await this.commit(batch.map((pending) => pending.write));
        batch.forEach((pending, index) => pending.resolve(outcomes[index]));
      } catch (error) {
        for (const pending of batch) pending.reject(error);
      }
    }
    this.flushing = false;
  }

  private async commit(writes: KvWrite[]): Promise<KvOutcome[]> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const counter = await client.query<{ revision: string; key_count: string }>(`SELECT revision, key_count FROM ${this.counters} WHERE id = 1 FOR UPDATE`);
      let revision = Number(counter.rows[0].revision);
      let keyCount = Number(counter.rows[0].key_count);
      const keys = [...new Set(writes.map((write) => write.key))];
      const current = await client.query<{ key: string; version: string }>(`SELECT key, version FROM ${this.entries} WHERE key = ANY($1::text[])`, [keys]);
      const versions = new Map<string, number | null>(keys.map((key) => [key, null]));
      for (const row of current.rows) versions.set(row.key, Number(row.version));
      const finals = new Map<string, KvEntry | null>();
      const outcomes = writes.map((write) => {
        const decision = decide(versions.get(write.key)!, write, { nextRevision: revision + 1, keyCount, keysMax: this.options.keysMax });
        if (decision.apply === 'upsert') {
          revision += 1;
          if (versions.get(write.key) === null) keyCount += 1;
          versions.set(write.key, decision.entry.version);
          finals.set(write.key, decision.entry);
        } else if (decision.apply === 'remove') {
          keyCount -= 1;
          versions.set(write.key, null);
          finals.set(write.key, null);
        }
        return decision.outcome;
      });
      const upserts = [...finals.values()].filter((entry): entry is KvEntry => entry !== null);
      const removals = [...finals].filter(([, entry]) => entry === null).map(([key]) => key);
      if (upserts.length > 0) {
        await client.query(
          `INSERT INTO ${this.entries} (key, value, version) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version`,
          [upserts.map((entry) => entry.key), upserts.map((entry) => entry.valueJson), upserts.map((entry) => entry.version)],
        );
      }
      if (removals.length > 0) await client.query(`DELETE FROM ${this.entries} WHERE key = ANY($1::text[])`, [removals]);
      await client.query(`UPDATE ${this.counters} SET revision = $1, key_count = $2 WHERE id = 1`, [revision, keyCount]);
      await client.query('COMMIT');
      return outcomes;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }
}
