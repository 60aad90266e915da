// Helpers the broker tests share: unique names, ledgers in a consumer's database, a waiter
// that resolves on consumer events (never on a timer), and a publishing loop that retries.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { PostgresInbox, SqliteInbox, type Inbox } from '../../src/messaging/inbox/index.js';
import { PublishError, type OutgoingMessage, type Publisher } from '../../src/messaging/types.js';
import { services } from './services.js';

/** A safety net for anything awaited: a bug fails the test instead of hanging the run. */
export const awaitedEventMsMax = 60_000;

export function uniqueName(prefix: string): string {
  return `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
}

/** Resolves once `check()` holds, re-checked each time `poke()` is called (on every event). */
export class Waiter {
  private readonly waits: Array<{ check: () => boolean; resolve: () => void }> = [];

  poke(): void {
    for (const wait of [...this.waits]) {
      if (wait.check()) {
        this.waits.splice(this.waits.indexOf(wait), 1);
        wait.resolve();
      }
    }
  }

  until(what: string, check: () => boolean, timeoutMs = awaitedEventMsMax): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waits.splice(this.waits.indexOf(entry), 1);
        reject(new Error(`gave up after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const entry = {
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      this.waits.push(entry);
    });
  }
}

/** A consumer database with an inbox and a ledger table that records every applied effect. */
export interface LedgerFixture<Tx> {
  inbox: Inbox<Tx>;
  /** Appends one ledger row (no unique key, so a double apply would show as two rows). */
  record(tx: Tx, messageId: string): Promise<void>;
  /** message_id → rows. */
  rows(): Promise<Map<string, number>>;
  close(): Promise<void>;
}

export async function sqliteLedger(): Promise<LedgerFixture<Database.Database>> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tandem-inbox-'));
  const db = new Database(path.join(dir, 'consumer.db'));
  db.pragma('journal_mode = WAL');
  const table = uniqueName('ledger');
  const inbox = new SqliteInbox(db, { consumer: 'ledger-service', tableName: uniqueName('tandem_inbox') });
  await inbox.ensureSchema();
  db.exec(`CREATE TABLE ${table} (message_id TEXT NOT NULL)`);
  const insert = db.prepare(`INSERT INTO ${table} (message_id) VALUES (?)`);
  return {
    inbox,
    record: async (tx, messageId) => {
      // The inbox hands back the same connection; prepared statements run inside its transaction.
      if (tx !== db) throw new Error('unexpected transaction handle');
      insert.run(messageId);
    },
    rows: async () => {
      const all = db.prepare(`SELECT message_id, COUNT(*) AS n FROM ${table} GROUP BY message_id`).all() as Array<{ message_id: string; n: number }>;
      return new Map(all.map((row) => [row.message_id, row.n]));
    },
    close: async () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function postgresLedger(): Promise<LedgerFixture<pg.PoolClient>> {
  const pool = new pg.Pool({ connectionString: services.postgres.url, max: 8 });
  const table = uniqueName('ledger');
  const inbox = new PostgresInbox(pool, { consumer: 'ledger-service', tableName: uniqueName('tandem_inbox') });
  await inbox.ensureSchema();
  await pool.query(`CREATE TABLE ${table} (message_id TEXT NOT NULL)`);
  return {
    inbox,
    record: async (tx, messageId) => {
      await tx.query(`INSERT INTO ${table} (message_id) VALUES ($1)`, [messageId]);
    },
    rows: async () => {
      const result = await pool.query<{ message_id: string; n: string }>(`SELECT message_id, COUNT(*) AS n FROM ${table} GROUP BY message_id`);
      return new Map(result.rows.map((row) => [row.message_id, Number(row.n)]));
    },
    close: async () => {
      await pool.query(`DROP TABLE IF EXISTS ${table}`);
      await pool.query(`DROP TABLE IF EXISTS ${inbox.tableName}`);
      await pool.end();
    },
  };
}

export type PublishLoopResult = { attempts: number; failures: number };

/**
 * Publishes every message, `concurrency` at a time, retrying a PublishError with the same
 * messageId up to `attemptsMax` times each (what the coordinator and the outbox relay do).
 * `onConfirmed` and `onFailure` let a test cut and heal the connection at chosen points.
 */
export async function publishAll(
  publisher: Publisher,
  messages: OutgoingMessage[],
  options: { concurrency: number; attemptsMax: number; onConfirmed?: (confirmed: number) => void; onFailure?: (error: PublishError) => void },
): Promise<PublishLoopResult> {
  let next = 0;
  let confirmed = 0;
  const result: PublishLoopResult = { attempts: 0, failures: 0 };
  const worker = async () => {
    while (next < messages.length) {
      const message = messages[next];
      next += 1;
      for (let attempt = 1; ; attempt += 1) {
        result.attempts += 1;
        try {
          await publisher.publish(message);
          break;
        } catch (error) {
          if (!(error instanceof PublishError) || error.permanent || attempt >= options.attemptsMax) throw error;
          result.failures += 1;
          options.onFailure?.(error);
        }
      }
      confirmed += 1;
      options.onConfirmed?.(confirmed);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return result;
}
