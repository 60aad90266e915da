// An outbox relay in a process of its own, so that a test can SIGKILL it mid-batch.
// Configured by environment (all required unless noted):
//   OUTBOX_DB            postgres | mysql | sqlite
//   OUTBOX_DB_URL        postgres://…, mysql://…, or a SQLite file path
//   OUTBOX_TABLE         outbox table name
//   OUTBOX_BROKER        rabbitmq | jetstream
//   OUTBOX_BROKER_URL    amqp://… or nats://…
//   OUTBOX_BATCH_SIZE    optional, default 25
//   OUTBOX_PUBLISH_TIMEOUT_MS  optional, default 60 000 (a held batch stays in flight that long)
//   OUTBOX_CLAIM_TTL_MS  optional, SQLite only: claim lifetime (more than twice the publish timeout)
//   OUTBOX_HOLD_AFTER    optional: after this many broker confirms, every later publish is
//                        held forever (its confirm is swallowed) and the child prints `held`.
//                        The batch in flight then has rows the broker has but the table does
//                        not mark: the state a crash mid-batch leaves behind.
// Prints `ready` once connected, `batch <claimed> <published> <failed>` per batch, `held`.
// SIGTERM stops the relay after its batch in flight and exits 0.
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { JetStreamPublisher } from '../../src/messaging/jetstream.js';
import { OutboxRelay, MysqlOutbox, PostgresOutbox, SqliteOutbox, type OutboxStore } from '../../src/messaging/outbox/index.js';
import { RabbitPublisher } from '../../src/messaging/rabbitmq.js';
import type { OutgoingMessage, Publisher } from '../../src/messaging/types.js';

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`outbox-relay-child: ${name} is not set`);
  return value;
}

/** Lets `holdAfter` publishes through, then holds every later one (confirmed or not) forever. */
function holdingPublisher(inner: Publisher, holdAfter: number): Publisher {
  let confirmed = 0;
  let held = false;
  const never = new Promise<void>(() => undefined);
  return {
    broker: inner.broker,
    async publish(message: OutgoingMessage): Promise<void> {
      if (held) return never;
      await inner.publish(message);
      confirmed += 1;
      if (confirmed <= holdAfter) return;
      if (!held) {
        held = true;
        process.stdout.write('held\n');
      }
      return never;
    },
    close: () => inner.close(),
  };
}

async function openStore(): Promise<{ store: OutboxStore; close(): Promise<void> }> {
  const kind = env('OUTBOX_DB');
  const url = env('OUTBOX_DB_URL');
  const tableName = env('OUTBOX_TABLE');
  if (kind === 'postgres') {
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    return { store: new PostgresOutbox(pool, { tableName }), close: () => pool.end() };
  }
  if (kind === 'mysql') {
    const pool = mysql.createPool({ uri: url, connectionLimit: 2 });
    return { store: new MysqlOutbox(pool, { tableName }), close: () => pool.end() };
  }
  if (kind === 'sqlite') {
    const db = new Database(url);
    db.pragma('journal_mode = WAL');
    const claimTtlMs = process.env.OUTBOX_CLAIM_TTL_MS === undefined ? undefined : Number(process.env.OUTBOX_CLAIM_TTL_MS);
    return { store: new SqliteOutbox(db, { tableName, claimTtlMs }), close: async () => void db.close() };
  }
  throw new Error(`outbox-relay-child: unknown OUTBOX_DB ${kind}`);
}

async function openPublisher(): Promise<Publisher> {
  const broker = env('OUTBOX_BROKER');
  const url = env('OUTBOX_BROKER_URL');
  if (broker === 'rabbitmq') return RabbitPublisher.connect(url);
  if (broker === 'jetstream') return JetStreamPublisher.connect(url);
  throw new Error(`outbox-relay-child: unknown OUTBOX_BROKER ${broker}`);
}

async function main(): Promise<void> {
  const { store, close } = await openStore();
  const real = await openPublisher();
  const holdAfter = process.env.OUTBOX_HOLD_AFTER;
  const publisher = holdAfter === undefined ? real : holdingPublisher(real, Number(holdAfter));
  const relay = new OutboxRelay({
    store,
    publishers: publisher,
    batchSize: Number(process.env.OUTBOX_BATCH_SIZE ?? 25),
    pollIntervalMs: 50,
    // Long enough that a held batch is still in flight when the test kills the process.
    publishTimeoutMs: Number(process.env.OUTBOX_PUBLISH_TIMEOUT_MS ?? 60_000),
    retryIntervalMs: 100,
    retryIntervalMsMax: 1000,
    onBatch: (result) => process.stdout.write(`batch ${result.claimed} ${result.published} ${result.failed}\n`),
    onError: (error) => process.stderr.write(`relay error: ${error instanceof Error ? error.stack : String(error)}\n`),
  });
  process.once('SIGTERM', () => {
    void (async () => {
      await relay.stop();
      await real.close();
      await close();
      process.stdout.write('stopped\n');
      process.exit(0);
    })();
  });
  relay.start();
  process.stdout.write('ready\n');
}

main().catch((error: unknown) => {
  process.stderr.write(`outbox-relay-child failed: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
