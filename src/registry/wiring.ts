// How `tandem serve` shares its service registry: through the store on PostgreSQL and Redis,
// in the coordinator's memory alone on SQLite (one coordinator per file).
import type { Limits } from '../config.js';
import { PostgresRegistryStore } from './postgres.js';
import { RedisRegistryStore } from './redis.js';
import type { ServiceRegistry } from './registry.js';
import { SharedRegistry } from './shared.js';

export async function openSharedRegistry(
  storeUrl: string,
  local: ServiceRegistry,
  limits: Limits,
  onError: (error: unknown, context: string) => void,
): Promise<SharedRegistry | null> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(storeUrl)?.[1]?.toLowerCase();
  const timeouts = { connectTimeoutMs: limits.storeConnectTimeoutMs, commandTimeoutMs: limits.storeCommandTimeoutMs };
  let store;
  if (scheme === 'postgres' || scheme === 'postgresql') store = await PostgresRegistryStore.open(storeUrl, timeouts);
  else if (scheme === 'redis' || scheme === 'rediss') store = await RedisRegistryStore.open(storeUrl, timeouts);
  else return null;
  return SharedRegistry.open({ store, local, limits, onError });
}
