// The transactional outbox against real PostgreSQL, MariaDB, SQLite, RabbitMQ and JetStream:
// add() commits and rolls back with the business change; the relay marks a row only after the
// broker confirmed it; several relays on one table never publish a row twice in the normal
// path; a relay killed mid-batch (a real process, SIGKILL) or cut off from its broker loses
// nothing, and the consumer's inbox applies every message's effect exactly once.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import amqp from 'amqplib';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { consumeJetStream, consumeRabbit, type ConsumeEvent, type ConsumerHandle } from '../src/messaging/consumers.js';
import { PostgresInbox } from '../src/messaging/inbox/postgres.js';
import { JetStreamPublisher, deleteStream, ensureStream } from '../src/messaging/jetstream.js';
import {
  MysqlOutbox,
  OutboxInputError,
  OutboxRelay,
  PostgresOutbox,
  SqliteOutbox,
  outboxBodyBytesMax,
  type BatchResult,
  type OutboxAdded,
  type OutboxMessage,
  type OutboxStore,
} from '../src/messaging/outbox/index.js';
import { RabbitPublisher, declareRabbitTopology, deleteRabbitTopology, type RabbitTopology } from '../src/messaging/rabbitmq.js';
import { PublishError, type OutgoingMessage, type Publisher } from '../src/messaging/types.js';
import { requireService, services, type ServiceName } from './support/services.js';
import { TcpProxy } from './support/tcp-proxy.js';

const testTimeoutMs = 90_000;
const childPath = fileURLToPath(new URL('./support/outbox-relay-child.js', import.meta.url));

function uniqueName(prefix: string): string {
  return `${prefix}_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
}

/** Cleanups run last-in first-out (children before the consumer, the consumer before its tables). */
function cleanupStack(t: TestContext): (cleanup: () => Promise<unknown> | unknown) => void {
  const stack: Array<() => Promise<unknown> | unknown> = [];
  t.after(async () => {
    for (let cleanup = stack.pop(); cleanup; cleanup = stack.pop()) {
      try {
        await cleanup();
      } catch (error) {
        console.error('outbox test cleanup failed:', error);
      }
    }
  });
  return (cleanup) => void stack.push(cleanup);
}

/** Resolves waiters whose condition has become true; call `changed()` after every update. */
class Progress {
  private waiters: Array<{ check: () => boolean; resolve: () => void }> = [];
  changed(): void {
    this.waiters = this.waiters.filter((waiter) => {
      if (!waiter.check()) return true;
      waiter.resolve();
      return false;
    });
  }
  until(check: () => boolean): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ check, resolve }));
  }
}

/** Wraps a real publisher and counts broker confirms per message id. */
class CountingPublisher implements Publisher {
  readonly broker;
  readonly confirms = new Map<string, number>();
  confirmed = 0;
  readonly progress = new Progress();
  /** Runs after each confirm, before the relay hears of it. */
  afterConfirm: (message: OutgoingMessage) => Promise<void> | void = () => undefined;

  constructor(private readonly inner: Publisher) {
    this.broker = inner.broker;
  }

  async publish(message: OutgoingMessage): Promise<void> {
    await this.inner.publish(message);
    this.confirms.set(message.messageId, (this.confirms.get(message.messageId) ?? 0) + 1);
    this.confirmed += 1;
    this.progress.changed();
    await this.afterConfirm(message);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The three backends, behind one shape the tests share

interface OutboxRowState {
  id: string;
  messageId: string;
  published: boolean;
  attempts: number;
  lastError: string | null;
}

interface OpenedBackend {
  store: OutboxStore;
  /** What a relay child process opens: a database URL, or the SQLite file. */
  childUrl: string;
  /** Runs `fn` in a local transaction that also inserts one business row, then commits or rolls back. */
  transaction(fn: (add: (message: OutboxMessage) => Promise<OutboxAdded>) => Promise<void>, end: 'commit' | 'rollback'): Promise<void>;
  rows(): Promise<OutboxRowState[]>;
  businessRows(): Promise<number>;
  /** Moves every published_at a day into the past, to test retention without waiting. */
  backdatePublished(): Promise<void>;
  close(): Promise<void>;
}

interface Backend {
  name: string;
  service: ServiceName | undefined;
  open(tableName: string): Promise<OpenedBackend>;
}

function rowState(row: { id: unknown; message_id: unknown; published: unknown; attempts: unknown; last_error: unknown }): OutboxRowState {
  return {
    id: String(row.id),
    messageId: Buffer.isBuffer(row.message_id) ? row.message_id.toString() : String(row.message_id),
    published: Number(row.published) === 1 || row.published === true,
    attempts: Number(row.attempts),
    lastError: row.last_error === null ? null : String(row.last_error),
  };
}

const rowsSql = (table: string) =>
  `SELECT id, message_id, CASE WHEN published_at IS NULL THEN 0 ELSE 1 END AS published, attempts, last_error FROM ${table} ORDER BY id`;

const postgresBackend: Backend = {
  name: 'PostgreSQL',
  service: 'postgres',
  async open(tableName) {
    const pool = new pg.Pool({ connectionString: services.postgres.url, max: 4 });
    const outbox = new PostgresOutbox(pool, { tableName });
    await outbox.ensureSchema();
    await pool.query(`CREATE TABLE ${tableName}_orders (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)`);
    return {
      store: outbox,
      childUrl: services.postgres.url,
      async transaction(fn, end) {
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          await client.query(`INSERT INTO ${tableName}_orders (note) VALUES ('order')`);
          await fn((message) => outbox.add(client, message));
          await client.query(end === 'commit' ? 'COMMIT' : 'ROLLBACK');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw error;
        } finally {
          client.release();
        }
      },
      async rows() {
        return (await pool.query(rowsSql(tableName))).rows.map(rowState);
      },
      async businessRows() {
        return Number((await pool.query(`SELECT count(*) AS n FROM ${tableName}_orders`)).rows[0].n);
      },
      async backdatePublished() {
        await pool.query(`UPDATE ${tableName} SET published_at = published_at - interval '1 day' WHERE published_at IS NOT NULL`);
      },
      async close() {
        await pool.query(`DROP TABLE IF EXISTS ${tableName}, ${tableName}_orders`);
        await pool.end();
      },
    };
  },
};

const mariadbBackend: Backend = {
  name: 'MariaDB',
  service: 'mariadb',
  async open(tableName) {
    const pool = mysql.createPool({ uri: services.mariadb.url, connectionLimit: 4 });
    const outbox = new MysqlOutbox(pool, { tableName });
    await outbox.ensureSchema();
    await pool.query(`CREATE TABLE ${tableName}_orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, note TEXT NOT NULL) ENGINE = InnoDB`);
    return {
      store: outbox,
      childUrl: services.mariadb.url,
      async transaction(fn, end) {
        const connection = await pool.getConnection();
        try {
          await connection.beginTransaction();
          await connection.query(`INSERT INTO ${tableName}_orders (note) VALUES ('order')`);
          await fn((message) => outbox.add(connection, message));
          if (end === 'commit') await connection.commit();
          else await connection.rollback();
        } catch (error) {
          await connection.rollback().catch(() => undefined);
          throw error;
        } finally {
          connection.release();
        }
      },
      async rows() {
        const [rows] = await pool.query<mysql.RowDataPacket[]>(rowsSql(tableName));
        return rows.map((row) => rowState(row as Parameters<typeof rowState>[0]));
      },
      async businessRows() {
        const [rows] = await pool.query<mysql.RowDataPacket[]>(`SELECT count(*) AS n FROM ${tableName}_orders`);
        return Number(rows[0].n);
      },
      async backdatePublished() {
        await pool.query(`UPDATE ${tableName} SET published_at = published_at - INTERVAL 1 DAY WHERE published_at IS NOT NULL`);
      },
      async close() {
        await pool.query(`DROP TABLE IF EXISTS ${tableName}, ${tableName}_orders`);
        await pool.end();
      },
    };
  },
};

const sqliteBackend: Backend = {
  name: 'SQLite',
  service: undefined,
  async open(tableName) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-outbox-'));
    const file = path.join(dir, 'app.db');
    // The application writes on its connection; the relay has its own on the same file.
    const appDb = new Database(file);
    appDb.pragma('journal_mode = WAL');
    const relayDb = new Database(file);
    const outbox = new SqliteOutbox(relayDb, { tableName });
    outbox.ensureSchema();
    appDb.exec(`CREATE TABLE ${tableName}_orders (id INTEGER PRIMARY KEY, note TEXT NOT NULL)`);
    return {
      store: outbox,
      childUrl: file,
      async transaction(fn, end) {
        appDb.exec('BEGIN IMMEDIATE');
        try {
          appDb.prepare(`INSERT INTO ${tableName}_orders (note) VALUES ('order')`).run();
          await fn(async (message) => outbox.add(appDb, message));
          appDb.exec(end === 'commit' ? 'COMMIT' : 'ROLLBACK');
        } catch (error) {
          if (appDb.inTransaction) appDb.exec('ROLLBACK');
          throw error;
        }
      },
      async rows() {
        return (appDb.prepare(rowsSql(tableName)).all() as Parameters<typeof rowState>[0][]).map(rowState);
      },
      async businessRows() {
        return Number((appDb.prepare(`SELECT count(*) AS n FROM ${tableName}_orders`).get() as { n: number }).n);
      },
      async backdatePublished() {
        appDb.exec(`UPDATE ${tableName} SET published_at = strftime('%Y-%m-%dT%H:%M:%fZ', published_at, '-1 day') WHERE published_at IS NOT NULL`);
      },
      async close() {
        appDb.close();
        relayDb.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

// ---------------------------------------------------------------------------------------------
// Broker fixtures

interface RabbitFixture {
  connection: amqp.ChannelModel;
  topology: RabbitTopology;
  target: string;
  close(): Promise<void>;
}

async function rabbitFixture(): Promise<RabbitFixture> {
  const connection = await amqp.connect(services.rabbitmq.url);
  const name = uniqueName('outbox');
  const topology = await declareRabbitTopology(connection, { exchange: `${name}.x`, queue: `${name}.q`, routingKey: 'events', queueType: 'classic' });
  return {
    connection,
    topology,
    target: `rabbitmq:${topology.exchange}/events`,
    async close() {
      await deleteRabbitTopology(connection, topology).catch(() => undefined);
      await connection.close().catch(() => undefined);
    },
  };
}

/** Counts messages in the queue now (they are confirmed, so they are there). */
async function queueDepth(fixture: RabbitFixture): Promise<number> {
  const channel = await fixture.connection.createChannel();
  try {
    return (await channel.checkQueue(fixture.topology.queue)).messageCount;
  } finally {
    await channel.close();
  }
}

/** A consumer with an inbox in PostgreSQL whose effect is one row per applied message. */
interface LedgerConsumer {
  applied: Set<string>;
  counts: { applied: number; duplicate: number };
  progress: Progress;
  /** Effect rows per message id, straight from the consumer's database. */
  effects(): Promise<Map<string, number>>;
  close(): Promise<void>;
}

async function ledgerConsumer(start: (options: {
  inbox: PostgresInbox;
  handler: (message: { messageId: string }, tx: pg.PoolClient) => Promise<void>;
  onEvent: (event: ConsumeEvent) => void;
  log: (line: string) => void;
}) => Promise<ConsumerHandle>): Promise<LedgerConsumer> {
  const pool = new pg.Pool({ connectionString: services.postgres.url, max: 6 });
  const name = uniqueName('outbox_ledger');
  const inbox = new PostgresInbox(pool, { consumer: 'outbox-test', tableName: `${name}_inbox` });
  await inbox.ensureSchema();
  await pool.query(`CREATE TABLE ${name}_effects (message_id TEXT NOT NULL)`);
  const applied = new Set<string>();
  const counts = { applied: 0, duplicate: 0 };
  const progress = new Progress();
  const handle = await start({
    inbox,
    handler: async (message, tx) => {
      // Deliberately no unique key here: a second application would show as a second row.
      await tx.query(`INSERT INTO ${name}_effects (message_id) VALUES ($1)`, [message.messageId]);
    },
    onEvent: (event) => {
      if (event.outcome === 'applied' && event.messageId) applied.add(event.messageId);
      if (event.outcome === 'applied') counts.applied += 1;
      if (event.outcome === 'duplicate') counts.duplicate += 1;
      progress.changed();
    },
    log: (line) => console.error(line),
  });
  return {
    applied,
    counts,
    progress,
    async effects() {
      const result = await pool.query<{ message_id: string; n: string }>(`SELECT message_id, count(*) AS n FROM ${name}_effects GROUP BY message_id`);
      return new Map(result.rows.map((row) => [row.message_id, Number(row.n)]));
    },
    async close() {
      await handle.close();
      await pool.query(`DROP TABLE IF EXISTS ${name}_inbox, ${name}_effects`);
      await pool.end();
    },
  };
}

function assertExactlyOnce(effects: Map<string, number>, messageIds: string[]): void {
  assert.equal(effects.size, messageIds.length, 'every message has an effect');
  for (const id of messageIds) assert.equal(effects.get(id), 1, `message ${id} applied exactly once`);
}

/** Adds `count` messages in transactions of `perTransaction`; returns their message ids in order. */
async function addMessages(backend: OpenedBackend, target: string, count: number, perTransaction = 50): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < count; start += perTransaction) {
    await backend.transaction(async (add) => {
      for (let i = start; i < Math.min(start + perTransaction, count); i += 1) {
        ids.push((await add({ target, body: `event ${i}`, headers: { seq: String(i) } })).messageId);
      }
    }, 'commit');
  }
  return ids;
}

// ---------------------------------------------------------------------------------------------
// 1. add() and one relay batch, on each backend

for (const backend of [postgresBackend, mariadbBackend, sqliteBackend]) {
  describe(`outbox on ${backend.name}`, { timeout: testTimeoutMs }, () => {
    async function setUp(t: TestContext): Promise<{ db: OpenedBackend; rabbit: RabbitFixture; publisher: CountingPublisher } | undefined> {
      if (!(await requireService(t, 'rabbitmq'))) return undefined;
      if (backend.service && !(await requireService(t, backend.service))) return undefined;
      const db = await backend.open(uniqueName('outbox'));
      const rabbit = await rabbitFixture();
      const publisher = new CountingPublisher(await RabbitPublisher.connect(services.rabbitmq.url));
      t.after(async () => {
        await publisher.close();
        await rabbit.close();
        await db.close();
      });
      return { db, rabbit, publisher };
    }

    test('a rolled-back add publishes nothing; a committed one is published once and marked after its confirm', async (t) => {
      const setup = await setUp(t);
      if (!setup) return;
      const { db, rabbit, publisher } = setup;
      const relay = new OutboxRelay({ store: db.store, publishers: publisher });

      await db.transaction(async (add) => void (await add({ target: rabbit.target, body: 'rolled back' })), 'rollback');
      assert.deepEqual(await db.rows(), []);
      assert.equal(await db.businessRows(), 0);
      assert.deepEqual(await relay.runOnce(), { claimed: 0, published: 0, failed: 0 });

      let added: OutboxAdded | undefined;
      await db.transaction(async (add) => {
        added = await add({ target: rabbit.target, body: Buffer.from('hello'), headers: { 'tandem-order': '42' } });
      }, 'commit');
      assert.ok(added);
      assert.equal(await db.businessRows(), 1);
      let unmarkedAtConfirm: boolean | undefined;
      publisher.afterConfirm = async () => {
        unmarkedAtConfirm = (await db.rows()).every((row) => !row.published);
      };
      assert.deepEqual(await relay.runOnce(), { claimed: 1, published: 1, failed: 0 });
      assert.equal(unmarkedAtConfirm, true, 'the row was not yet marked when the broker confirmed');
      assert.deepEqual(await db.rows(), [{ id: added.id, messageId: added.messageId, published: true, attempts: 1, lastError: null }]);
      assert.deepEqual(await relay.runOnce(), { claimed: 0, published: 0, failed: 0 }, 'nothing left to publish');
      assert.deepEqual([...publisher.confirms], [[added.messageId, 1]]);

      const channel = await rabbit.connection.createChannel();
      t.after(() => channel.close().catch(() => undefined));
      const message = await channel.get(rabbit.topology.queue, { noAck: true });
      assert.ok(message, 'the message is in the queue');
      assert.equal(message.properties.messageId, added.messageId);
      assert.equal(message.content.toString(), 'hello');
      assert.equal(String(message.properties.headers?.['tandem-order']), '42');
      assert.equal(await channel.get(rabbit.topology.queue, { noAck: true }), false, 'exactly one message');
    });

    test('bad input is refused with the field named and nothing written', async (t) => {
      const setup = await setUp(t);
      if (!setup) return;
      const { db, rabbit } = setup;
      const refusals: Array<[OutboxMessage, string]> = [
        [{ target: 'kafka:orders', body: 'x' }, 'target'],
        [{ target: 'rabbitmq:no-slash', body: 'x' }, 'target'],
        [{ target: 'jetstream:orders.*', body: 'x' }, 'target'],
        [{ target: rabbit.target, body: Buffer.alloc(outboxBodyBytesMax + 1) }, 'body'],
        [{ target: rabbit.target, body: 42 as unknown as string }, 'body'],
        [{ target: rabbit.target, body: 'x', headers: { 'bad:name': 'v' } }, 'headers'],
        [{ target: rabbit.target, body: 'x', headers: { 'Nats-Msg-Id': 'mine' } }, 'headers'],
        [{ target: rabbit.target, body: 'x', headers: { ok: 'line\nbreak' } }, 'headers'],
        [{ target: rabbit.target, body: 'x', messageId: '' }, 'messageId'],
        [{ target: rabbit.target, body: 'x', messageId: 'm'.repeat(201) }, 'messageId'],
      ];
      // The business change still commits: the refused add wrote nothing to roll back.
      await db.transaction(async (add) => {
        for (const [message, field] of refusals) {
          await assert.rejects(add(message), (error: unknown) => error instanceof OutboxInputError && error.field === field, `refuses ${field}`);
        }
      }, 'commit');
      assert.equal(await db.businessRows(), 1);
      assert.deepEqual(await db.rows(), []);

      await db.transaction(async (add) => void (await add({ target: rabbit.target, body: 'x', messageId: 'order-1/created' })), 'commit');
      await db.transaction(async (add) => {
        await assert.rejects(
          add({ target: rabbit.target, body: 'again', messageId: 'order-1/created' }),
          (error: unknown) => error instanceof OutboxInputError && error.field === 'messageId',
        );
      }, 'rollback');
      assert.deepEqual((await db.rows()).map((row) => row.messageId), ['order-1/created']);
    });

    test('a failing row backs off without blocking the rows behind it', async (t) => {
      const setup = await setUp(t);
      if (!setup) return;
      const { db, rabbit, publisher } = setup;
      const relay = new OutboxRelay({ store: db.store, publishers: publisher, retryIntervalMs: 60_000 });
      // An exchange that does not exist: the broker refuses the publish.
      const poison = `rabbitmq:${uniqueName('missing')}/events`;
      let ids: string[] = [];
      await db.transaction(async (add) => {
        ids = [(await add({ target: poison, body: 'poison' })).messageId, (await add({ target: rabbit.target, body: 'fine' })).messageId];
      }, 'commit');
      assert.deepEqual(await relay.runOnce(), { claimed: 2, published: 1, failed: 1 });
      const [failed, published] = await db.rows();
      assert.equal(failed.published, false);
      assert.equal(failed.attempts, 1);
      assert.match(failed.lastError ?? '', /PublishError/);
      assert.equal(published.published, true);
      assert.deepEqual(await relay.runOnce(), { claimed: 0, published: 0, failed: 0 }, 'the failed row waits out its backoff');
      assert.deepEqual([...publisher.confirms.keys()], [ids[1]]);

      // Retention cleanup: only published rows older than the retention go.
      assert.equal(await db.store.deletePublished(3_600_000, 100), 0, 'a fresh published row stays');
      await db.backdatePublished();
      assert.equal(await db.store.deletePublished(3_600_000, 100), 1);
      assert.deepEqual((await db.rows()).map((row) => row.messageId), [ids[0]], 'the unpublished row stays');
    });
  });
}

test('SQLite: a relay without a publisher for the broker records the failure', async (t) => {
  const db = await sqliteBackend.open(uniqueName('outbox'));
  t.after(() => db.close());
  const rejecting: Publisher = {
    broker: 'rabbitmq',
    publish: async () => {
      throw new PublishError('broker said no');
    },
    close: async () => undefined,
  };
  const relay = new OutboxRelay({ store: db.store, publishers: rejecting, retryIntervalMs: 60_000 });
  await db.transaction(async (add) => {
    await add({ target: 'jetstream:orders.created', body: 'x' });
    await add({ target: 'rabbitmq:/orders', body: 'y' });
  }, 'commit');
  assert.deepEqual(await relay.runOnce(), { claimed: 2, published: 0, failed: 2 });
  const rows = await db.rows();
  assert.match(rows[0].lastError ?? '', /no publisher for jetstream/);
  assert.match(rows[1].lastError ?? '', /broker said no/);
  assert.deepEqual(await relay.runOnce(), { claimed: 0, published: 0, failed: 0 });
});

// ---------------------------------------------------------------------------------------------
// 2. Several relays on one table

for (const backend of [postgresBackend, mariadbBackend]) {
  test(`three relays on one ${backend.name} table publish every row exactly once`, { timeout: testTimeoutMs }, async (t) => {
    if (!(await requireService(t, 'rabbitmq')) || !(await requireService(t, backend.service!))) return;
    const rowCount = 500;
    const tableName = uniqueName('outbox');
    const writer = await backend.open(tableName);
    const rabbit = await rabbitFixture();
    const relays: Array<{ relay: OutboxRelay; publisher: CountingPublisher; store: OpenedBackend }> = [];
    t.after(async () => {
      for (const { relay, publisher, store } of relays) {
        await relay.stop();
        await publisher.close();
        if (store !== writer) await store.close();
      }
      await rabbit.close();
      await writer.close();
    });
    const progress = new Progress();
    let published = 0;
    const errors: unknown[] = [];
    for (let i = 0; i < 3; i += 1) {
      // Each relay has a pool of its own, as separate processes would.
      const store = i === 0 ? writer : await reopen(backend, tableName);
      const publisher = new CountingPublisher(await RabbitPublisher.connect(services.rabbitmq.url));
      const relay = new OutboxRelay({
        store: store.store,
        publishers: publisher,
        batchSize: 20,
        pollIntervalMs: 20,
        onBatch: (result: BatchResult) => {
          published += result.published;
          progress.changed();
        },
        onError: (error) => errors.push(error),
      });
      relays.push({ relay, publisher, store });
    }
    for (const { relay } of relays) relay.start();
    // Written while the relays run, so claims and inserts contend.
    const ids = await addMessages(writer, rabbit.target, rowCount, 25);
    await progress.until(() => published >= rowCount);
    for (const { relay } of relays) await relay.stop();

    assert.deepEqual(errors, []);
    const total = new Map<string, number>();
    for (const { publisher } of relays) for (const [id, n] of publisher.confirms) total.set(id, (total.get(id) ?? 0) + n);
    assert.equal(total.size, rowCount);
    for (const id of ids) assert.equal(total.get(id), 1, `${id} published once`);
    assert.equal(published, rowCount);
    assert.ok((await writer.rows()).every((row) => row.published && row.attempts === 1));
    assert.equal(await queueDepth(rabbit), rowCount);
    t.diagnostic(`rows published per relay: ${relays.map(({ publisher }) => publisher.confirmed).join(', ')}`);
  });
}

/** A second handle on an existing outbox table, with its own pool (its close drops nothing). */
async function reopen(backend: Backend, tableName: string): Promise<OpenedBackend> {
  if (backend === postgresBackend) {
    const pool = new pg.Pool({ connectionString: services.postgres.url, max: 2 });
    return { ...unusedHandle(), childUrl: services.postgres.url, store: new PostgresOutbox(pool, { tableName }), close: () => pool.end() };
  }
  const pool = mysql.createPool({ uri: services.mariadb.url, connectionLimit: 2 });
  return { ...unusedHandle(), childUrl: services.mariadb.url, store: new MysqlOutbox(pool, { tableName }), close: () => pool.end() };
}

function unusedHandle(): Omit<OpenedBackend, 'store' | 'close' | 'childUrl'> {
  const unused = () => Promise.reject(new Error('not used'));
  return { transaction: unused, rows: unused, businessRows: unused, backdatePublished: unused };
}

// ---------------------------------------------------------------------------------------------
// 3. A relay process killed mid-batch

const liveChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

interface RelayChild {
  child: ChildProcess;
  lines: string[];
  progress: Progress;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnRelayChild(env: Record<string, string>): RelayChild {
  const child = spawn(process.execPath, [childPath], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  liveChildren.add(child);
  const lines: string[] = [];
  const progress = new Progress();
  let partial = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts);
    progress.changed();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => process.stderr.write(`[outbox-relay-child] ${chunk}`));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      liveChildren.delete(child);
      progress.changed();
      resolve({ code, signal });
    });
  });
  return { child, lines, progress, exited };
}

/** Waits, batch by batch of the child, until the table has no unpublished row. */
async function untilAllPublished(relay: RelayChild, db: OpenedBackend, rowCount: number): Promise<void> {
  // Every batch line is at least one row claimed; a few extra allow for retries after failures.
  const batchLinesMax = rowCount * 2 + 100;
  for (let checks = 0; checks <= batchLinesMax; checks += 1) {
    const seen = relay.lines.length;
    if ((await db.rows()).every((row) => row.published)) return;
    const gone = () => relay.child.exitCode !== null || relay.child.signalCode !== null;
    // spawnRelayChild reports progress on every stdout line and on exit.
    await relay.progress.until(() => relay.lines.length > seen || gone());
    if (gone()) assert.fail('the relay child exited before publishing every row');
  }
  assert.fail(`rows still unpublished after ${batchLinesMax} batches`);
}

const killCases: Array<{ broker: 'rabbitmq' | 'jetstream'; backend: Backend; dbKind: string; env?: Record<string, string> }> = [
  { broker: 'rabbitmq', backend: postgresBackend, dbKind: 'postgres' },
  { broker: 'jetstream', backend: mariadbBackend, dbKind: 'mysql' },
  // SQLite's claim outlives the killed process until it expires; then the second relay takes the rows.
  { broker: 'rabbitmq', backend: sqliteBackend, dbKind: 'sqlite', env: { OUTBOX_CLAIM_TTL_MS: '5000', OUTBOX_PUBLISH_TIMEOUT_MS: '2000' } },
];

for (const kill of killCases) {
  test(`a relay killed mid-batch (${kill.backend.name} → ${kill.broker}) loses nothing; the inbox applies each message once`, { timeout: testTimeoutMs }, async (t) => {
    const brokerService = kill.broker === 'rabbitmq' ? 'rabbitmq' : 'nats';
    if (!(await requireService(t, brokerService)) || !(await requireService(t, 'postgres'))) return;
    if (kill.backend.service && !(await requireService(t, kill.backend.service))) return;
    const defer = cleanupStack(t);
    const rowCount = 200;
    const holdAfter = 60;
    const tableName = uniqueName('outbox');
    const db = await kill.backend.open(tableName);
    defer(() => db.close());

    let target: string;
    let consumer: LedgerConsumer;
    let streamMessages: (() => Promise<number>) | undefined;
    if (kill.broker === 'rabbitmq') {
      const rabbit = await rabbitFixture();
      defer(() => rabbit.close());
      target = rabbit.target;
      consumer = await ledgerConsumer((options) => consumeRabbit({ ...options, connection: rabbit.connection, queue: rabbit.topology.queue, prefetch: 32 }));
      defer(() => consumer.close());
    } else {
      const js = await jetStreamFixture(defer, (nc, stream) =>
        ledgerConsumer((options) => consumeJetStream({ ...options, connection: nc, stream, durable: 'ledger', prefetch: 32 })),
      );
      target = js.target;
      consumer = js.consumer;
      streamMessages = js.streamMessages;
    }
    const ids = await addMessages(db, target, rowCount);

    const brokerUrl = kill.broker === 'rabbitmq' ? services.rabbitmq.url : services.nats.url;
    const childEnv = { OUTBOX_DB: kill.dbKind, OUTBOX_DB_URL: db.childUrl, OUTBOX_TABLE: tableName, OUTBOX_BROKER: kill.broker, OUTBOX_BROKER_URL: brokerUrl, ...kill.env };
    const first = spawnRelayChild({ ...childEnv, OUTBOX_HOLD_AFTER: String(holdAfter) });
    defer(() => void first.child.kill('SIGKILL'));
    // The child holds a batch whose rows the broker has confirmed but the table does not mark,
    // and the consumer has applied some of the messages: kill it now.
    await Promise.race([first.progress.until(() => first.lines.includes('held')), first.exited.then(() => assert.fail('the first relay exited early'))]);
    await consumer.progress.until(() => consumer.applied.size >= holdAfter);
    assert.ok(consumer.applied.size < rowCount, 'killed before everything was applied');
    first.child.kill('SIGKILL');
    assert.equal((await first.exited).signal, 'SIGKILL');
    assert.ok((await db.rows()).some((row) => !row.published), 'the killed batch left rows unpublished');

    const second = spawnRelayChild(childEnv);
    defer(() => void second.child.kill('SIGKILL'));
    // The consumer may have every message before the table does (the killed batch's rows were
    // confirmed already): wait for both.
    await untilAllPublished(second, db, rowCount);
    await consumer.progress.until(() => consumer.applied.size >= rowCount);
    second.child.kill('SIGTERM');
    assert.equal((await second.exited).code, 0, 'the second relay stopped cleanly');

    assertExactlyOnce(await consumer.effects(), ids);
    if (kill.broker === 'rabbitmq') {
      // The held batch's confirmed rows were published again; RabbitMQ delivered both copies.
      await consumer.progress.until(() => consumer.counts.duplicate >= 1);
      assertExactlyOnce(await consumer.effects(), ids);
      t.diagnostic(`consumer: ${consumer.counts.applied} applied, ${consumer.counts.duplicate} duplicates dropped`);
    } else {
      // JetStream dropped the republished copies itself, by Nats-Msg-Id.
      assert.equal(await streamMessages!(), rowCount);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// 4. The broker connection drops mid-stream

/** A stream and a ledger consumer on it (directly, not through any proxy). */
async function jetStreamFixture(defer: (cleanup: () => Promise<unknown>) => void, start: (nc: NatsConnection, stream: string) => Promise<LedgerConsumer>) {
  const nc = await natsConnect({ servers: services.nats.url });
  const stream = uniqueName('outbox').toUpperCase();
  const subject = `${stream.toLowerCase()}.events`;
  await ensureStream(nc, stream, [subject], { storage: 'memory' });
  defer(async () => {
    await deleteStream(nc, stream).catch(() => undefined);
    await nc.drain().catch(() => undefined);
  });
  const consumer = await start(nc, stream);
  defer(() => consumer.close());
  return { target: `jetstream:${subject}`, consumer, streamMessages: async () => (await (await jetstreamManager(nc)).streams.info(stream)).state.messages };
}

for (const broker of ['rabbitmq', 'jetstream'] as const) {
  test(`a relay cut off from ${broker} mid-stream keeps the failed rows and publishes them once it is back`, { timeout: testTimeoutMs }, async (t) => {
    if (!(await requireService(t, broker === 'rabbitmq' ? 'rabbitmq' : 'nats')) || !(await requireService(t, 'postgres'))) return;
    const defer = cleanupStack(t);
    const rowCount = 150;
    const cutAfter = 40;
    const db = await postgresBackend.open(uniqueName('outbox'));
    defer(() => db.close());
    const upstream = broker === 'rabbitmq' ? services.rabbitmq : services.nats;
    const proxy = await new TcpProxy({ host: upstream.host, port: upstream.port }).start();
    defer(() => proxy.stop());

    let target: string;
    let consumer: LedgerConsumer;
    let inner: Publisher;
    if (broker === 'rabbitmq') {
      const rabbit = await rabbitFixture();
      defer(() => rabbit.close());
      target = rabbit.target;
      consumer = await ledgerConsumer((options) => consumeRabbit({ ...options, connection: rabbit.connection, queue: rabbit.topology.queue, prefetch: 32 }));
      defer(() => consumer.close());
      inner = await RabbitPublisher.connect(`amqp://guest:guest@127.0.0.1:${proxy.port}`, { reconnectAttemptsMax: 2, reconnectBackoffMs: 20, reconnectBackoffMsMax: 100 });
    } else {
      const js = await jetStreamFixture(defer, (nc, stream) =>
        ledgerConsumer((options) => consumeJetStream({ ...options, connection: nc, stream, durable: 'ledger', prefetch: 32 })),
      );
      target = js.target;
      consumer = js.consumer;
      inner = await JetStreamPublisher.connect(`nats://127.0.0.1:${proxy.port}`, { publishTimeoutMs: 1000, reconnectTimeWaitMs: 50 });
    }
    const ids = await addMessages(db, target, rowCount);

    const publisher = new CountingPublisher(inner);
    defer(() => publisher.close());
    let cut: Promise<void> | undefined;
    publisher.afterConfirm = () => {
      if (publisher.confirmed === cutAfter) cut = proxy.stop();
    };
    const progress = new Progress();
    let failedBatches = 0;
    const relay = new OutboxRelay({
      store: db.store,
      publishers: publisher,
      batchSize: 10,
      pollIntervalMs: 20,
      publishTimeoutMs: 3000,
      retryIntervalMs: 50,
      retryIntervalMsMax: 200,
      onBatch: (result) => {
        if (result.failed > 0) failedBatches += 1;
        progress.changed();
      },
    });
    defer(() => relay.stop());
    relay.start();

    await progress.until(() => failedBatches >= 1);
    await cut;
    const rowsWhileCut = await db.rows();
    const unpublished = rowsWhileCut.filter((row) => !row.published);
    assert.ok(unpublished.length > 0, 'rows whose publish failed are still unpublished');
    assert.ok(unpublished.some((row) => row.lastError !== null && row.attempts >= 1), 'their failure is recorded');
    for (const row of rowsWhileCut.filter((row) => row.published)) {
      assert.ok(publisher.confirms.has(row.messageId), `row ${row.id} was marked only after a confirm`);
    }

    await proxy.start();
    await consumer.progress.until(() => consumer.applied.size >= rowCount);
    await relay.stop();
    assert.ok((await db.rows()).every((row) => row.published), 'every row is marked published');
    assertExactlyOnce(await consumer.effects(), ids);
    t.diagnostic(`${failedBatches} batches had failures; consumer dropped ${consumer.counts.duplicate} duplicates`);
  });
}
