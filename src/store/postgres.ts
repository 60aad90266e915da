// PostgreSQL store (pg). Several coordinators may share one database. Writes are
// group-committed: the writes queued while the previous flush ran go out as ONE statement
// (data-modifying CTEs over unnest() arrays), which PostgreSQL runs as one transaction with one
// WAL flush. Schema migrations are versioned in tandem_schema and run under an advisory lock,
// so coordinators starting together do not race.
import pg from 'pg';
import type { HistoryEntry, Tx } from '../tx/types.js';
import {
  StoreUnavailableError,
  decodeCursor,
  storableWrite,
  encodeCursor,
  summarize,
  type CommitObservation,
  type ListPage,
  type ListQuery,
  type PurgeRequest,
  type Store,
} from './store.js';

export interface PostgresStoreOptions {
  /** Connections in the pool. */
  poolSizeMax: number;
  /** Flushes (group commits) in flight at once. */
  flushesInFlightMax: number;
  /** Time to wait for a connection before the store counts as unavailable. */
  connectTimeoutMs: number;
  /** Longest one query may take before the store counts as unavailable. */
  commandTimeoutMs: number;
}

interface PendingWrite {
  kind: 'insert' | 'update';
  tx: Tx;
  expectedVersion: number;
  history: HistoryEntry[];
  resolve: (written: boolean) => void;
  reject: (error: unknown) => void;
}

interface TxRow {
  body: string;
  version: string | number;
  lease_owner: string | null;
  lease_until_ms: string | number | null;
}

const migrationLockKey = 0x74616e64; // "tand"

const migrations: readonly string[] = [
  `CREATE TABLE tandem_transactions (
     gid TEXT PRIMARY KEY,
     mode TEXT NOT NULL,
     status TEXT NOT NULL,
     created_at_ms BIGINT NOT NULL,
     updated_at_ms BIGINT NOT NULL,
     next_attempt_at_ms BIGINT,
     version BIGINT NOT NULL,
     lease_owner TEXT,
     lease_until_ms BIGINT,
     body TEXT NOT NULL
   );
   CREATE INDEX tandem_transactions_due ON tandem_transactions (next_attempt_at_ms) WHERE next_attempt_at_ms IS NOT NULL;
   CREATE INDEX tandem_transactions_created ON tandem_transactions (created_at_ms DESC, gid DESC);
   CREATE TABLE tandem_history (
     id BIGSERIAL PRIMARY KEY,
     gid TEXT NOT NULL,
     at_ms BIGINT NOT NULL,
     status TEXT NOT NULL,
     phase TEXT NOT NULL,
     reason TEXT
   );
   CREATE INDEX tandem_history_gid ON tandem_history (gid, id);
   CREATE TABLE tandem_instances (id TEXT PRIMARY KEY, last_beat_ms BIGINT NOT NULL);`,
  // The retention's scan: finished transactions by finish time. Built inside the migration's
  // transaction, so writes to the table wait while it builds (once, at the upgrade).
  `CREATE INDEX tandem_transactions_finished ON tandem_transactions (updated_at_ms) WHERE status IN ('succeeded', 'failed');`,
];

/**
 * One statement, so one transaction: the transactions and their history go together. FOR
 * UPDATE SKIP LOCKED makes coordinators purging at once take disjoint rows, and skips a row a
 * write holds; the lock re-checks the conditions on the newest row version (a lease taken
 * meanwhile keeps the row).
 */
const purgeSql = `
WITH victims AS (
  SELECT gid FROM tandem_transactions
  WHERE status IN ('succeeded', 'failed') AND updated_at_ms < $1 AND (lease_until_ms IS NULL OR lease_until_ms <= $2)
  ORDER BY updated_at_ms LIMIT $3
  FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM tandem_transactions t USING victims v WHERE t.gid = v.gid RETURNING t.gid
), history_gone AS (
  DELETE FROM tandem_history h USING gone g WHERE h.gid = g.gid
)
SELECT count(*)::int AS purged FROM gone`;

/** One statement for a whole batch: inserts, version-checked updates, and their history. */
const flushSql = `
WITH ins AS (
  INSERT INTO tandem_transactions (gid, mode, status, created_at_ms, updated_at_ms, next_attempt_at_ms, version, lease_owner, lease_until_ms, body)
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::text[])
  ON CONFLICT (gid) DO NOTHING
  RETURNING gid
), upd AS (
  UPDATE tandem_transactions t SET status = v.status, updated_at_ms = v.updated_at_ms, next_attempt_at_ms = v.next_attempt_at_ms,
    version = v.version, lease_owner = v.lease_owner, lease_until_ms = v.lease_until_ms, body = v.body
  FROM unnest($11::text[], $12::bigint[], $13::text[], $14::bigint[], $15::bigint[], $16::bigint[], $17::text[], $18::bigint[], $19::text[])
    AS v(gid, expected_version, status, updated_at_ms, next_attempt_at_ms, version, lease_owner, lease_until_ms, body)
  WHERE t.gid = v.gid AND t.version = v.expected_version
  RETURNING t.gid
), hist AS (
  INSERT INTO tandem_history (gid, at_ms, status, phase, reason)
  SELECT h.gid, h.at_ms, h.status, h.phase, h.reason
  FROM unnest($20::text[], $21::bigint[], $22::text[], $23::text[], $24::text[]) WITH ORDINALITY AS h(gid, at_ms, status, phase, reason, n)
  WHERE h.gid IN (SELECT gid FROM ins UNION ALL SELECT gid FROM upd)
  ORDER BY h.n
)
SELECT gid FROM ins UNION ALL SELECT gid FROM upd`;

export class PostgresStore implements Store {
  private queue: PendingWrite[] = [];
  private flushesInFlight = 0;
  private readonly observers: Array<(observation: CommitObservation) => void> = [];

  private constructor(
    private readonly pool: pg.Pool,
    private readonly options: PostgresStoreOptions,
  ) {}

  /** Connects and migrates; throws StoreUnavailableError with the reason if it cannot. */
  static async open(url: string, options: PostgresStoreOptions): Promise<PostgresStore> {
    const pool = new pg.Pool({
      connectionString: url,
      max: options.poolSizeMax,
      connectionTimeoutMillis: options.connectTimeoutMs,
      query_timeout: options.commandTimeoutMs,
    });
    // An idle client losing its server must not crash the process; the pool replaces it.
    pool.on('error', () => undefined);
    const store = new PostgresStore(pool, options);
    try {
      await store.migrate();
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw new StoreUnavailableError(`cannot open PostgreSQL store ${redact(url)}: ${describe(error)}`, { cause: error });
    }
    return store;
  }

  insert(tx: Tx, history: HistoryEntry[]): Promise<boolean> {
    const write = storableWrite(tx, history);
    return this.enqueue('insert', write.tx, -1, write.history);
  }

  update(tx: Tx, expectedVersion: number, history: HistoryEntry[]): Promise<boolean> {
    const write = storableWrite(tx, history);
    return this.enqueue('update', write.tx, expectedVersion, write.history);
  }

  async claim(gid: string, owner: string, nowMs: number, untilMs: number): Promise<Tx | null> {
    const result = await this.query<TxRow>(
      `UPDATE tandem_transactions SET lease_owner = $2, lease_until_ms = $3, version = version + 1
       WHERE gid = $1 AND (lease_until_ms IS NULL OR lease_until_ms <= $4 OR lease_owner = $2)
       RETURNING body, version, lease_owner, lease_until_ms`,
      [gid, owner, untilMs, nowMs],
    );
    return result.rows[0] ? fromRow(result.rows[0]) : null;
  }

  async get(gid: string): Promise<Tx | null> {
    const result = await this.query<TxRow>('SELECT body, version, lease_owner, lease_until_ms FROM tandem_transactions WHERE gid = $1', [gid]);
    return result.rows[0] ? fromRow(result.rows[0]) : null;
  }

  async history(gid: string): Promise<HistoryEntry[]> {
    const result = await this.query<{ at_ms: string; status: HistoryEntry['status']; phase: string; reason: string | null }>(
      'SELECT at_ms, status, phase, reason FROM tandem_history WHERE gid = $1 ORDER BY id',
      [gid],
    );
    return result.rows.map((row) => ({ atMs: Number(row.at_ms), status: row.status, phase: row.phase, ...(row.reason ? { reason: row.reason } : {}) }));
  }

  async list(query: ListQuery): Promise<ListPage> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (query.status) {
      params.push(query.status);
      where.push(`status = $${params.length}`);
    }
    if (query.mode) {
      params.push(query.mode);
      where.push(`mode = $${params.length}`);
    }
    const after = query.cursor ? decodeCursor(query.cursor) : null;
    if (after) {
      params.push(after[0], after[1]);
      where.push(`(created_at_ms, gid) < ($${params.length - 1}, $${params.length})`);
    }
    params.push(query.limit + 1);
    const result = await this.query<{ body: string }>(
      `SELECT body FROM tandem_transactions ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
       ORDER BY created_at_ms DESC, gid DESC LIMIT $${params.length}`,
      params,
    );
    const items = result.rows.slice(0, query.limit).map((row) => summarize(JSON.parse(row.body) as Tx));
    const last = items[items.length - 1];
    return { items, nextCursor: result.rows.length > query.limit && last ? encodeCursor(last.createdAtMs, last.gid) : null };
  }

  async due(nowMs: number, limit: number, owner: string): Promise<string[]> {
    const result = await this.query<{ gid: string }>(
      `SELECT gid FROM tandem_transactions WHERE next_attempt_at_ms IS NOT NULL AND next_attempt_at_ms <= $1
         AND (lease_until_ms IS NULL OR lease_until_ms <= $1 OR lease_owner = $3)
       ORDER BY next_attempt_at_ms LIMIT $2`,
      [nowMs, limit, owner],
    );
    return result.rows.map((row) => row.gid);
  }

  async heartbeat(instanceId: string, nowMs: number): Promise<void> {
    await this.query(
      'INSERT INTO tandem_instances (id, last_beat_ms) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET last_beat_ms = EXCLUDED.last_beat_ms',
      [instanceId, nowMs],
    );
  }

  async liveInstances(sinceMs: number): Promise<string[]> {
    const result = await this.query<{ id: string }>('SELECT id FROM tandem_instances WHERE last_beat_ms >= $1 ORDER BY id', [sinceMs]);
    return result.rows.map((row) => row.id);
  }

  async removeInstance(instanceId: string): Promise<void> {
    await this.query('DELETE FROM tandem_instances WHERE id = $1', [instanceId]);
  }

  async purgeFinished(request: PurgeRequest): Promise<number> {
    const result = await this.query<{ purged: number }>(purgeSql, [request.finishedBeforeMs, request.nowMs, request.limit]);
    return result.rows[0]?.purged ?? 0;
  }

  async clockMs(): Promise<number> {
    // clock_timestamp(), not now(): now() is the start of the transaction, not the present.
    const result = await this.query<{ ms: string }>('SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint AS ms');
    return Number(result.rows[0]?.ms);
  }

  onCommit(observer: (observation: CommitObservation) => void): void {
    this.observers.push(observer);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  private async migrate(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('SELECT pg_advisory_lock($1)', [migrationLockKey]);
      await client.query('CREATE TABLE IF NOT EXISTS tandem_schema (version INTEGER NOT NULL)');
      const current = await client.query<{ version: number }>('SELECT version FROM tandem_schema');
      let version = current.rows[0]?.version ?? 0;
      if (current.rows.length === 0) await client.query('INSERT INTO tandem_schema (version) VALUES (0)');
      for (; version < migrations.length; version++) {
        await client.query('BEGIN');
        await client.query(migrations[version]);
        await client.query('UPDATE tandem_schema SET version = $1', [version + 1]);
        await client.query('COMMIT');
      }
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [migrationLockKey]).catch(() => undefined);
      client.release();
    }
  }

  private async query<Row extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<Row>> {
    try {
      return await this.pool.query<Row>(sql, params);
    } catch (error) {
      throw asUnavailable(error);
    }
  }

  private enqueue(kind: PendingWrite['kind'], tx: Tx, expectedVersion: number, history: HistoryEntry[]): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.queue.push({ kind, tx, expectedVersion, history, resolve, reject });
      this.maybeFlush();
    });
  }

  /**
   * Starts a flush unless the allowed number are in flight; writes arriving meanwhile wait and
   * go out together when one finishes. That is what makes the batches grow with the load.
   */
  private maybeFlush(): void {
    if (this.queue.length === 0 || this.flushesInFlight >= this.options.flushesInFlightMax) return;
    const batch = this.queue;
    this.queue = [];
    this.flushesInFlight += 1;
    void this.flush(batch).finally(() => {
      this.flushesInFlight -= 1;
      this.maybeFlush();
    });
  }

  private async flush(batch: PendingWrite[]): Promise<void> {
    const startedMs = performance.now();
    try {
      const result = await this.pool.query<{ gid: string }>(flushSql, batchParams(batch));
      const written = new Set(result.rows.map((row) => row.gid));
      for (const write of batch) write.resolve(written.has(write.tx.gid));
      const observation = { batchSize: batch.length, durationMs: performance.now() - startedMs };
      for (const observer of this.observers) observer(observation);
    } catch (error) {
      const failure = asUnavailable(error);
      if (failure instanceof StoreUnavailableError || batch.length === 1) {
        for (const write of batch) write.reject(failure);
        return;
      }
      // PostgreSQL refused the statement, and being one statement it wrote none of it. One
      // write it refuses must not fail the others, nor every later batch it would be retried
      // into: try each half on its own, which leaves only the refused writes rejected (for k of
      // them, at most about 2k·log2(n) more statements). A lost connection is not split: its
      // outcome is unknown, and every half would fail alike.
      const middle = Math.ceil(batch.length / 2);
      await this.flush(batch.slice(0, middle));
      await this.flush(batch.slice(middle));
    }
  }
}

function batchParams(batch: PendingWrite[]): unknown[] {
  const inserts = batch.filter((write) => write.kind === 'insert');
  const updates = batch.filter((write) => write.kind === 'update');
  const column = <T>(writes: PendingWrite[], pick: (tx: Tx, write: PendingWrite) => T) => writes.map((write) => pick(write.tx, write));
  const history = batch.flatMap((write) => write.history.map((entry) => ({ gid: write.tx.gid, entry })));
  return [
    column(inserts, (tx) => tx.gid),
    column(inserts, (tx) => tx.mode),
    column(inserts, (tx) => tx.status),
    column(inserts, (tx) => tx.createdAtMs),
    column(inserts, (tx) => tx.updatedAtMs),
    column(inserts, (tx) => tx.nextAttemptAtMs),
    column(inserts, (tx) => tx.version),
    column(inserts, (tx) => tx.lease?.owner ?? null),
    column(inserts, (tx) => tx.lease?.untilMs ?? null),
    column(inserts, (tx) => JSON.stringify(tx)),
    column(updates, (tx) => tx.gid),
    column(updates, (_tx, write) => write.expectedVersion),
    column(updates, (tx) => tx.status),
    column(updates, (tx) => tx.updatedAtMs),
    column(updates, (tx) => tx.nextAttemptAtMs),
    column(updates, (tx) => tx.version),
    column(updates, (tx) => tx.lease?.owner ?? null),
    column(updates, (tx) => tx.lease?.untilMs ?? null),
    column(updates, (tx) => JSON.stringify(tx)),
    history.map((item) => item.gid),
    history.map((item) => item.entry.atMs),
    history.map((item) => item.entry.status),
    history.map((item) => item.entry.phase),
    history.map((item) => item.entry.reason ?? null),
  ];
}

function fromRow(row: TxRow): Tx {
  const tx = JSON.parse(row.body) as Tx;
  tx.version = Number(row.version);
  tx.lease = row.lease_owner === null || row.lease_until_ms === null ? null : { owner: row.lease_owner, untilMs: Number(row.lease_until_ms) };
  return tx;
}

/** Connection-level failures mean the store is down (503), not that the request was wrong. */
function asUnavailable(error: unknown): unknown {
  if (error instanceof StoreUnavailableError) return error;
  const code = (error as { code?: unknown }).code;
  const connectionCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', '57P01', '57P02', '57P03', '08000', '08003', '08006']);
  const message = describe(error);
  if ((typeof code === 'string' && connectionCodes.has(code)) || /timeout|terminat|Connection|connect/i.test(message)) {
    return new StoreUnavailableError(`PostgreSQL: ${message}`, { cause: error });
  }
  return error;
}

function describe(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return describe(error.errors[0]);
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

function redact(url: string): string {
  return url.replace(/:\/\/([^:@/]+):[^@/]*@/, '://$1:***@');
}
