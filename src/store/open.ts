// Turns a store URL into a store. `sqlite:PATH` now; postgres:// and redis:// come later.
import { BadStoreUrlError, type Store } from './store.js';
import { SqliteStore, type SqliteSync } from './sqlite.js';

export interface OpenStoreOptions {
  sqliteSync: SqliteSync;
}

export async function openStore(url: string, options: OpenStoreOptions): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    const filePath = url.slice('sqlite:'.length).replace(/^\/\//, '');
    if (filePath.length === 0) throw new BadStoreUrlError(`store URL "${url}" has no file path; write sqlite:./.tandem/tandem.db`);
    return new SqliteStore(filePath, { sync: options.sqliteSync });
  }
  const scheme = url.split(':')[0];
  if (scheme === 'postgres' || scheme === 'postgresql' || scheme === 'redis') {
    throw new BadStoreUrlError(`store URL scheme "${scheme}:" is not supported yet; this build supports sqlite:PATH`);
  }
  throw new BadStoreUrlError(`store URL "${url}" is not understood; expected sqlite:PATH`);
}
