// Turns a store URL into a store: sqlite:PATH, postgres://…, redis://…
import { BadStoreUrlError, type Store } from './store.js';
import { PostgresStore } from './postgres.js';
import { RedisStore } from './redis.js';
import { SqliteStore, type SqliteSync } from './sqlite.js';

export interface OpenStoreOptions {
  sqliteSync: SqliteSync;
  /** Connections to PostgreSQL. */
  postgresPoolSizeMax: number;
  /** Group commits to PostgreSQL in flight at once; fewer in flight means bigger batches. */
  postgresFlushesInFlightMax: number;
  /** Time to reach a PostgreSQL or Redis server before the store counts as unavailable. */
  storeConnectTimeoutMs: number;
  /** Longest one query or command may take before the store counts as unavailable. */
  storeCommandTimeoutMs: number;
}

export const storeUrlForms = 'sqlite:PATH, postgres://USER@HOST:PORT/DB or redis://HOST:PORT[/DB][?prefix=tandem:]';

export async function openStore(url: string, options: OpenStoreOptions): Promise<Store> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  switch (scheme) {
    case 'sqlite':
      return new SqliteStore(sqlitePath(url), { sync: options.sqliteSync });
    case 'postgres':
    case 'postgresql':
      checkUrl(url);
      return PostgresStore.open(url, {
        poolSizeMax: options.postgresPoolSizeMax,
        flushesInFlightMax: options.postgresFlushesInFlightMax,
        connectTimeoutMs: options.storeConnectTimeoutMs,
        commandTimeoutMs: options.storeCommandTimeoutMs,
      });
    case 'redis':
    case 'rediss':
      checkUrl(url);
      return RedisStore.open(url, { connectTimeoutMs: options.storeConnectTimeoutMs, commandTimeoutMs: options.storeCommandTimeoutMs, listScanMax: 10_000 });
    default:
      throw new BadStoreUrlError(`store URL "${url}" is not understood; expected ${storeUrlForms}`);
  }
}

function sqlitePath(url: string): string {
  const filePath = url.slice('sqlite:'.length).replace(/^\/\//, '');
  if (filePath.length === 0) throw new BadStoreUrlError(`store URL "${url}" has no file path; write sqlite:./.tandem/tandem.db`);
  return filePath;
}

function checkUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new BadStoreUrlError(`store URL "${url}" is not a valid URL; expected ${storeUrlForms}`);
  }
  if (!parsed.hostname) throw new BadStoreUrlError(`store URL "${url}" names no host; expected ${storeUrlForms}`);
}
