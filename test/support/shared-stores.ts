// Shared-store fixtures for tests that run several coordinator processes: a PostgreSQL schema
// and a Redis key prefix of the test's own, dropped when the test file ends.
import { after } from 'node:test';
import pg from 'pg';
import { Redis } from 'ioredis';
import { services } from './services.js';

export interface SharedStoreBackend {
  name: 'postgres' | 'redis';
  service: 'postgres' | 'redis';
  /** The store URL a coordinator is started with (the schema is created on first use). */
  url(): Promise<string>;
}

/** Both shared stores, namespaced by `pgSchema` and `redisPrefix`; cleaned up after the file. */
export function sharedStoreBackends(pgSchema: string, redisPrefix: string): SharedStoreBackend[] {
  after(() => dropSharedStores(pgSchema, redisPrefix));
  const postgresUrl = async (): Promise<string> => {
    const client = new pg.Client({ connectionString: services.postgres.url });
    await client.connect();
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${pgSchema}`);
    await client.end();
    return `${services.postgres.url}?options=${encodeURIComponent(`-c search_path=${pgSchema}`)}`;
  };
  return [
    { name: 'postgres', service: 'postgres', url: postgresUrl },
    { name: 'redis', service: 'redis', url: async () => `${services.redis.url}/0?prefix=${encodeURIComponent(redisPrefix)}` },
  ];
}

/** Drops the schema and the prefix's keys; a store that is down is skipped. */
export async function dropSharedStores(pgSchema: string | null, redisPrefix: string): Promise<void> {
  if (pgSchema !== null) {
    const client = new pg.Client({ connectionString: services.postgres.url });
    await client.connect().then(
      async () => {
        await client.query(`DROP SCHEMA IF EXISTS ${pgSchema} CASCADE`);
        await client.end();
      },
      () => undefined,
    );
  }
  const redis = new Redis(services.redis.url, { lazyConnect: true });
  await redis.connect().then(
    async () => {
      const keys = await redis.keys(`${redisPrefix}*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    },
    () => undefined,
  );
}
