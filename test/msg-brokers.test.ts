// Messages through the coordinator into the real RabbitMQ and JetStream while the coordinator's
// broker connections are cut mid-stream: the coordinator reaches both brokers through TCP
// proxies the test cuts and restores. Consumers (inbox in SQLite) apply every message exactly
// once; steps that failed while the brokers were unreachable are retried and arrive.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import amqp from 'amqplib';
import { connect } from '@nats-io/transport-node';
import { consumeJetStream, consumeRabbit } from '../src/messaging/consumers.js';
import { deleteStream, ensureStream } from '../src/messaging/jetstream.js';
import { declareRabbitTopology, deleteRabbitTopology } from '../src/messaging/rabbitmq.js';
import { startCoordinator } from './support/coordinator.js';
import { sqliteLedger, uniqueName, Waiter } from './support/messaging-brokers.js';
import { requireService, services } from './support/services.js';
import { TcpProxy } from './support/tcp-proxy.js';

const beforeCut = 30;
const duringCut = 10;
const afterCut = 20;

test('broker connections of the coordinator cut mid-stream: every message step reaches RabbitMQ and JetStream, applied once', { timeout: 180_000 }, async (t) => {
  for (const name of ['rabbitmq', 'nats'] as const) if (!(await requireService(t, name))) return;
  const cleanups: Array<() => Promise<unknown>> = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  const admin = await amqp.connect(services.rabbitmq.url);
  cleanups.push(() => admin.close());
  const topology = await declareRabbitTopology(admin, { exchange: uniqueName('msgcut'), queue: uniqueName('msgcut_q'), routingKey: 'k' });
  cleanups.push(() => deleteRabbitTopology(admin, topology));
  const nats = await connect({ servers: services.nats.url });
  cleanups.push(() => nats.close());
  const stream = uniqueName('MSGCUT');
  const subject = `${stream}.events`;
  await ensureStream(nats, stream, [subject]);
  cleanups.push(() => deleteStream(nats, stream));

  const rabbitLedger = await sqliteLedger();
  const natsLedger = await sqliteLedger();
  cleanups.push(() => rabbitLedger.close(), () => natsLedger.close());
  const waiter = new Waiter();
  const applied = { rabbitmq: 0, jetstream: 0 };
  const rabbitConsumer = await consumeRabbit({
    connection: admin, queue: topology.queue, inbox: rabbitLedger.inbox,
    handler: (message, tx) => rabbitLedger.record(tx, message.messageId),
    onEvent: (event) => { if (event.outcome === 'applied') applied.rabbitmq += 1; waiter.poke(); },
  });
  cleanups.push(() => rabbitConsumer.close());
  const natsConsumer = await consumeJetStream({
    connection: nats, stream, durable: uniqueName('msgcut'), inbox: natsLedger.inbox,
    handler: (message, tx) => natsLedger.record(tx, message.messageId),
    onEvent: (event) => { if (event.outcome === 'applied') applied.jetstream += 1; waiter.poke(); },
  });
  cleanups.push(() => natsConsumer.close());

  const rabbitProxy = await new TcpProxy({ host: services.rabbitmq.host, port: services.rabbitmq.port }).start();
  const natsProxy = await new TcpProxy({ host: services.nats.host, port: services.nats.port }).start();
  cleanups.push(() => rabbitProxy.stop(), () => natsProxy.stop());
  const coordinator = await startCoordinator({
    rabbitmqUrl: `amqp://guest:guest@127.0.0.1:${rabbitProxy.port}`,
    jetstreamUrl: `nats://127.0.0.1:${natsProxy.port}`,
    limits: { retryIntervalMsMax: 1000 },
  });
  cleanups.push(async () => {
    await coordinator.close();
    fs.rmSync(path.dirname(coordinator.dbPath), { recursive: true, force: true });
  });
  const submit = (index: number, waitResult = false) =>
    coordinator.client.create({
      mode: 'msg',
      retryIntervalMs: 50,
      branches: [{ action: `rabbitmq:${topology.exchange}/k`, payload: { index } }, { action: `jetstream:${subject}`, payload: { index } }],
      ...(waitResult ? { waitResult: true } : {}),
    });

  const gids: string[] = [];
  for (let index = 0; index < beforeCut; index++) gids.push((await submit(index)).gid);
  // Mid-stream: some of those are still being delivered when both connections are reset.
  await waiter.until('a first message delivered', () => applied.rabbitmq >= 1);
  await Promise.all([rabbitProxy.stop(), natsProxy.stop()]);
  for (let index = beforeCut; index < beforeCut + duringCut; index++) {
    // waitResult answers after the first round of calls, which cannot reach the broker now.
    const view = await submit(index, true);
    gids.push(view.gid);
    assert.equal(view.status, 'submitted', 'a step cannot be confirmed while the broker is unreachable');
  }
  await Promise.all([rabbitProxy.start(), natsProxy.start()]);
  for (let index = beforeCut + duringCut; index < beforeCut + duringCut + afterCut; index++) gids.push((await submit(index)).gid);

  for (const gid of gids) assert.equal((await coordinator.client.waitResult(gid, { timeoutMs: 60_000 })).status, 'succeeded', gid);
  const total = gids.length;
  await waiter.until('every step applied at both consumers', () => applied.rabbitmq >= total && applied.jetstream >= total);
  for (const [broker, ledger] of [['rabbitmq', rabbitLedger], ['jetstream', natsLedger]] as const) {
    const rows = await ledger.rows();
    const expected = gids.map((gid) => `${gid}/${broker === 'rabbitmq' ? '01' : '02'}`).sort();
    assert.deepEqual([...rows.keys()].sort(), expected, `${broker}: every message id arrived`);
    assert.ok([...rows.values()].every((count) => count === 1), `${broker}: each applied once`);
  }
});
