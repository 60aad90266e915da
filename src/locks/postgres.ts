// Locks on PostgreSQL, shared by every coordinator on the database. One row per lock name holds
// its record (leases, queue, last fencing token) as JSON. A change takes that row's lock first
// (an upsert, so the first use of a name needs no separate insert), reads the store's clock in
// the same statement, decides, writes and commits: changes to one name are serialised by the
// row lock, changes to different names run side by side, and every decision sees the latest
// committed record. Times are clock_timestamp() in ms: the database's clock, never ours.
//
// Waiting coordinators hear of changes through LISTEN/NOTIFY: the notification is sent by the
// committing transaction (so it is never seen before the change is durable), on a channel
// named after the schema in use (channels are database-wide, schemas are not).
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Session } from './manager.js';
import { coordinatorsOf, emptyRecord, sessionIdsOf, type Decision, type LockRecord, type RecordView } from './shared-state.js';
import type { SharedLockBackend } from './shared-service.js';

export interface PostgresLocksOptions {
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  poolSizeMax: number;
}

/** The database's clock in whole ms, read once per statement. */
const nowMs = `floor(extract(epoch from clock_timestamp()) * 1000)::bigint`;
/** Coordinators gone this long are deleted from the heartbeat table. */
const deadCoordinatorRetentionMs = 60_000;
/** Longest pause between attempts to re-open the LISTEN connection. */
const listenRetryMsMax = 2000;

const tables = {
  records: 'tandem_lock_records',
  sessions: 'tandem_lock_sessions',
  sessionNames: 'tandem_lock_session_names',
  coordinators: 'tandem_lock_coordinators',
};

interface SessionRow {
  session_id: string;
  owner: string;
  ttl_ms: string;
  expires_at_ms: string;
}

const sessionOf = (row: SessionRow): Session => ({ sessionId: row.session_id, owner: row.owner, ttlMs: Number(row.ttl_ms), expiresAtMs: Number(row.expires_at_ms) });

export class PostgresLockBackend implements SharedLockBackend {
  readonly kind = 'postgres';
  private listener: pg.Client | null = null;
  /** The LISTEN connection's server process, which stands for this coordinator's liveness. */
  private listenerBackend: { pid: number; startedAt: string } | null = null;
  private identity: { coordinatorId: string; livenessMs: number } | null = null;
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly url: string,
    private readonly channel: string,
    private readonly options: PostgresLocksOptions,
  ) {}

  static async open(url: string, options: PostgresLocksOptions): Promise<PostgresLockBackend> {
    const pool = new pg.Pool({ connectionString: url, max: options.poolSizeMax, connectionTimeoutMillis: options.connectTimeoutMs, query_timeout: options.commandTimeoutMs });
    pool.on('error', () => undefined);
    try {
      const schema = await migrate(pool);
      const channel = `tandem_locks_${createHash('sha256').update(schema).digest('hex').slice(0, 16)}`;
      return new PostgresLockBackend(pool, url, channel, options);
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw error;
    }
  }

  async change(name: string, extraSessionIds: string[], decide: (view: RecordView) => Decision): Promise<{ view: RecordView; decision: Decision }> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      // The upsert takes the row lock whether or not the row existed, and returns it.
      const locked = await client.query<{ record: string; now_ms: string }>(
        `INSERT INTO ${tables.records} (name, record) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING record, ${nowMs} AS now_ms`,
        [name, JSON.stringify(emptyRecord())],
      );
      const record = JSON.parse(locked.rows[0].record) as LockRecord;
      const view = await this.complete(client, record, Number(locked.rows[0].now_ms), extraSessionIds, true);
      const decision = decide(view);
      await this.write(client, name, view, decision);
      await client.query('COMMIT');
      // Expired sessions are garbage: a row past its deadline counts as ended anyway. Deleting
      // them after the commit keeps two changes that both saw one expire from deadlocking on
      // each other's key-share locks.
      if (decision.sessionEnds.length > 0) {
        await client
          .query(
            `WITH ended AS (DELETE FROM ${tables.sessions} WHERE session_id = ANY($1::text[]) AND expires_at_ms <= ${nowMs} RETURNING session_id)
             DELETE FROM ${tables.sessionNames} WHERE session_id IN (SELECT session_id FROM ended)`,
            [decision.sessionEnds],
          )
          .catch(() => undefined);
      }
      return { view, decision };
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async read(name: string, extraSessionIds: string[]): Promise<RecordView> {
    const client = await this.pool.connect();
    try {
      const found = await client.query<{ record: string | null; now_ms: string }>(`SELECT (SELECT record FROM ${tables.records} WHERE name = $1) AS record, ${nowMs} AS now_ms`, [name]);
      const row = found.rows[0];
      const record = row.record === null ? emptyRecord() : (JSON.parse(row.record) as LockRecord);
      return await this.complete(client, record, Number(row.now_ms), extraSessionIds);
    } finally {
      client.release();
    }
  }

  /**
   * Adds the sessions and coordinator liveness a record depends on; queries only what it names.
   * Within a change the session rows are key-share-locked, so a session cannot be closed
   * between this read and the commit of a lease bound to it (the close waits, then finds the
   * lease), while keepalives and extensions (which do not touch the key) go on.
   */
  private async complete(client: pg.PoolClient, record: LockRecord, now: number, extraSessionIds: string[], lockSessions = false): Promise<RecordView> {
    const sessionIds = sessionIdsOf(record, extraSessionIds);
    const coordinatorIds = coordinatorsOf(record);
    const sessions = new Map<string, Session>();
    if (sessionIds.length > 0) {
      const rows = await client.query<SessionRow>(`SELECT session_id, owner, ttl_ms, expires_at_ms FROM ${tables.sessions} WHERE session_id = ANY($1::text[]) ORDER BY session_id${lockSessions ? ' FOR KEY SHARE' : ''}`,
        [sessionIds],
      );
      for (const row of rows.rows) sessions.set(row.session_id, sessionOf(row));
    }
    const liveCoordinators = new Set<string>();
    if (coordinatorIds.length > 0) {
      // Live: heartbeat not lapsed, and its LISTEN connection's server process still there.
      const rows = await client.query<{ id: string }>(
        `SELECT c.id FROM ${tables.coordinators} c WHERE c.id = ANY($1::text[]) AND c.expires_at_ms > $2
           AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.listener_pid AND (a.backend_start IS NULL OR a.backend_start = c.listener_started_at))`,
        [coordinatorIds, now],
      );
      for (const row of rows.rows) liveCoordinators.add(row.id);
    }
    return { record, sessions, nowMs: now, liveCoordinators };
  }

  private async write(client: pg.PoolClient, name: string, view: RecordView, decision: Decision): Promise<void> {
    if (decision.changed) {
      if (decision.notify) {
        await client.query(`WITH updated AS (UPDATE ${tables.records} SET record = $2 WHERE name = $1 RETURNING name) SELECT pg_notify($3, name) FROM updated`, [
          name,
          JSON.stringify(decision.record),
          this.channel,
        ]);
      } else {
        await client.query(`UPDATE ${tables.records} SET record = $2 WHERE name = $1`, [name, JSON.stringify(decision.record)]);
      }
    }
    for (const session of decision.sessionExtends) {
      // Only a live session is extended, and only ever later: a concurrent keepalive may have gone further.
      await client.query(`UPDATE ${tables.sessions} SET expires_at_ms = GREATEST(expires_at_ms, $2) WHERE session_id = $1 AND expires_at_ms > $3`, [
        session.sessionId,
        session.expiresAtMs,
        view.nowMs,
      ]);
    }
    const known = new Set(sessionIdsOf(view.record));
    const added = decision.sessionIds.filter((id) => !known.has(id));
    if (added.length > 0) {
      await client.query(`INSERT INTO ${tables.sessionNames} (session_id, name) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING`, [added, name]);
    }
  }

  async openSession(sessionId: string, owner: string, ttlMs: number, sessionsMax: number): Promise<{ session: Session; nowMs: number } | null> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      // Opens serialise on one advisory lock so that two coordinators cannot both take the last place.
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [tables.sessions]);
      const now = Number((await client.query<{ now_ms: string }>(`SELECT ${nowMs} AS now_ms`)).rows[0].now_ms);
      const existing = await client.query<SessionRow>(`SELECT session_id, owner, ttl_ms, expires_at_ms FROM ${tables.sessions} WHERE session_id = $1 AND expires_at_ms > $2`, [sessionId, now]);
      if (existing.rows.length > 0) {
        await client.query('COMMIT');
        return { session: sessionOf(existing.rows[0]), nowMs: now };
      }
      const expired = await client.query<{ session_id: string }>(`DELETE FROM ${tables.sessions} WHERE expires_at_ms <= $1 RETURNING session_id`, [now]);
      if (expired.rows.length > 0) await client.query(`DELETE FROM ${tables.sessionNames} WHERE session_id = ANY($1::text[])`, [expired.rows.map((row) => row.session_id)]);
      const count = Number((await client.query<{ count: string }>(`SELECT count(*) AS count FROM ${tables.sessions}`)).rows[0].count);
      if (count >= sessionsMax) {
        await client.query('ROLLBACK');
        return null;
      }
      const session: Session = { sessionId, owner, ttlMs, expiresAtMs: now + ttlMs };
      await client.query(`INSERT INTO ${tables.sessions} (session_id, owner, ttl_ms, expires_at_ms) VALUES ($1, $2, $3, $4)`, [sessionId, owner, ttlMs, session.expiresAtMs]);
      await client.query('COMMIT');
      return { session, nowMs: now };
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async keepalive(sessionId: string): Promise<{ session: Session; nowMs: number } | null> {
    const result = await this.pool.query<SessionRow & { now_ms: string }>(
      `WITH clock AS (SELECT ${nowMs} AS now_ms)
       UPDATE ${tables.sessions} s SET expires_at_ms = clock.now_ms + s.ttl_ms FROM clock
       WHERE s.session_id = $1 AND s.expires_at_ms > clock.now_ms
       RETURNING s.session_id, s.owner, s.ttl_ms, s.expires_at_ms, clock.now_ms`,
      [sessionId],
    );
    const row = result.rows[0];
    return row ? { session: sessionOf(row), nowMs: Number(row.now_ms) } : null;
  }

  async closeSession(sessionId: string): Promise<string[] | null> {
    const deleted = await this.pool.query<{ session_id: string }>(
      `WITH clock AS (SELECT ${nowMs} AS now_ms)
       DELETE FROM ${tables.sessions} s USING clock WHERE s.session_id = $1 AND s.expires_at_ms > clock.now_ms RETURNING s.session_id`,
      [sessionId],
    );
    const names = await this.pool.query<{ name: string }>(`DELETE FROM ${tables.sessionNames} WHERE session_id = $1 RETURNING name`, [sessionId]);
    return deleted.rows.length > 0 ? names.rows.map((row) => row.name) : null;
  }

  async heartbeat(coordinatorId: string, livenessMs: number): Promise<void> {
    this.identity = { coordinatorId, livenessMs };
    const backend = this.listenerBackend;
    if (!backend) throw new Error('the lock LISTEN connection is not open');
    await this.pool.query(
      `INSERT INTO ${tables.coordinators} (id, expires_at_ms, listener_pid, listener_started_at) VALUES ($1, ${nowMs} + $2, $3, $4)
       ON CONFLICT (id) DO UPDATE SET expires_at_ms = EXCLUDED.expires_at_ms, listener_pid = EXCLUDED.listener_pid, listener_started_at = EXCLUDED.listener_started_at`,
      [coordinatorId, livenessMs, backend.pid, backend.startedAt],
    );
    await this.pool.query(`DELETE FROM ${tables.coordinators} WHERE expires_at_ms < ${nowMs} - $1`, [deadCoordinatorRetentionMs]);
  }

  async leave(coordinatorId: string): Promise<void> {
    await this.pool.query(`DELETE FROM ${tables.coordinators} WHERE id = $1`, [coordinatorId]);
  }

  async listen(_coordinatorId: string, onChange: (name: string) => void, onGap: () => void): Promise<void> {
    await this.connectListener(onChange, onGap);
  }

  private async connectListener(onChange: (name: string) => void, onGap: () => void): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: this.options.connectTimeoutMs });
    client.on('notification', (message) => {
      if (message.channel === this.channel && message.payload !== undefined) onChange(message.payload);
    });
    let reopened = false;
    const reopen = () => {
      if (reopened || this.closed) return;
      reopened = true;
      this.listener = null;
      void client.end().catch(() => undefined);
      void this.reconnect(onChange, onGap);
    };
    client.on('error', reopen);
    client.on('end', reopen);
    await client.connect();
    await client.query(`LISTEN ${this.channel}`);
    const self = await client.query<{ pid: number; started_at: string }>('SELECT pid, backend_start::text AS started_at FROM pg_stat_activity WHERE pid = pg_backend_pid()');
    this.listenerBackend = { pid: self.rows[0].pid, startedAt: self.rows[0].started_at };
    this.listener = client;
  }

  /** Until closed: re-open the LISTEN connection, then re-check every wait (notifications were missed). */
  private async reconnect(onChange: (name: string) => void, onGap: () => void): Promise<void> {
    for (let attempt = 1; !this.closed; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(100 * attempt, listenRetryMsMax)).unref());
      if (this.closed) return;
      try {
        await this.connectListener(onChange, onGap);
        // Record the new connection at once: until then the store sees this coordinator as dead.
        if (this.identity) await this.heartbeat(this.identity.coordinatorId, this.identity.livenessMs).catch(() => undefined);
        onGap();
        return;
      } catch {
        // The re-check timers still bound every wait meanwhile; try again.
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.listener?.end().catch(() => undefined);
    await this.pool.end();
  }
}

/** Creates the tables (under an advisory lock: coordinators start together); answers the schema in use. */
async function migrate(pool: pg.Pool): Promise<string> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [tables.records]);
    await client.query(`CREATE TABLE IF NOT EXISTS ${tables.records} (name TEXT PRIMARY KEY, record TEXT NOT NULL)`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${tables.sessions} (session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, ttl_ms BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL)`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${tables.sessionNames} (session_id TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (session_id, name))`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${tables.coordinators} (id TEXT PRIMARY KEY, expires_at_ms BIGINT NOT NULL, listener_pid INT NOT NULL, listener_started_at TIMESTAMPTZ NOT NULL)`,
    );
    const schema = await client.query<{ schema: string }>('SELECT current_schema() AS schema');
    await client.query('COMMIT');
    return schema.rows[0].schema;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
