// Publishers against the real brokers (RabbitMQ with confirms, NATS JetStream with PubAcks)
// and the inbox against the real databases (SQLite file, PostgreSQL, MariaDB).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, test, type TestContext } from 'node:test';
import amqp from 'amqplib';
import Database from 'better-sqlite3';
import pg from 'pg';
import mysql from 'mysql2/promise';
import type { RowDataPacket } from 'mysql2/promise';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import {
  InvalidInboxKey,
  JetStreamPublisher,
  MysqlInbox,
  PostgresInbox,
  PublishError,
  RabbitPublisher,
  SqliteInbox,
  declareRabbitTopology,
  deleteRabbitTopology,
  deleteStream,
  inboxMessageIdBytesMax,
  type Inbox,
} from '../src/messaging/index.js';
import { requireService, services } from './support/services.js';
import { uniqueName } from './support/messaging-brokers.js';

const textBody = (text: string) => Buffer.from(text, 'utf8');

describe('RabbitPublisher', () => {
  test('a routed message is confirmed and lands in the queue with its properties', async (t) => {
    if (!(await requireService(t, 'rabbitmq'))) return;
    const admin = await amqp.connect(services.rabbitmq.url);
    const name = uniqueName('tandem_pub');
    const topology = await declareRabbitTopology(admin, { exchange: name, queue: name, routingKey: 'orders' });
    const publisher = await RabbitPublisher.connect(services.rabbitmq.url);
    try {
      await publisher.publish({
        target: { broker: 'rabbitmq', exchange: name, routingKey: 'orders' },
        messageId: 'gid-1/01',
        body: textBody('{"n":1}'),
        headers: { 'tandem-gid': 'gid-1' },
        contentType: 'application/json',
      });
      const channel = await admin.createChannel();
      const got = await channel.get(name, { noAck: true });
      assert.ok(got, 'the confirmed message is in the queue');
      assert.equal(got.properties.messageId, 'gid-1/01');
      assert.equal(got.properties.contentType, 'application/json');
      assert.equal(got.properties.deliveryMode, 2, 'persistent');
      assert.equal(got.properties.headers?.['tandem-gid'], 'gid-1');
      assert.equal(got.content.toString(), '{"n":1}');
      await channel.close();
    } finally {
      await publisher.close();
      await deleteRabbitTopology(admin, topology);
      await admin.close();
    }
  });

  test('an unroutable message (mandatory, no binding) is rejected, not dropped; routed ones alongside still confirm', async (t) => {
    if (!(await requireService(t, 'rabbitmq'))) return;
    const admin = await amqp.connect(services.rabbitmq.url);
    const name = uniqueName('tandem_pub');
    const topology = await declareRabbitTopology(admin, { exchange: name, queue: name, routingKey: 'bound' });
    const publisher = await RabbitPublisher.connect(services.rabbitmq.url);
    try {
      const publish = (routingKey: string, messageId: string) =>
        publisher.publish({ target: { broker: 'rabbitmq', exchange: name, routingKey }, messageId, body: textBody(messageId) });
      const outcomes = await Promise.allSettled([publish('bound', 'a'), publish('nobody', 'b'), publish('bound', 'c'), publish('nobody', 'a')]);
      assert.equal(outcomes[0].status, 'fulfilled');
      assert.equal(outcomes[2].status, 'fulfilled');
      for (const index of [1, 3]) {
        const outcome = outcomes[index];
        assert.equal(outcome.status, 'rejected');
        const error: unknown = outcome.reason;
        assert.ok(error instanceof PublishError);
        assert.match(error.message, /unroutable/);
        assert.equal(error.permanent, false, 'a queue may be bound later');
      }
      const channel = await admin.createChannel();
      const check = await channel.checkQueue(name);
      assert.equal(check.messageCount, 2);
      await channel.close();
    } finally {
      await publisher.close();
      await deleteRabbitTopology(admin, topology);
      await admin.close();
    }
  });

  test('a missing exchange rejects that publish and the publisher keeps working, also when an exchange vanishes after use', async (t) => {
    if (!(await requireService(t, 'rabbitmq'))) return;
    const admin = await amqp.connect(services.rabbitmq.url);
    const name = uniqueName('tandem_pub');
    const topology = await declareRabbitTopology(admin, { exchange: name, queue: name, routingKey: 'k' });
    const doomed = uniqueName('tandem_doomed');
    const setup = await admin.createChannel();
    await setup.assertExchange(doomed, 'fanout', { durable: false });
    await setup.bindQueue(name, doomed, '');
    const publisher = await RabbitPublisher.connect(services.rabbitmq.url);
    const good = (messageId: string) => publisher.publish({ target: { broker: 'rabbitmq', exchange: name, routingKey: 'k' }, messageId, body: textBody(messageId) });
    try {
      await assert.rejects(
        publisher.publish({ target: { broker: 'rabbitmq', exchange: uniqueName('tandem_missing'), routingKey: 'k' }, messageId: 'x', body: textBody('x') }),
        (error: unknown) => error instanceof PublishError && error.permanent && /does not exist/.test(error.message),
      );
      await good('after-missing');

      // Known exchange deleted behind the publisher's back: the broker closes the channel (404);
      // that publish fails and a fresh channel serves the next one.
      await publisher.publish({ target: { broker: 'rabbitmq', exchange: doomed, routingKey: '' }, messageId: 'd1', body: textBody('d1') });
      await setup.deleteExchange(doomed);
      await assert.rejects(
        publisher.publish({ target: { broker: 'rabbitmq', exchange: doomed, routingKey: '' }, messageId: 'd2', body: textBody('d2') }),
        (error: unknown) => error instanceof PublishError && /NOT_FOUND|404/.test(error.message),
      );
      await good('after-vanished');
      const check = await setup.checkQueue(name);
      assert.equal(check.messageCount, 3, 'after-missing, d1, after-vanished');
    } finally {
      await setup.close();
      await publisher.close();
      await deleteRabbitTopology(admin, topology);
      await admin.close();
    }
  });

  test('inFlightMax bounds publishes awaiting confirms; a burst larger than it all confirms', async (t) => {
    if (!(await requireService(t, 'rabbitmq'))) return;
    const admin = await amqp.connect(services.rabbitmq.url);
    const name = uniqueName('tandem_pub');
    const topology = await declareRabbitTopology(admin, { exchange: name, queue: name, routingKey: 'k' });
    const publisher = await RabbitPublisher.connect(services.rabbitmq.url, { inFlightMax: 4, waitingPublishesMax: 100 });
    try {
      // 4 take a slot, 100 wait for one: the limits exactly.
      const burst = Array.from({ length: 104 }, (_, index) =>
        publisher.publish({ target: { broker: 'rabbitmq', exchange: name, routingKey: 'k' }, messageId: `m-${index}`, body: textBody(String(index)) }),
      );
      // One more than inFlightMax + waitingPublishesMax is refused at once.
      await assert.rejects(
        publisher.publish({ target: { broker: 'rabbitmq', exchange: name, routingKey: 'k' }, messageId: 'overflow', body: textBody('x') }),
        (error: unknown) => error instanceof PublishError && /waiting/.test(error.message),
      );
      await Promise.all(burst);
      const channel = await admin.createChannel();
      assert.equal((await channel.checkQueue(name)).messageCount, 104);
      await channel.close();
    } finally {
      await publisher.close();
      await deleteRabbitTopology(admin, topology);
      await admin.close();
    }
  });
});

describe('JetStreamPublisher', () => {
  test('publishes with a PubAck; a republish of the same messageId is stored once; no stream is a PublishError', async (t) => {
    if (!(await requireService(t, 'nats'))) return;
    const nc = await connect({ servers: services.nats.url });
    const stream = uniqueName('TANDEM_PUB');
    const subject = `${stream}.orders`;
    const publisher = await JetStreamPublisher.connect(services.nats.url);
    try {
      await publisher.ensureStream(stream, [`${stream}.>`], { duplicateWindowMs: 60_000 });
      const message = { target: { broker: 'jetstream' as const, subject }, messageId: 'gid-1/01', body: textBody('one'), headers: { 'tandem-gid': 'gid-1' } };
      await publisher.publish(message);
      await publisher.publish(message);
      await publisher.publish({ ...message, messageId: 'gid-1/02' });
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.info(stream);
      assert.equal(info.state.messages, 2, 'the republish was de-duplicated by the stream');
      const stored = await jsm.streams.getMessage(stream, { seq: 1 });
      assert.ok(stored);
      assert.equal(stored.header.get('Nats-Msg-Id'), 'gid-1/01');
      assert.equal(stored.header.get('tandem-gid'), 'gid-1');

      await assert.rejects(
        publisher.publish({ target: { broker: 'jetstream', subject: `${uniqueName('NOSTREAM')}.x` }, messageId: 'n', body: textBody('n') }),
        (error: unknown) => error instanceof PublishError && /no stream/.test(error.message),
      );
      await publisher.publish({ ...message, messageId: 'gid-1/03' });
      assert.equal((await jsm.streams.info(stream)).state.messages, 3, 'the publisher still works after the refusal');
    } finally {
      await publisher.close();
      await deleteStream(nc, stream);
      await nc.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Inbox

interface InboxFixture<Tx> {
  inbox: Inbox<Tx>;
  bump(tx: Tx, effect: string): Promise<void>;
  countOf(effect: string): Promise<number>;
  inboxRows(messageId: string): Promise<number>;
  /** Resolves once another session waits on a row lock in the inbox (or at once on SQLite). */
  someoneWaits(): Promise<void>;
  close(): Promise<void>;
}

/** Polls a condition no driver can announce (a lock wait inside the database); bounded. */
async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const attemptsMax = 200;
  const pollIntervalMs = 25;
  for (let attempt = 0; attempt < attemptsMax; attempt += 1) {
    if (await check()) return;
    await delay(pollIntervalMs);
  }
  throw new Error(`gave up waiting for ${what}`);
}

async function sqliteInboxFixture(): Promise<InboxFixture<Database.Database>> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tandem-inbox-'));
  const db = new Database(path.join(dir, 'consumer.db'));
  const inbox = new SqliteInbox(db, { consumer: 'billing', tableName: uniqueName('tandem_inbox') });
  await inbox.ensureSchema();
  const effects = uniqueName('effects');
  db.exec(`CREATE TABLE ${effects} (name TEXT PRIMARY KEY, n INTEGER NOT NULL)`);
  return {
    inbox,
    bump: async (tx, effect) => {
      tx.prepare(`INSERT INTO ${effects} (name, n) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET n = n + 1`).run(effect);
    },
    countOf: async (effect) => (db.prepare(`SELECT n FROM ${effects} WHERE name = ?`).get(effect) as { n: number } | undefined)?.n ?? 0,
    inboxRows: async (messageId) => (db.prepare(`SELECT COUNT(*) AS n FROM ${inbox.tableName} WHERE message_id = ?`).get(messageId) as { n: number }).n,
    // One connection runs one call at a time: a second call always waits its turn.
    someoneWaits: async () => undefined,
    close: async () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postgresInboxFixture(): Promise<InboxFixture<pg.PoolClient>> {
  const pool = new pg.Pool({ connectionString: services.postgres.url, max: 6 });
  const inbox = new PostgresInbox(pool, { consumer: 'billing', tableName: uniqueName('tandem_inbox') });
  await inbox.ensureSchema();
  const effects = uniqueName('effects');
  await pool.query(`CREATE TABLE ${effects} (name TEXT PRIMARY KEY, n INTEGER NOT NULL)`);
  return {
    inbox,
    bump: async (tx, effect) => {
      await tx.query(`INSERT INTO ${effects} (name, n) VALUES ($1, 1) ON CONFLICT (name) DO UPDATE SET n = ${effects}.n + 1`, [effect]);
    },
    countOf: async (effect) => Number((await pool.query<{ n: number }>(`SELECT n FROM ${effects} WHERE name = $1`, [effect])).rows[0]?.n ?? 0),
    inboxRows: async (messageId) => Number((await pool.query<{ n: string }>(`SELECT COUNT(*) AS n FROM ${inbox.tableName} WHERE message_id = $1`, [messageId])).rows[0].n),
    someoneWaits: () =>
      waitFor('a PostgreSQL session waiting on the inbox row lock', async () => {
        const result = await pool.query<{ n: string }>(
          `SELECT COUNT(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1`,
          [`%INSERT INTO ${inbox.tableName}%`],
        );
        return Number(result.rows[0].n) > 0;
      }),
    close: async () => {
      await pool.query(`DROP TABLE IF EXISTS ${effects}`);
      await pool.query(`DROP TABLE IF EXISTS ${inbox.tableName}`);
      await pool.end();
    },
  };
}

async function mysqlInboxFixture(): Promise<InboxFixture<mysql.PoolConnection>> {
  const pool = mysql.createPool({ uri: services.mariadb.url, connectionLimit: 6 });
  const inbox = new MysqlInbox(pool, { consumer: 'billing', tableName: uniqueName('tandem_inbox') });
  await inbox.ensureSchema();
  const effects = uniqueName('effects');
  await pool.query(`CREATE TABLE ${effects} (name VARCHAR(64) PRIMARY KEY, n INT NOT NULL) ENGINE = InnoDB`);
  return {
    inbox,
    bump: async (tx, effect) => {
      await tx.query(`INSERT INTO ${effects} (name, n) VALUES (?, 1) ON DUPLICATE KEY UPDATE n = n + 1`, [effect]);
    },
    countOf: async (effect) => {
      const [rows] = await pool.query<RowDataPacket[]>(`SELECT n FROM ${effects} WHERE name = ?`, [effect]);
      return Number(rows[0]?.n ?? 0);
    },
    inboxRows: async (messageId) => {
      const [rows] = await pool.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM ${inbox.tableName} WHERE message_id = ?`, [messageId]);
      return Number(rows[0].n);
    },
    someoneWaits: () =>
      waitFor('a MariaDB transaction waiting on the inbox row lock', async () => {
        // PROCESSLIST, not INNODB_TRX: the latter is a cache that polling faster than 100 ms
        // never refreshes. While the first call holds the row, a running insert is a waiting one.
        const [rows] = await pool.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE ?`, [
          `INSERT IGNORE INTO ${inbox.tableName}%`,
        ]);
        return Number(rows[0].n) > 0;
      }),
    close: async () => {
      await pool.query(`DROP TABLE IF EXISTS ${effects}`);
      await pool.query(`DROP TABLE IF EXISTS ${inbox.tableName}`);
      await pool.end();
    },
  };
}

const backends = [
  { name: 'SQLite', service: undefined, open: sqliteInboxFixture },
  { name: 'PostgreSQL', service: 'postgres', open: postgresInboxFixture },
  { name: 'MariaDB', service: 'mariadb', open: mysqlInboxFixture },
] as const;

for (const backend of backends) {
  describe(`${backend.name} inbox`, () => {
    async function open(t: TestContext): Promise<InboxFixture<unknown> | undefined> {
      if (backend.service && !(await requireService(t, backend.service))) return undefined;
      return (await backend.open()) as InboxFixture<unknown>;
    }

    test('a duplicate delivery is not applied again', async (t) => {
      const fixture = await open(t);
      if (!fixture) return;
      try {
        const first = await fixture.inbox.applyOnce('m-1', async (tx) => {
          await fixture.bump(tx, 'm-1');
          return 'done';
        });
        assert.deepEqual(first, { applied: true, value: 'done' });
        let ranAgain = false;
        const second = await fixture.inbox.applyOnce('m-1', async () => {
          ranAgain = true;
        });
        assert.deepEqual(second, { applied: false, reason: 'duplicate' });
        assert.equal(ranAgain, false);
        assert.equal(await fixture.countOf('m-1'), 1);
      } finally {
        await fixture.close();
      }
    });

    test('concurrent deliveries of one message apply it once (the second waits on the key)', async (t) => {
      const fixture = await open(t);
      if (!fixture) return;
      try {
        let releaseFirst!: () => void;
        const firstHolds = new Promise<void>((resolve) => (releaseFirst = resolve));
        let firstStarted!: () => void;
        const started = new Promise<void>((resolve) => (firstStarted = resolve));
        const first = fixture.inbox.applyOnce('m-c', async (tx) => {
          firstStarted();
          await firstHolds;
          await fixture.bump(tx, 'm-c');
        });
        await started;
        const others = Array.from({ length: 3 }, () => fixture.inbox.applyOnce('m-c', (tx) => fixture.bump(tx, 'm-c')));
        try {
          await fixture.someoneWaits();
        } finally {
          releaseFirst();
        }
        const results = await Promise.all([first, ...others]);
        assert.equal(results.filter((result) => result.applied).length, 1);
        assert.equal(await fixture.countOf('m-c'), 1);
      } finally {
        await fixture.close();
      }
    });

    test('a throwing handler rolls back its effect and the inbox row; a redelivery then applies', async (t) => {
      const fixture = await open(t);
      if (!fixture) return;
      try {
        await assert.rejects(
          fixture.inbox.applyOnce('m-t', async (tx) => {
            await fixture.bump(tx, 'm-t');
            throw new Error('business failure');
          }),
          /business failure/,
        );
        assert.equal(await fixture.countOf('m-t'), 0);
        assert.equal(await fixture.inboxRows('m-t'), 0);
        const retried = await fixture.inbox.applyOnce('m-t', (tx) => fixture.bump(tx, 'm-t'));
        assert.equal(retried.applied, true);
        assert.equal(await fixture.countOf('m-t'), 1);
      } finally {
        await fixture.close();
      }
    });

    test('a message id longer than inboxMessageIdBytesMax is refused before touching the database', async (t) => {
      const fixture = await open(t);
      if (!fixture) return;
      try {
        const longest = 'x'.repeat(inboxMessageIdBytesMax);
        assert.equal((await fixture.inbox.applyOnce(longest, async () => 1)).applied, true);
        await assert.rejects(fixture.inbox.applyOnce(`${longest}y`, async () => 1), InvalidInboxKey);
        await assert.rejects(fixture.inbox.applyOnce('', async () => 1), InvalidInboxKey);
      } finally {
        await fixture.close();
      }
    });
  });
}
