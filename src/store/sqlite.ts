// Embedded store on SQLite (better-sqlite3) in WAL mode. Writes are group-committed: every
// write asked for in the same turn of the event loop goes into one SQLite transaction, so
// many state changes share one fsync. A write's promise resolves only after that commit.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { HistoryEntry, Tx } from '../tx/types.js';
import { WalSyncer } from './wal-sync.js';
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
  type UnfinishedCounts,
  type Store,
} from './store.js';

export type SqliteSync = 'full' | 'normal';

export interface SqliteStoreOptions {
  /** `full` fsyncs every commit (survives power loss); `normal` survives a process crash only. */
  sync: SqliteSync;
}

/** A write waiting for the next group commit; `apply` runs inside the commit's transaction. */
interface PendingWrite {
  apply: () => unknown;
  /** The gid written, so that reads of it wait until the write is on disk. */
  key?: string;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

interface TxRow {
  body: string;
  version: number;
  lease_owner: string | null;
  lease_until_ms: number | null;
}

const migrations: readonly string[] = [
  `CREATE TABLE transactions (
     gid TEXT PRIMARY KEY,
     mode TEXT NOT NULL,
     status TEXT NOT NULL,
     created_at_ms INTEGER NOT NULL,
     updated_at_ms INTEGER NOT NULL,
     next_attempt_at_ms INTEGER,
     version INTEGER NOT NULL,
     body TEXT NOT NULL
   );
   CREATE INDEX transactions_due ON transactions (next_attempt_at_ms) WHERE next_attempt_at_ms IS NOT NULL;
   CREATE INDEX transactions_created ON transactions (created_at_ms DESC, gid DESC);
   CREATE TABLE history (
     gid TEXT NOT NULL,
     seq INTEGER NOT NULL,
     at_ms INTEGER NOT NULL,
     status TEXT NOT NULL,
     phase TEXT NOT NULL,
     reason TEXT,
     PRIMARY KEY (gid, seq)
   ) WITHOUT ROWID;`,
  `ALTER TABLE transactions ADD COLUMN lease_owner TEXT;
   ALTER TABLE transactions ADD COLUMN lease_until_ms INTEGER;
   CREATE TABLE instances (id TEXT PRIMARY KEY, last_beat_ms INTEGER NOT NULL) WITHOUT ROWID;`,
  // History moves into the transaction's own row: one B-tree change per write instead of two
  // (the separate table, keyed by gid, scattered every group commit over many more pages).
  `ALTER TABLE transactions ADD COLUMN history TEXT NOT NULL DEFAULT '[]';
   UPDATE transactions SET history = COALESCE((
     SELECT json_group_array(json_object('atMs', at_ms, 'status', status, 'phase', phase, 'reason', reason))
     FROM (SELECT * FROM history h WHERE h.gid = transactions.gid ORDER BY seq)), '[]');
   DROP TABLE history;`,
  // The retention's scan: finished transactions by finish time.
  `CREATE INDEX transactions_finished ON transactions (updated_at_ms) WHERE status IN ('succeeded', 'failed');`,
  // Unfinished transactions by status, newest first: the console's status filters and its stuck
  // view read a few hundred among millions of ended ones. Partial, so ended transactions (almost
  // all rows) cost nothing in it; list() names the status as a literal so the planner can use it.
  // One per status: SQLite uses a partial index only when a query term matches its WHERE term.
  `CREATE INDEX transactions_prepared ON transactions (created_at_ms DESC, gid DESC) WHERE status = 'prepared';
   CREATE INDEX transactions_submitted ON transactions (created_at_ms DESC, gid DESC) WHERE status = 'submitted';
   CREATE INDEX transactions_aborting ON transactions (created_at_ms DESC, gid DESC) WHERE status = 'aborting';`,
];

/** Statuses with a partial index of their own (transactions_<status>). */
const unfinishedStatuses: ReadonlySet<string> = new Set(['prepared', 'submitted', 'aborting']);

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly statements;
  private queue: PendingWrite[] = [];
  private flushScheduled = false;
  private readonly observers: Array<(observation: CommitObservation) => void> = [];
  /**
   * With sync full on a file, the WAL is fsynced by WalSyncer on libuv's thread pool rather
   * than by SQLite inside COMMIT: a commit's fsync then no longer stalls the event loop (it did
   * for ~20% of a busy coordinator's time).
   */
  private readonly wal: WalSyncer | null;

  constructor(filePath: string, options: SqliteStoreOptions) {
    if (filePath !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(filePath)), { recursive: true });
    this.db = new Database(filePath);
    this.db.pragma('journal_mode = WAL');
    const walSynced = options.sync === 'full' && filePath !== ':memory:';
    this.wal = walSynced
      ? new WalSyncer(`${path.resolve(filePath)}-wal`, (cause) => new StoreUnavailableError(`SQLite: fsync of the WAL failed, the store takes no more writes until restarted: ${cause.message}`, { cause }))
      : null;
    this.db.pragma(`synchronous = ${options.sync === 'full' && !walSynced ? 'FULL' : 'NORMAL'}`);
    this.db.pragma('busy_timeout = 5000');
    migrate(this.db);
    this.statements = {
      insert: this.db.prepare(
        `INSERT OR IGNORE INTO transactions (gid, mode, status, created_at_ms, updated_at_ms, next_attempt_at_ms, version, body, lease_owner, lease_until_ms, history)
         VALUES (@gid, @mode, @status, @createdAtMs, @updatedAtMs, @nextAttemptAtMs, @version, @body, @leaseOwner, @leaseUntilMs, @history)`,
      ),
      update: this.db.prepare(
        `UPDATE transactions SET status = @status, updated_at_ms = @updatedAtMs, next_attempt_at_ms = @nextAttemptAtMs,
           version = @version, body = @body, lease_owner = @leaseOwner, lease_until_ms = @leaseUntilMs
         WHERE gid = @gid AND version = @expectedVersion`,
      ),
      // Appends a JSON array of entries to the stored one by splicing text: no JSON parsing.
      updateWithHistory: this.db.prepare(
        `UPDATE transactions SET status = @status, updated_at_ms = @updatedAtMs, next_attempt_at_ms = @nextAttemptAtMs,
           version = @version, body = @body, lease_owner = @leaseOwner, lease_until_ms = @leaseUntilMs,
           history = CASE WHEN history = '[]' THEN @history ELSE substr(history, 1, length(history) - 1) || ',' || substr(@history, 2) END
         WHERE gid = @gid AND version = @expectedVersion`,
      ),
      claim: this.db.prepare(
        `UPDATE transactions SET lease_owner = @owner, lease_until_ms = @untilMs, version = version + 1
         WHERE gid = @gid AND (lease_until_ms IS NULL OR lease_until_ms <= @nowMs OR lease_owner = @owner)
         RETURNING body, version, lease_owner, lease_until_ms`,
      ),
      heartbeat: this.db.prepare(
        'INSERT INTO instances (id, last_beat_ms) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET last_beat_ms = excluded.last_beat_ms',
      ),
      live: this.db.prepare('SELECT id FROM instances WHERE last_beat_ms >= ? ORDER BY id'),
      removeInstance: this.db.prepare('DELETE FROM instances WHERE id = ?'),

      get: this.db.prepare('SELECT body, version, lease_owner, lease_until_ms FROM transactions WHERE gid = ?'),
      historyOf: this.db.prepare('SELECT history FROM transactions WHERE gid = ?'),
      // The transaction's row holds its branches and history: one DELETE removes it whole.
      purge: this.db.prepare(
        `DELETE FROM transactions WHERE gid IN (
           SELECT gid FROM transactions WHERE status IN ('succeeded', 'failed') AND updated_at_ms < @finishedBeforeMs
             AND (lease_until_ms IS NULL OR lease_until_ms <= @nowMs)
           ORDER BY updated_at_ms LIMIT @limit)`,
      ),
      due: this.db.prepare(
        `SELECT gid FROM transactions WHERE next_attempt_at_ms IS NOT NULL AND next_attempt_at_ms <= @nowMs
           AND (lease_until_ms IS NULL OR lease_until_ms <= @nowMs OR lease_owner = @owner) ORDER BY next_attempt_at_ms LIMIT @limit`,
      ),
    };
  }

  insert(tx: Tx, history: HistoryEntry[]): Promise<boolean> {
    return this.enqueue(() => this.write('insert', tx, -1, history), tx.gid);
  }

  update(tx: Tx, expectedVersion: number, history: HistoryEntry[]): Promise<boolean> {
    return this.enqueue(() => this.write('update', tx, expectedVersion, history), tx.gid);
  }

  claim(gid: string, owner: string, nowMs: number, untilMs: number): Promise<Tx | null> {
    return this.enqueue(() => {
      const row = this.statements.claim.get({ gid, owner, nowMs, untilMs }) as TxRow | undefined;
      return row ? fromRow(row) : null;
    }, gid);
  }

  async get(gid: string): Promise<Tx | null> {
    if (this.wal) await this.wal.durable(gid);
    const row = this.statements.get.get(gid) as TxRow | undefined;
    return row ? fromRow(row) : null;
  }

  async heartbeat(instanceId: string, nowMs: number): Promise<void> {
    // Through the queue, so it shares a group commit instead of paying an fsync of its own.
    await this.enqueue(() => this.statements.heartbeat.run(instanceId, nowMs));
  }

  async liveInstances(sinceMs: number): Promise<string[]> {
    return (this.statements.live.all(sinceMs) as Array<{ id: string }>).map((row) => row.id);
  }

  async removeInstance(instanceId: string): Promise<void> {
    this.statements.removeInstance.run(instanceId);
  }

  async history(gid: string): Promise<HistoryEntry[]> {
    if (this.wal) await this.wal.durable(gid);
    const row = this.statements.historyOf.get(gid) as { history: string } | undefined;
    if (!row) return [];
    const entries = JSON.parse(row.history) as Array<HistoryEntry & { reason?: string | null }>;
    return entries.map(({ reason, ...entry }) => (reason ? { ...entry, reason } : entry));
  }

  async countUnfinished(): Promise<UnfinishedCounts> {
    if (this.wal) await this.wal.all();
    // Each count reads only its status's partial index.
    const count = (status: string) => (this.db.prepare(`SELECT count(*) AS n FROM transactions WHERE status = '${status}'`).get() as { n: number }).n;
    return { prepared: count('prepared'), submitted: count('submitted'), aborting: count('aborting') };
  }

  async list(query: ListQuery): Promise<ListPage> {
    if (this.wal) await this.wal.all();
    const where: string[] = [];
    const params: Array<string | number> = [];
    if (query.status && unfinishedStatuses.has(query.status)) {
      // A literal from a fixed set (never caller text): SQLite uses a partial index only when
      // a term of the query matches its WHERE, which a bound parameter cannot.
      where.push(`status = '${query.status}'`);
    } else if (query.status) {
      where.push('status = ?');
      params.push(query.status);
    }
    if (query.mode) {
      where.push('mode = ?');
      params.push(query.mode);
    }
    const after = query.cursor ? decodeCursor(query.cursor) : null;
    if (after) {
      where.push('(created_at_ms < ? OR (created_at_ms = ? AND gid < ?))');
      params.push(after[0], after[0], after[1]);
    }
    const sql = `SELECT body FROM transactions ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
                 ORDER BY created_at_ms DESC, gid DESC LIMIT ?`;
    const rows = this.db.prepare(sql).all(...params, query.limit + 1) as Array<{ body: string }>;
    const items = rows.slice(0, query.limit).map((row) => summarize(JSON.parse(row.body) as Tx));
    const last = items[items.length - 1];
    return { items, nextCursor: rows.length > query.limit && last ? encodeCursor(last.createdAtMs, last.gid) : null };
  }

  async due(nowMs: number, limit: number, owner: string): Promise<string[]> {
    return (this.statements.due.all({ nowMs, limit, owner }) as Array<{ gid: string }>).map((row) => row.gid);
  }

  purgeFinished(request: PurgeRequest): Promise<number> {
    // Through the queue: the delete shares a group commit and is ordered with the writes.
    return this.enqueue(() => this.statements.purge.run(request).changes);
  }

  /** One process owns an embedded store, so its clock is the only one that matters. */
  async clockMs(): Promise<number> {
    return Date.now();
  }

  onCommit(observer: (observation: CommitObservation) => void): void {
    this.observers.push(observer);
  }

  async close(): Promise<void> {
    if (this.queue.length > 0) this.flush();
    try {
      // The writes of the final flush are durable before this returns.
      await this.wal?.close();
    } finally {
      this.db.close();
    }
  }

  private enqueue<T>(apply: () => T, key?: string): Promise<T> {
    if (this.wal?.failed) return Promise.reject(this.wal.failed);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ apply, key, resolve: resolve as (value: unknown) => void, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** One SQLite transaction (one fsync) for every write queued since the last flush. */
  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    const startedMs = performance.now();
    let outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }>;
    try {
      outcomes = this.db.transaction(() => batch.map((write) => ({ ok: true as const, value: write.apply() })))();
    } catch (error) {
      const failure = asUnavailable(error);
      if (failure instanceof StoreUnavailableError || batch.length === 1) {
        for (const write of batch) write.reject(failure);
        return;
      }
      // SQLite refused one write and rolled the whole commit back. That write alone must fail,
      // not the others with it (nor every later commit it would be retried into): one
      // transaction each this time, which only costs a slower commit when it happens.
      outcomes = batch.map((write) => {
        try {
          return { ok: true as const, value: this.db.transaction(write.apply)() };
        } catch (single) {
          return { ok: false as const, error: asUnavailable(single) };
        }
      });
    }
    const settle = () => {
      const observation = { batchSize: batch.length, durationMs: performance.now() - startedMs };
      batch.forEach((write, index) => {
        const outcome = outcomes[index]!;
        if (outcome.ok) write.resolve(outcome.value);
        else write.reject(outcome.error);
      });
      for (const observer of this.observers) observer(observation);
    };
    if (this.wal === null) return settle();
    const keys = batch.flatMap((write) => (write.key === undefined ? [] : [write.key]));
    this.wal.committed(keys).then(settle, (failure: unknown) => {
      for (const write of batch) write.reject(failure);
    });
  }

  private write(kind: 'insert' | 'update', unsafeTx: Tx, expectedVersion: number, unsafeHistory: HistoryEntry[]): boolean {
    const { tx, history } = storableWrite(unsafeTx, unsafeHistory);
    const row = {
      gid: tx.gid,
      mode: tx.mode,
      status: tx.status,
      createdAtMs: tx.createdAtMs,
      updatedAtMs: tx.updatedAtMs,
      nextAttemptAtMs: tx.nextAttemptAtMs,
      version: tx.version,
      body: JSON.stringify(tx),
      leaseOwner: tx.lease?.owner ?? null,
      leaseUntilMs: tx.lease?.untilMs ?? null,
      history: JSON.stringify(history),
    };
    if (kind === 'insert') return this.statements.insert.run(row).changes > 0;
    const statement = history.length > 0 ? this.statements.updateWithHistory : this.statements.update;
    return statement.run({ ...row, expectedVersion }).changes > 0;
  }
}

/** Disk full, I/O errors, a lock held too long by another process: the store is down (503), the request was fine. */
function asUnavailable(error: unknown): unknown {
  const code = error && typeof error === 'object' ? (error as { code?: unknown }).code : undefined;
  if (typeof code === 'string' && /^SQLITE_(BUSY|LOCKED|FULL|IOERR|CANTOPEN|READONLY|PROTOCOL|NOMEM)/.test(code)) {
    return new StoreUnavailableError(`SQLite: ${(error as Error).message} (${code})`, { cause: error });
  }
  return error;
}

/** The columns are the truth for version and lease; the body may hold older copies of them. */
function fromRow(row: TxRow): Tx {
  const tx = JSON.parse(row.body) as Tx;
  tx.version = row.version;
  tx.lease = row.lease_owner === null || row.lease_until_ms === null ? null : { owner: row.lease_owner, untilMs: row.lease_until_ms };
  return tx;
}

function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  for (let version = current; version < migrations.length; version++) {
    db.transaction(() => {
      db.exec(migrations[version]);
      db.pragma(`user_version = ${version + 1}`);
    })();
  }
}
