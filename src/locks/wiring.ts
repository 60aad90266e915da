// How `tandem serve` gets its lock service and key-value store: both keep their tables in the
// coordinator's SQLite file, on connections of their own. Other store backends have no lock
// tables yet, so there the lock and key-value routes stay off rather than keep state in a
// file that another coordinator instance would not see.
import type { Limits } from '../config.js';
import { openKvStore, type SqliteKvStore } from '../kv/store.js';
import type { SqliteSync } from '../store/sqlite.js';
import { LockService } from './service.js';
import { openLockStore } from './store.js';

export interface LockAndKv {
  locks: LockService;
  kv: SqliteKvStore;
  /** Answers queued acquires with 503 (so the HTTP server can drain), then closes both stores. */
  close(): Promise<void>;
}

export interface LockAndKvOptions {
  sqliteSync: SqliteSync;
  limits: Limits;
  onError: (error: unknown, context: string) => void;
  onDisabled: (reason: string) => void;
}

export async function openLockAndKv(storeUrl: string, options: LockAndKvOptions): Promise<LockAndKv | null> {
  if (!storeUrl.startsWith('sqlite:')) {
    options.onDisabled('locks and the key-value store need a sqlite: store for now; /v1/locks, /v1/sessions and /v1/kv are off');
    return null;
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
