// Where leases, sessions and the fencing counter live between restarts. The SQLite store uses
// its own connection to the coordinator's database file (WAL mode; its own tables, so it never
// touches the transaction store's schema version) and group-commits like that store does:
// every write asked for in one turn of the event loop shares one SQLite transaction and one
// fsync, and a write's promise resolves only after that commit.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { SqliteSync } from '../store/sqlite.js';
import { BadStoreUrlError } from '../store/store.js';
import type { Lease, LockMode, Session, Snapshot } from './manager.js';

export type LockWrite =
  | { type: 'putLease'; lease: Lease }
  | { type: 'deleteLease'; leaseId: string }
  | { type: 'putSession'; session: Session }
  | { type: 'deleteSession'; sessionId: string };

export interface LockStore {
  /** What the store holds; also ends the fail-stop state a failed write began. */
  load(): Promise<Snapshot>;
  /**
   * Applies the writes in order, atomically with whatever else shares the commit; durable when
   * it resolves. Fail-stop: once a write fails, every later write fails without being applied
   * until `load()` is called, because the shell computed those writes from a state that
   * included the failed ones (a grant that follows a failed release would hold the lock twice).
   */
  write(writes: LockWrite[]): Promise<void>;
  /** Resolves once every write asked for so far is durable. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

const schema = `
  CREATE TABLE IF NOT EXISTS lock_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS lock_leases (
    lease_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    mode TEXT NOT NULL,
    permits INTEGER NOT NULL,
    token INTEGER NOT NULL,
    owner TEXT NOT NULL,
    session_id TEXT,
    ttl_ms INTEGER,
    granted_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS lock_sessions (
    session_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    ttl_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
  ) WITHOUT ROWID;
  INSERT OR IGNORE INTO lock_counters (name, value) VALUES ('fencing', 0);
`;

interface LeaseRow {
  lease_id: string;
  name: string;
  mode: LockMode;
  permits: number;
  token: number;
  owner: string;
  session_id: string | null;
  ttl_ms: number | null;
  granted_at_ms: number;
  expires_at_ms: number | null;
}

interface PendingBatch {
  writes: LockWrite[];
  done: Promise<void>;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export class SqliteLockStore implements LockStore {
  private readonly db: Database.Database;
  private readonly statements;
  private pending: PendingBatch | null = null;
  private lastCommit: Promise<void> = Promise.resolve();
  private failure: unknown = null;

  constructor(filePath: string, options: { sync: SqliteSync }) {
    if (filePath !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(filePath)), { recursive: true });
    this.db = new Database(filePath);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.sync === 'full' ? 'FULL' : 'NORMAL'}`);
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(schema);
    this.statements = {
      putLease: this.db.prepare(
        `INSERT OR REPLACE INTO lock_leases (lease_id, name, mode, permits, token, owner, session_id, ttl_ms, granted_at_ms, expires_at_ms)
         VALUES (@leaseId, @name, @mode, @permits, @token, @owner, @sessionId, @ttlMs, @grantedAtMs, @expiresAtMs)`,
      ),
      // The counter only moves up, in the same commit as the grant that used the token.
      raiseFencing: this.db.prepare(`UPDATE lock_counters SET value = MAX(value, ?) WHERE name = 'fencing'`),
      deleteLease: this.db.prepare('DELETE FROM lock_leases WHERE lease_id = ?'),
      putSession: this.db.prepare(
        `INSERT OR REPLACE INTO lock_sessions (session_id, owner, ttl_ms, expires_at_ms) VALUES (@sessionId, @owner, @ttlMs, @expiresAtMs)`,
      ),
      deleteSession: this.db.prepare('DELETE FROM lock_sessions WHERE session_id = ?'),
      leases: this.db.prepare('SELECT * FROM lock_leases'),
      sessions: this.db.prepare('SELECT * FROM lock_sessions'),
      fencing: this.db.prepare(`SELECT value FROM lock_counters WHERE name = 'fencing'`),
    };
  }

  async load(): Promise<Snapshot> {
    this.failure = null;
    const leases = (this.statements.leases.all() as LeaseRow[]).map(
      (row): Lease => ({
        leaseId: row.lease_id,
        name: row.name,
        mode: row.mode,
        permits: row.permits,
        token: row.token,
        owner: row.owner,
        sessionId: row.session_id,
        ttlMs: row.ttl_ms,
        grantedAtMs: row.granted_at_ms,
        expiresAtMs: row.expires_at_ms,
      }),
    );
    const sessions = (this.statements.sessions.all() as Array<{ session_id: string; owner: string; ttl_ms: number; expires_at_ms: number }>).map(
      (row): Session => ({ sessionId: row.session_id, owner: row.owner, ttlMs: row.ttl_ms, expiresAtMs: row.expires_at_ms }),
    );
    const lastToken = (this.statements.fencing.get() as { value: number }).value;
    return { leases, sessions, lastToken };
  }

  write(writes: LockWrite[]): Promise<void> {
    if (!this.pending) {
      let resolve!: () => void;
      let reject!: (error: unknown) => void;
      const done = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      // Commits are never unhandled: the caller awaits `done` or `settled()`.
      done.catch(() => undefined);
      const batch: PendingBatch = { writes: [], done, resolve, reject };
      this.pending = batch;
      this.lastCommit = done;
      setImmediate(() => this.flush(batch));
    }
    this.pending.writes.push(...writes);
    return this.pending.done;
  }

  settled(): Promise<void> {
    return this.lastCommit;
  }

  async close(): Promise<void> {
    if (this.pending) this.flush(this.pending);
    this.db.close();
  }

  private flush(batch: PendingBatch): void {
    if (this.pending !== batch) return;
    this.pending = null;
    if (this.failure !== null) {
      batch.reject(this.failure);
      return;
    }
    try {
      this.db.transaction(() => {
        for (const write of batch.writes) this.apply(write);
      })();
    } catch (error) {
      this.failure = error;
      batch.reject(error);
      return;
    }
    batch.resolve();
  }

  private apply(write: LockWrite): void {
    switch (write.type) {
      case 'putLease':
        this.statements.putLease.run(write.lease);
        this.statements.raiseFencing.run(write.lease.token);
        break;
      case 'deleteLease':
        this.statements.deleteLease.run(write.leaseId);
        break;
      case 'putSession':
        this.statements.putSession.run(write.session);
        break;
      case 'deleteSession':
        this.statements.deleteSession.run(write.sessionId);
        break;
    }
  }
}

/** The lock store beside the coordinator's store: the same SQLite file, its own tables. */
export function openLockStore(storeUrl: string, options: { sqliteSync: SqliteSync }): LockStore {
  return new SqliteLockStore(sqlitePathOf(storeUrl), { sync: options.sqliteSync });
}

export function sqlitePathOf(storeUrl: string): string {
  if (!storeUrl.startsWith('sqlite:')) throw new BadStoreUrlError(`locks and the key-value store need a sqlite: store URL, got "${storeUrl}"`);
  const filePath = storeUrl.slice('sqlite:'.length).replace(/^\/\//, '');
  if (filePath.length === 0) throw new BadStoreUrlError(`store URL "${storeUrl}" has no file path`);
  return filePath;
}
