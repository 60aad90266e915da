// How `tandem serve` gets its lock service and key-value store. On SQLite both keep their
// tables in the coordinator's file, on connections of their own. On PostgreSQL and Redis both
// live in the shared store: every coordinator sees the same keys and versions, and the same
// locks (the store is the truth; see shared-service.ts).
import type { Limits } from '../config.js';
import { openKvStore, type KvStore } from '../kv/store.js';
import { PostgresKvStore } from '../store/postgres-kv.js';
import { RedisKvStore } from '../store/redis-kv.js';
import type { SqliteSync } from '../store/sqlite.js';
import { PostgresLockBackend } from './postgres.js';
import { RedisLockBackend } from './redis.js';
import { LockService, type Locks } from './service.js';
import { SharedLockService, type SharedLockBackend } from './shared-service.js';
import { openLockStore } from './store.js';

export interface LockAndKv {
  locks: Locks;
  kv: KvStore;
  /** Answers queued acquires with 503 (so the HTTP server can drain), then closes both stores. */
  close(): Promise<void>;
}

export interface LockAndKvOptions {
  sqliteSync: SqliteSync;
  limits: Limits;
  onError: (error: unknown, context: string) => void;
  storeConnectTimeoutMs: number;
  storeCommandTimeoutMs: number;
}

/** PostgreSQL connections the key-value store keeps; its commits are serialised on one row anyway. */
export const kvPostgresPoolSizeMax = 4;
/** Key-value writes that share one PostgreSQL commit at most. */
export const kvWritesPerCommitMax = 500;

/** PostgreSQL connections the lock service keeps: changes to different lock names run side by side. */
export const locksPostgresPoolSizeMax = 8;

export async function openLockAndKv(storeUrl: string, options: LockAndKvOptions): Promise<LockAndKv | null> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(storeUrl)?.[1]?.toLowerCase();
  if (scheme === 'postgres' || scheme === 'postgresql' || scheme === 'redis' || scheme === 'rediss') {
    const kind = scheme.startsWith('postgres') ? 'postgres' : 'redis';
    const kv = await openSharedKv(storeUrl, kind, options);
    let locks: SharedLockService;
    try {
      locks = await SharedLockService.open({ backend: await openSharedLocks(storeUrl, kind, options), limits: options.limits, onError: options.onError });
    } catch (error) {
      await kv.close().catch(() => undefined);
      throw error;
    }
    return {
      locks,
      kv,
      async close() {
        await locks.close();
        await kv.close();
      },
    };
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

function openSharedLocks(storeUrl: string, kind: 'postgres' | 'redis', options: LockAndKvOptions): Promise<SharedLockBackend> {
  const timeouts = { connectTimeoutMs: options.storeConnectTimeoutMs, commandTimeoutMs: options.storeCommandTimeoutMs };
  if (kind === 'redis') return RedisLockBackend.open(storeUrl, { ...timeouts, casAttemptsMax: options.limits.lockCasAttemptsMax });
  return PostgresLockBackend.open(storeUrl, { ...timeouts, poolSizeMax: locksPostgresPoolSizeMax });
}
