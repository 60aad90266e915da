// How `tandem serve` gets its lock service and key-value store. On SQLite both keep their
// tables in the coordinator's file, on connections of their own. On PostgreSQL and Redis the
// key-value store lives in the shared store (every coordinator sees the same keys and
// versions); the lock routes stay off there until the shared lock backends are wired, rather
// than keep lock state that another coordinator would not see.
import type { Limits } from '../config.js';
import { openKvStore, type KvStore } from '../kv/store.js';
import { PostgresKvStore } from '../store/postgres-kv.js';
import { RedisKvStore } from '../store/redis-kv.js';
import type { SqliteSync } from '../store/sqlite.js';
import { LockService } from './service.js';
import { openLockStore } from './store.js';

export interface LockAndKv {
  /** Null where the store has no shared lock backend yet. */
  locks: LockService | null;
  kv: KvStore;
  /** Answers queued acquires with 503 (so the HTTP server can drain), then closes both stores. */
  close(): Promise<void>;
}

export interface LockAndKvOptions {
  sqliteSync: SqliteSync;
  limits: Limits;
  onError: (error: unknown, context: string) => void;
  onDisabled: (reason: string) => void;
  storeConnectTimeoutMs: number;
  storeCommandTimeoutMs: number;
}

/** PostgreSQL connections the key-value store keeps; its commits are serialised on one row anyway. */
export const kvPostgresPoolSizeMax = 4;
/** Key-value writes that share one PostgreSQL commit at most. */
export const kvWritesPerCommitMax = 500;

export async function openLockAndKv(storeUrl: string, options: LockAndKvOptions): Promise<LockAndKv | null> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(storeUrl)?.[1]?.toLowerCase();
  if (scheme === 'postgres' || scheme === 'postgresql' || scheme === 'redis' || scheme === 'rediss') {
    const kv = await openSharedKv(storeUrl, scheme.startsWith('postgres') ? 'postgres' : 'redis', options);
    options.onDisabled('locks need a sqlite: store for now; /v1/locks and /v1/sessions are off (the key-value store is shared through the store)');
    return { locks: null, kv, close: () => kv.close() };
  }
  const locks = await LockService.open({ store: openLockStore(storeUrl, { sqliteSync: options.sqliteSync }), limits: options.limits, onError: options.onError });
  const kv = openKvStore(storeUrl, { sqliteSync: options.sqliteSync, keysMax: options.limits.kvKeysMax });
  return {
    locks,
    kv,
    async close() {
      await locks.close();
      await kv.close();
    },
  };
}

function openSharedKv(storeUrl: string, kind: 'postgres' | 'redis', options: LockAndKvOptions): Promise<KvStore> {
  const timeouts = { connectTimeoutMs: options.storeConnectTimeoutMs, commandTimeoutMs: options.storeCommandTimeoutMs };
  if (kind === 'redis') return RedisKvStore.open(storeUrl, { keysMax: options.limits.kvKeysMax, ...timeouts });
  return PostgresKvStore.open(storeUrl, {
    keysMax: options.limits.kvKeysMax,
    tablePrefix: 'tandem_',
    writesPerCommitMax: kvWritesPerCommitMax,
    poolSizeMax: kvPostgresPoolSizeMax,
    ...timeouts,
  });
}
