// The versioned key-value store on SQLite: its own connection to the coordinator's database
// file, its own tables. Writes are group-committed (one SQLite transaction and one fsync for
// every write asked for in the same turn of the event loop); each write's version check runs
// inside that transaction, so checks and writes are atomic, and a write's promise resolves
// only once it is durable.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { SqliteSync } from '../store/sqlite.js';
import { sqlitePathOf } from '../locks/store.js';
import { decide, prefixEnd, type KvEntry, type KvOutcome, type KvWrite } from './kv.js';

export interface KvListQuery {
  prefix: string;
  /** Keys strictly after this one (the previous page's last key). */
  after: string | null;
  limit: number;
}

export interface KvPage {
  items: KvEntry[];
  /** The last key of this page when more follow. */
  nextCursor: string | null;
}

/**
 * The contract every key-value backend keeps (SQLite, PostgreSQL, Redis), checked by one suite
 * (test/kv-store-contract.test.ts): every write takes the next revision of one counter over the
 * whole store and that revision becomes the key's version, so versions never repeat, even for a
 * key deleted and created again; `expectedVersion` 0 means "must not exist", null "anything";
 * the version check and the write are one atomic step; a write resolves once it is durable by
 * the backend's standard; keys list in code point (UTF-8 byte) order.
 */
export interface KvStore {
  get(key: string): Promise<KvEntry | null>;
  list(query: KvListQuery): Promise<KvPage>;
  write(write: KvWrite): Promise<KvOutcome>;
  close(): Promise<void>;
}

interface PendingWrite {
  write: KvWrite;
  resolve: (outcome: KvOutcome) => void;
  reject: (error: unknown) => void;
}

const schema = `
  CREATE TABLE IF NOT EXISTS kv_entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS kv_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
  INSERT OR IGNORE INTO kv_counters (name, value) VALUES ('revision', 0);
  INSERT OR IGNORE INTO kv_counters (name, value) SELECT 'keys', COUNT(*) FROM kv_entries;
`;

export class SqliteKvStore implements KvStore {
  private readonly db: Database.Database;
  private readonly statements;
  private queue: PendingWrite[] = [];
  private flushScheduled = false;

  constructor(
    filePath: string,
    private readonly options: { sync: SqliteSync; keysMax: number },
  ) {
    if (filePath !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(filePath)), { recursive: true });
    this.db = new Database(filePath);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.sync === 'full' ? 'FULL' : 'NORMAL'}`);
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(schema);
    this.statements = {
      get: this.db.prepare('SELECT key, value, version FROM kv_entries WHERE key = ?'),
      versionOf: this.db.prepare('SELECT version FROM kv_entries WHERE key = ?').pluck(),
      upsert: this.db.prepare('INSERT OR REPLACE INTO kv_entries (key, value, version) VALUES (?, ?, ?)'),
      remove: this.db.prepare('DELETE FROM kv_entries WHERE key = ?'),
      setCounter: this.db.prepare('UPDATE kv_counters SET value = ? WHERE name = ?'),
      counter: this.db.prepare('SELECT value FROM kv_counters WHERE name = ?').pluck(),
      rangeBounded: this.db.prepare('SELECT key, value, version FROM kv_entries WHERE key >= ? AND key < ? AND key > ? ORDER BY key LIMIT ?'),
      rangeOpen: this.db.prepare('SELECT key, value, version FROM kv_entries WHERE key >= ? AND key > ? ORDER BY key LIMIT ?'),
    };
  }

  async get(key: string): Promise<KvEntry | null> {
    const row = this.statements.get.get(key) as { key: string; value: string; version: number } | undefined;
    return row ? { key: row.key, valueJson: row.value, version: row.version } : null;
  }

  async list(query: KvListQuery): Promise<KvPage> {
    const end = prefixEnd(query.prefix);
    // '' sorts before every key, so "after nothing" needs no second statement.
    const after = query.after ?? '';
    const rows = (
      end === null
        ? this.statements.rangeOpen.all(query.prefix, after, query.limit + 1)
        : this.statements.rangeBounded.all(query.prefix, end, after, query.limit + 1)
    ) as Array<{ key: string; value: string; version: number }>;
    const items = rows.slice(0, query.limit).map((row) => ({ key: row.key, valueJson: row.value, version: row.version }));
    return { items, nextCursor: rows.length > query.limit ? items[items.length - 1].key : null };
  }

  write(write: KvWrite): Promise<KvOutcome> {
    return new Promise<KvOutcome>((resolve, reject) => {
      this.queue.push({ write, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  async close(): Promise<void> {
    if (this.queue.length > 0) this.flush();
    this.db.close();
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    let outcomes: KvOutcome[];
    try {
      // The counters are read inside the transaction, never cached: another connection to the
      // file (a second store instance) may have written since. IMMEDIATE takes the write lock
      // before the reads, so two writers cannot both read the same revision.
      outcomes = this.db.transaction(() => {
        let revision = this.statements.counter.get('revision') as number;
        let keyCount = this.statements.counter.get('keys') as number;
        const results = batch.map(({ write }) => {
          const current = (this.statements.versionOf.get(write.key) as number | undefined) ?? null;
          const decision = decide(current, write, { nextRevision: revision + 1, keyCount, keysMax: this.options.keysMax });
          if (decision.apply === 'upsert') {
            revision += 1;
            if (current === null) keyCount += 1;
            this.statements.upsert.run(decision.entry.key, decision.entry.valueJson, decision.entry.version);
          } else if (decision.apply === 'remove') {
            keyCount -= 1;
            this.statements.remove.run(decision.key);
          }
          return decision.outcome;
        });
        this.statements.setCounter.run(revision, 'revision');
        this.statements.setCounter.run(keyCount, 'keys');
        return results;
      }).immediate();
    } catch (error) {
      for (const pending of batch) pending.reject(error);
      return;
    }
    batch.forEach((pending, index) => pending.resolve(outcomes[index]));
  }
}

/** The key-value store beside the coordinator's store: the same SQLite file, its own tables. */
export function openKvStore(storeUrl: string, options: { sqliteSync: SqliteSync; keysMax: number }): SqliteKvStore {
  return new SqliteKvStore(sqlitePathOf(storeUrl), { sync: options.sqliteSync, keysMax: options.keysMax });
}
