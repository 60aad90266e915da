// Service registrations on PostgreSQL: one row per instance, expiring on the database's clock.
// Registrations serialise on an advisory lock so that the servicesMax and
// instancesPerServiceMax checks and the write are one atomic step across coordinators.
import pg from 'pg';
import type { Registration } from './registry.js';
import type { RegisterResult, RegistryLimitsShared, RegistryStore, StoredRegistration } from './shared.js';

export interface PostgresRegistryOptions {
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

const table = 'tandem_registry';
const nowMs = `floor(extract(epoch from clock_timestamp()) * 1000)::bigint`;

interface Row {
  service: string;
  instance_id: string;
  url: string;
  weight: number;
  ttl_ms: string;
  remaining_ms: string;
}

const storedOf = (row: Row): StoredRegistration => ({
  service: row.service,
  instanceId: row.instance_id,
  url: row.url,
  weight: row.weight,
  ttlMs: Number(row.ttl_ms),
  ttlRemainingMs: Number(row.remaining_ms),
});

export class PostgresRegistryStore implements RegistryStore {
  private constructor(private readonly pool: pg.Pool) {}

  static async open(url: string, options: PostgresRegistryOptions): Promise<PostgresRegistryStore> {
    const pool = new pg.Pool({ connectionString: url, max: 2, connectionTimeoutMillis: options.connectTimeoutMs, query_timeout: options.commandTimeoutMs });
    pool.on('error', () => undefined);
    const client = await pool.connect().catch(async (error: unknown) => {
      await pool.end().catch(() => undefined);
      throw error;
    });
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [table]);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${table} (service TEXT NOT NULL, instance_id TEXT NOT NULL, url TEXT NOT NULL, weight INT NOT NULL, ttl_ms BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL, PRIMARY KEY (service, instance_id))`,
      );
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      client.release();
      await pool.end().catch(() => undefined);
      throw error;
    }
    client.release();
    return new PostgresRegistryStore(pool);
  }

  async register(input: Omit<Registration, 'expiresAtMs'>, limits: RegistryLimitsShared): Promise<RegisterResult> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [table]);
      const now = Number((await client.query<{ now_ms: string }>(`SELECT ${nowMs} AS now_ms`)).rows[0].now_ms);
      await client.query(`DELETE FROM ${table} WHERE expires_at_ms <= $1`, [now]);
      const counts = await client.query<{ known: boolean; instances: string; services: string; service_known: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM ${table} WHERE service = $1 AND instance_id = $2) AS known,
                (SELECT count(*) FROM ${table} WHERE service = $1) AS instances,
                (SELECT count(DISTINCT service) FROM ${table}) AS services,
                EXISTS (SELECT 1 FROM ${table} WHERE service = $1) AS service_known`,
        [input.service, input.instanceId],
      );
      const count = counts.rows[0];
      if (!count.known && Number(count.instances) >= limits.instancesPerServiceMax) {
        await client.query('ROLLBACK');
        return { ok: false, full: 'instances' };
      }
      if (!count.service_known && Number(count.services) >= limits.servicesMax) {
        await client.query('ROLLBACK');
        return { ok: false, full: 'services' };
      }
      await client.query(
        `INSERT INTO ${table} (service, instance_id, url, weight, ttl_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (service, instance_id) DO UPDATE SET url = EXCLUDED.url, weight = EXCLUDED.weight, ttl_ms = EXCLUDED.ttl_ms, expires_at_ms = EXCLUDED.expires_at_ms`,
        [input.service, input.instanceId, input.url, input.weight, input.ttlMs, now + input.ttlMs],
      );
      await client.query('COMMIT');
      return { ok: true, registration: { ...input, ttlRemainingMs: input.ttlMs } };
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async deregister(service: string, instanceId: string): Promise<boolean> {
    const result = await this.pool.query(`DELETE FROM ${table} WHERE service = $1 AND instance_id = $2 AND expires_at_ms > ${nowMs}`, [service, instanceId]);
    return (result.rowCount ?? 0) > 0;
  }

  async list(): Promise<StoredRegistration[]> {
    const result = await this.pool.query<Row>(
      `WITH clock AS (SELECT ${nowMs} AS now_ms)
       SELECT service, instance_id, url, weight, ttl_ms, expires_at_ms - clock.now_ms AS remaining_ms FROM ${table}, clock
       WHERE expires_at_ms > clock.now_ms ORDER BY service, instance_id`,
    );
    return result.rows.map(storedOf);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
