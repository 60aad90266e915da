// End to end on the real brokers: publisher → broker → consumer → inbox + ledger in the
// consumer's database. Every effect must land exactly once: republished duplicates, broker
// redeliveries and a connection cut in the middle of a publishing stream must neither lose
// nor double anything. A handler that always fails ends on the dead-letter path.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import amqp from 'amqplib';
import type { ConsumeMessage } from 'amqplib';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import {
  JetStreamPublisher,
  RabbitPublisher,
  consumeJetStream,
  consumeRabbit,
  declareRabbitTopology,
  deleteRabbitTopology,
  deleteStream,
  ensureStream,
  type ConsumerHandle,
  type OutgoingMessage,
  type Publisher,
} from '../src/messaging/index.js';
import { requireService, services } from './support/services.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { Waiter, postgresLedger, publishAll, sqliteLedger, uniqueName, type LedgerFixture, type PublishLoopResult } from './support/messaging-brokers.js';

/** Messages per stream: enough to overlap prefetch and in-flight windows many times. */
const messageCount = 200;
/** Messages published a second time with the same messageId. */
const duplicateCount = 20;
const deliveriesMax = 3;
const testTimeoutMs = 120_000;
/** Publishes in flight in the connection-cut tests: all of them are lost-confirm retries. */
const publishConcurrency = 16;

/**
 * Publishes every message through `proxy`, retrying rejected publishes with the same messageId.
 * Halfway it lets publishes through but loses their confirms; once every unconfirmed publish
 * has reached the consumer it cuts the connection, and heals it once the publisher noticed.
 */
async function publishAcrossCut(
  publisher: Publisher,
  messages: OutgoingMessage[],
  cut: { proxy: TcpProxy; waiter: Waiter; applied: () => number },
): Promise<PublishLoopResult> {
  let confirmedCount = 0;
  let stopping: Promise<void> | undefined;
  let healing: Promise<void> | undefined;
  const result = await publishAll(publisher, messages, {
    concurrency: publishConcurrency,
    attemptsMax: 20,
    onConfirmed: (confirmed) => {
      confirmedCount = confirmed;
      if (confirmed !== messages.length / 2) return;
      cut.proxy.holdReplies();
      stopping ??= cut.waiter
        .until('the unconfirmed publishes reaching the consumer', () => cut.applied() >= confirmedCount + publishConcurrency)
        .then(() => cut.proxy.stop());
    },
    onFailure: () => {
      if (stopping) healing ??= stopping.then(() => cut.proxy.start()).then(() => undefined);
    },
  });
  assert.ok(stopping, 'the connection was cut');
  await healing;
  assert.ok(result.failures > 0, 'the cut rejected publishes, which were retried');
  return result;
}

function messageIds(prefix: string, count: number): string[] {
  return Array.from({ length: count }, (_, index) => `${prefix}-${String(index).padStart(4, '0')}`);
}

/** Asserts each id has exactly one ledger row and nothing else is there. */
async function assertLedgerExactlyOnce<Tx>(ledger: LedgerFixture<Tx>, ids: string[]): Promise<void> {
  const rows = await ledger.rows();
  const missing = ids.filter((id) => !rows.has(id));
  const doubled = [...rows].filter(([, n]) => n !== 1).map(([id]) => id);
  const strangers = [...rows.keys()].filter((id) => !ids.includes(id));
  assert.deepEqual({ missing, doubled, strangers }, { missing: [], doubled: [], strangers: [] });
}

describe('RabbitMQ end to end', () => {
  test('every message is applied once despite republished duplicates; a failing one is dead-lettered after deliveriesMax', { timeout: testTimeoutMs }, async (t) => {
    if (!(await requireService(t, 'rabbitmq')) || !(await requireService(t, 'postgres'))) return;
    const admin = await amqp.connect(services.rabbitmq.url);
    const name = uniqueName('tandem_e2e');
    const topology = await declareRabbitTopology(admin, { exchange: name, queue: name, routingKey: 'orders' });
    const ledger = await postgresLedger();
    const publisher = await RabbitPublisher.connect(services.rabbitmq.url);
    const waiter = new Waiter();
    const logs: string[] = [];
    const poisonDeliveries: number[] = [];
    const deadLettered: ConsumeMessage[] = [];
    const dlq = await admin.createChannel();
    let consumer: ConsumerHandle | undefined;
    try {
      await dlq.consume(topology.deadLetterQueue, (message) => {
        if (!message) return;
        deadLettered.push(message);
        dlq.ack(message);
        waiter.poke();
      });
      consumer = await consumeRabbit({
        connection: admin,
        queue: name,
        inbox: ledger.inbox,
        prefetch: 16,
        deliveriesMax,
        redeliveryDelayMs: 10,
        handler: async (message, tx) => {
          if (message.messageId === 'poison') {
            poisonDeliveries.push(message.deliveryCount);
            throw new Error('this handler always fails');
          }
          await ledger.record(tx, message.messageId);
        },
        onEvent: () => waiter.poke(),
        log: (line) => logs.push(line),
      });

      const ids = messageIds('r', messageCount);
      const toMessage = (messageId: string): OutgoingMessage => ({
        target: { broker: 'rabbitmq', exchange: name, routingKey: 'orders' },
        messageId,
        body: Buffer.from(messageId),
      });
      const outgoing = [...ids, ...ids.slice(0, duplicateCount), 'poison'].map(toMessage);
      await publishAll(publisher, outgoing, { concurrency: 8, attemptsMax: 1 });
      // A message without a messageId, published by someone not using Tandem.
      const raw = await admin.createConfirmChannel();
      raw.publish(name, 'orders', Buffer.from('anonymous'), { persistent: true });
      await raw.waitForConfirms();
      await raw.close();

      const running = consumer;
      await waiter.until('every message applied, duplicates dropped, poison and anonymous dead-lettered', () =>
        running.counts.applied === messageCount && running.counts.duplicate === duplicateCount && deadLettered.length === 2,
      );
      await assertLedgerExactlyOnce(ledger, ids);
      assert.deepEqual(poisonDeliveries, [1, 2, 3], 'requeued until deliveriesMax, counted by x-delivery-count');
      assert.equal(running.counts['dead-lettered'], 1);
      assert.equal(running.counts.rejected, 1);
      assert.deepEqual(deadLettered.map((message) => message.properties.messageId ?? '(none)').sort(), ['(none)', 'poison']);
      assert.ok(logs.some((line) => /no messageId/.test(line)), 'the reason for rejecting the anonymous message is logged');
    } finally {
      await consumer?.close();
      await dlq.close().catch(() => undefined);
      await publisher.close();
      await deleteRabbitTopology(admin, topology);
      await admin.close();
      await ledger.close();
    }
  });

  test('cutting the publisher connection mid-stream loses nothing and doubles nothing', { timeout: testTimeoutMs }, async (t) => {
    if (!(await requireService(t, 'rabbitmq'))) return;
    const admin = await amqp.connect(services.rabbitmq.url);
    const name = uniqueName('tandem_cut');
    const topology = await declareRabbitTopology(admin, { exchange: name, queue: name, routingKey: 'orders' });
    const ledger = await sqliteLedger();
    const proxy = await new TcpProxy({ host: services.rabbitmq.host, port: services.rabbitmq.port }).start();
    const publisher = await RabbitPublisher.connect(`amqp://guest:guest@127.0.0.1:${proxy.port}`, {
      reconnectAttemptsMax: 10,
      reconnectBackoffMs: 20,
      reconnectBackoffMsMax: 200,
    });
    const waiter = new Waiter();
    let consumer: ConsumerHandle | undefined;
    try {
      consumer = await consumeRabbit({
        connection: admin,
        queue: name,
        inbox: ledger.inbox,
        prefetch: 16,
        handler: (message, tx) => ledger.record(tx, message.messageId),
        onEvent: () => waiter.poke(),
      });
      const running = consumer;
      const ids = messageIds('c', messageCount);
      const result = await publishAcrossCut(
        publisher,
        ids.map((messageId) => ({ target: { broker: 'rabbitmq', exchange: name, routingKey: 'orders' }, messageId, body: Buffer.from(messageId) })),
        { proxy, waiter, applied: () => running.counts.applied },
      );

      await waiter.until('every message applied', () => running.counts.applied === messageCount);
      await assertLedgerExactlyOnce(ledger, ids);
      // RabbitMQ keeps both copies of a message whose confirm was lost; the inbox drops the second.
      t.diagnostic(`publish failures retried: ${result.failures}; duplicates dropped by the inbox: ${running.counts.duplicate}`);
      assert.ok(running.counts.duplicate >= publishConcurrency, 'each publish whose confirm was lost arrived twice');
      assert.ok(running.counts.duplicate <= result.failures, 'only retried publishes can arrive twice');
    } finally {
      await consumer?.close();
      await publisher.close();
      await proxy.stop();
      await deleteRabbitTopology(admin, topology);
      await admin.close();
      await ledger.close();
    }
  });
});

describe('JetStream end to end', () => {
  test('every message is applied once; the stream absorbs republishes; a failing one is terminated after deliveriesMax', { timeout: testTimeoutMs }, async (t) => {
    if (!(await requireService(t, 'nats'))) return;
    const nc: NatsConnection = await connect({ servers: services.nats.url });
    const stream = uniqueName('TANDEM_E2E');
    const durable = 'ledger';
    await ensureStream(nc, stream, [`${stream}.>`], { duplicateWindowMs: 120_000 });
    const ledger = await sqliteLedger();
    const publisher = await JetStreamPublisher.connect(services.nats.url);
    const waiter = new Waiter();
    const logs: string[] = [];
    const poisonDeliveries: number[] = [];
    let terminatedAdvisories = 0;
    const advisories = nc.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.${stream}.${durable}`, {
      callback: () => {
        terminatedAdvisories += 1;
        waiter.poke();
      },
    });
    let consumer: ConsumerHandle | undefined;
    try {
      consumer = await consumeJetStream({
        connection: nc,
        stream,
        durable,
        inbox: ledger.inbox,
        deliveriesMax,
        nakDelayMs: 10,
        handler: async (message, tx) => {
          if (message.messageId === 'poison') {
            poisonDeliveries.push(message.deliveryCount);
            throw new Error('this handler always fails');
          }
          await ledger.record(tx, message.messageId);
        },
        onEvent: () => waiter.poke(),
        log: (line) => logs.push(line),
      });
      const ids = messageIds('j', messageCount);
      const toMessage = (messageId: string): OutgoingMessage => ({ target: { broker: 'jetstream', subject: `${stream}.orders` }, messageId, body: Buffer.from(messageId) });
      await publishAll(publisher, [...ids, ...ids.slice(0, duplicateCount), 'poison'].map(toMessage), { concurrency: 8, attemptsMax: 1 });
      await jetstream(nc).publish(`${stream}.orders`, Buffer.from('anonymous'));

      const running = consumer;
      await waiter.until('every message applied, poison and anonymous terminated', () =>
        running.counts.applied === messageCount && running.counts['dead-lettered'] === 1 && running.counts.rejected === 1 && terminatedAdvisories === 2,
      );
      await assertLedgerExactlyOnce(ledger, ids);
      assert.deepEqual(poisonDeliveries, [1, 2, 3]);
      assert.equal(running.counts.duplicate, 0, 'the stream dropped the republished copies itself');
      const info = await (await jetstreamManager(nc)).streams.info(stream);
      assert.equal(info.state.messages, messageCount + 2, 'N + poison + anonymous; the duplicates were not stored');
      assert.ok(logs.some((line) => /no Nats-Msg-Id/.test(line)));
    } finally {
      advisories.unsubscribe();
      await consumer?.close();
      await publisher.close();
      await deleteStream(nc, stream);
      await nc.close();
      await ledger.close();
    }
  });

  test('cutting the publisher connection mid-stream loses nothing and doubles nothing', { timeout: testTimeoutMs }, async (t) => {
    if (!(await requireService(t, 'nats')) || !(await requireService(t, 'postgres'))) return;
    const nc = await connect({ servers: services.nats.url });
    const stream = uniqueName('TANDEM_CUT');
    await ensureStream(nc, stream, [`${stream}.>`], { duplicateWindowMs: 120_000 });
    const ledger = await postgresLedger();
    const proxy = await new TcpProxy({ host: services.nats.host, port: services.nats.port }).start();
    const publisher = await JetStreamPublisher.connect(`nats://127.0.0.1:${proxy.port}`, { publishTimeoutMs: 2_000, reconnectTimeWaitMs: 50 });
    const waiter = new Waiter();
    let consumer: ConsumerHandle | undefined;
    try {
      consumer = await consumeJetStream({
        connection: nc,
        stream,
        durable: 'ledger',
        inbox: ledger.inbox,
        handler: (message, tx) => ledger.record(tx, message.messageId),
        onEvent: () => waiter.poke(),
      });
      const running = consumer;
      const ids = messageIds('c', messageCount);
      const result = await publishAcrossCut(
        publisher,
        ids.map((messageId) => ({ target: { broker: 'jetstream', subject: `${stream}.orders` }, messageId, body: Buffer.from(messageId) })),
        { proxy, waiter, applied: () => running.counts.applied },
      );

      await waiter.until('every message applied', () => running.counts.applied === messageCount);
      await assertLedgerExactlyOnce(ledger, ids);
      const info = await (await jetstreamManager(nc)).streams.info(stream);
      assert.equal(info.state.messages, messageCount, 'retried publishes were de-duplicated by Nats-Msg-Id');
      assert.equal(running.counts.duplicate, 0, 'the stream, not the inbox, absorbed the retries');
      t.diagnostic(`publish failures retried: ${result.failures}; duplicates dropped by the inbox: ${running.counts.duplicate}`);
    } finally {
      await consumer?.close();
      await publisher.close();
      await proxy.stop();
      await deleteStream(nc, stream);
      await nc.close();
      await ledger.close();
    }
  });
});
