// A RabbitMQ consumer whose connection is cut reopens it by itself (found in review: it used to
// stop consuming silently). The consumer reaches the broker through a TCP proxy the test cuts
// and restores; every message published before, during and after the cut is applied once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import amqp from 'amqplib';
import { consumeRabbit } from '../src/messaging/consumers.js';
import { declareRabbitTopology, deleteRabbitTopology } from '../src/messaging/rabbitmq.js';
import { sqliteLedger, uniqueName, Waiter } from './support/messaging-brokers.js';
import { requireService, services } from './support/services.js';
import { TcpProxy } from './support/tcp-proxy.js';

const messageCount = 60;

test('a RabbitMQ consumer reconnects after its connection is cut, and applies every message once', { timeout: 120_000 }, async (t) => {
  if (!(await requireService(t, 'rabbitmq'))) return;
  const admin = await amqp.connect(services.rabbitmq.url);
  t.after(() => admin.close().catch(() => undefined));
  const topology = await declareRabbitTopology(admin, { exchange: uniqueName('reconnect'), queue: uniqueName('reconnect_q'), routingKey: 'k' });
  t.after(() => deleteRabbitTopology(admin, topology).catch(() => undefined));
  const ledger = await sqliteLedger();
  t.after(() => ledger.close());

  const proxy = await new TcpProxy({ host: services.rabbitmq.host, port: services.rabbitmq.port }).start();
  t.after(() => proxy.stop());
  const waiter = new Waiter();
  let applied = 0;
  const logs: string[] = [];
  const consumer = await consumeRabbit({
    connection: `amqp://guest:guest@127.0.0.1:${proxy.port}`,
    queue: topology.queue,
    inbox: ledger.inbox,
    handler: async (message, tx) => ledger.record(tx, message.messageId),
    onEvent: (event) => {
      if (event.outcome === 'applied') applied += 1;
      waiter.poke();
    },
    log: (line) => {
      logs.push(line);
      waiter.poke();
    },
  });
  t.after(() => consumer.close());

  const channel = await admin.createConfirmChannel();
  const publish = async (from: number, to: number) => {
    for (let index = from; index < to; index++) {
      channel.publish(topology.exchange, 'k', Buffer.from(String(index)), { messageId: `m-${index}`, persistent: true });
    }
    await channel.waitForConfirms();
  };

  await publish(0, messageCount / 3);
  await waiter.until('the first third applied', () => applied >= messageCount / 3);
  await proxy.stop();
  await waiter.until('the consumer noticed the cut', () => logs.some((line) => line.includes('reopening in')));
  await publish(messageCount / 3, (2 * messageCount) / 3);
  await proxy.start();
  await publish((2 * messageCount) / 3, messageCount);
  await waiter.until('every message applied after the reconnect', () => applied >= messageCount);

  const rows = await ledger.rows();
  assert.equal(rows.size, messageCount);
  assert.ok([...rows.values()].every((count) => count === 1), 'each message applied once');
});
