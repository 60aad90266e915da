// Two-phase messages through real crashes into the real brokers: an application process is
// SIGKILLed right after its local commit (before submit) and inside its local transaction, and
// the coordinator process is SIGKILLed right after a submit became durable (before publishing).
// Each message has two steps, one into RabbitMQ and one into JetStream; consumers with an inbox
// in PostgreSQL apply every committed message's effect exactly once, and the message whose
// local transaction rolled back is never delivered.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import amqp, { type ChannelModel } from 'amqplib';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import pg from 'pg';
import { consumeJetStream, consumeRabbit, type ConsumeEvent, type ConsumerHandle } from '../src/messaging/consumers.js';
import { PostgresInbox } from '../src/messaging/inbox/postgres.js';
import { deleteStream, ensureStream } from '../src/messaging/jetstream.js';
import { declareRabbitTopology, deleteRabbitTopology, type RabbitTopology } from '../src/messaging/rabbitmq.js';
import { PostgresBarrier } from '../src/sdk/barrier.js';
import { ChildCoordinator } from './support/child-coordinator.js';
import type { MsgAppConfig } from './support/msg-app-child.js';
import { freePort, requireService, services } from './support/services.js';

const appPath = fileURLToPath(new URL('./support/msg-app-child.js', import.meta.url));
const suffix = randomBytes(4).toString('hex');
const tables = { orders: `msgcrash_orders_${suffix}`, barrier: `msgcrash_barrier_${suffix}`, ledger: `msgcrash_ledger_${suffix}`, inbox: `msgcrash_inbox_${suffix}` };
const exchange = `msgcrash.${suffix}`;
const subject = `msgcrash.${suffix}.orders`;
const stream = `MSGCRASH_${suffix}`;
const endWaitMs = 30_000;

let pool: pg.Pool | undefined;
let rabbit: ChannelModel | undefined;
let nats: NatsConnection | undefined;
let topology: RabbitTopology | undefined;
const consumers: ConsumerHandle[] = [];

before(async () => {
  pool = new pg.Pool({ connectionString: services.postgres.url, max: 8 });
});

after(async () => {
  await Promise.all(consumers.map((consumer) => consumer.close()));
  if (rabbit && topology) await deleteRabbitTopology(rabbit, topology).catch(() => undefined);
  await rabbit?.close().catch(() => undefined);
  if (nats) await deleteStream(nats, stream).catch(() => undefined);
  await nats?.close();
  if (pool) {
    for (const table of Object.values(tables)) await pool.query(`DROP TABLE IF EXISTS ${table}`);
    await pool.end();
  }
});


interface AppLife {
  /** How the process ended, with what it wrote to stderr. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  /** Resolves when the app has submitted all its messages; rejects if it exits first. */
  done: Promise<void>;
  kill(): void;
}

/** One life of the app process. */
function runApp(config: MsgAppConfig): AppLife {
  const child = spawn(process.execPath, [appPath, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, stderr })),
  );
  const done = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.includes('done\n')) resolve();
    });
    void exited.then((end) => reject(new Error(`the app exited (${end.code ?? end.signal}) before finishing: ${end.stderr}`)));
  });
  done.catch(() => undefined);
  return { exited, done, kill: () => child.kill('SIGKILL') };
}

/** Resolves once `count` distinct effects were applied; rejects if one is applied twice. */
class Ledger {
  private readonly applied = new Set<string>();
  private waiters: Array<{ count: number; resolve: () => void }> = [];
  duplicatesDropped = 0;

  onEvent = (event: ConsumeEvent): void => {
    if (event.outcome === 'duplicate') this.duplicatesDropped += 1;
    if (event.outcome !== 'applied' || !event.messageId) return;
    this.applied.add(event.messageId);
    this.waiters = this.waiters.filter((waiter) => {
      if (this.applied.size < waiter.count) return true;
      waiter.resolve();
      return false;
    });
  };

  reach(count: number): Promise<void> {
    if (this.applied.size >= count) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }
}

test('apps and the coordinator SIGKILLed mid-message: every committed message reaches RabbitMQ and JetStream consumers exactly once; a rolled-back one never does', { timeout: 180_000 }, async (t) => {
  for (const name of ['postgres', 'rabbitmq', 'nats'] as const) if (!(await requireService(t, name))) return;
  const db = pool!;
  await db.query(`CREATE TABLE ${tables.orders} (gid TEXT PRIMARY KEY)`);
  await db.query(`CREATE TABLE ${tables.ledger} (broker TEXT NOT NULL, gid TEXT NOT NULL, message_id TEXT NOT NULL)`);
  await new PostgresBarrier(db, { tableName: tables.barrier }).ensureSchema();

  rabbit = await amqp.connect(services.rabbitmq.url);
  topology = await declareRabbitTopology(rabbit, { exchange, queue: `${exchange}.orders`, routingKey: 'orders' });
  nats = await connect({ servers: services.nats.url });
  await ensureStream(nats, stream, [subject]);

  const ledger = new Ledger();
  const effect = (broker: string) => async (message: { messageId: string; body: Buffer }, tx: pg.PoolClient) => {
    const { gid } = JSON.parse(message.body.toString()) as { gid: string };
    await tx.query(`INSERT INTO ${tables.ledger} (broker, gid, message_id) VALUES ($1, $2, $3)`, [broker, gid, message.messageId]);
  };
  const rabbitInbox = new PostgresInbox(db, { consumer: 'rabbit-orders', tableName: tables.inbox });
  const natsInbox = new PostgresInbox(db, { consumer: 'jetstream-orders', tableName: tables.inbox });
  await rabbitInbox.ensureSchema();
  consumers.push(await consumeRabbit({ connection: rabbit, queue: topology.queue, inbox: rabbitInbox, handler: effect('rabbitmq'), onEvent: ledger.onEvent }));
  consumers.push(await consumeJetStream({ connection: nats, stream, durable: `orders_${suffix}`, inbox: natsInbox, handler: effect('jetstream'), onEvent: ledger.onEvent }));

  const coordinator = new ChildCoordinator({ env: { TANDEM_RABBITMQ_URL: services.rabbitmq.url, TANDEM_JETSTREAM_URL: services.nats.url } });
  t.after(() => coordinator.dispose());
  await coordinator.start();

  const gids = Array.from({ length: 12 }, (_unused, index) => `msgcrash-${suffix}-${String(index).padStart(2, '0')}`);
  const base: Omit<MsgAppConfig, 'gids' | 'die'> = {
    coordinatorUrl: coordinator.url,
    pgUrl: services.postgres.url,
    ordersTable: tables.orders,
    barrierTable: tables.barrier,
    port: await freePort(),
    targets: [`rabbitmq:${exchange}/orders`, `jetstream:${subject}`],
  };
  const committedButNotSubmitted = gids[3];
  const rolledBack = gids[6];

  // Life 1 dies right after the local commit of gids[3]: the coordinator never hears its submit.
  const life1 = await runApp({ ...base, gids: gids.slice(0, 6), die: { gid: committedButNotSubmitted, when: 'after-local-commit' } }).exited;
  assert.equal(life1.signal, 'SIGKILL', life1.stderr);
  // Life 2 (same port, so queryPrepared answers again) dies inside the local transaction of gids[6].
  const life2 = await runApp({ ...base, gids: gids.slice(4, 9), die: { gid: rolledBack, when: 'inside-local-transaction' } }).exited;
  assert.equal(life2.signal, 'SIGKILL', life2.stderr);
  // The coordinator dies right after the next submit is durable, before it publishes anything.
  await coordinator.kill();
  await coordinator.start({ failpoints: 'after-persist:submitted/deliver' });
  const life3 = runApp({ ...base, gids: gids.slice(7) });
  t.after(() => life3.kill());
  const killed = await coordinator.waitForExit();
  assert.equal(killed.signal, 'SIGKILL', 'the coordinator died at its failpoint');
  await coordinator.restart();
  // Life 3's submit that met the dying coordinator is retried by the app until the restart;
  // then it stays up, answering queryPrepared for the message life 1 left unsubmitted.
  await life3.done;

  for (const gid of gids) {
    const end = await coordinator.client.waitResult(gid, { timeoutMs: endWaitMs });
    const expected = gid === rolledBack ? 'failed' : 'succeeded';
    assert.equal(end.status, expected, `${gid}: ${end.status}/${end.phase} ${end.reason ?? ''}`);
  }
  const delivered = gids.filter((gid) => gid !== rolledBack);
  await ledger.reach(delivered.length * 2);

  const orders = await db.query<{ gid: string }>(`SELECT gid FROM ${tables.orders} ORDER BY gid`);
  assert.deepEqual(orders.rows.map((row) => row.gid), delivered, 'the rolled-back order is not in the app database');
  const effects = await db.query<{ broker: string; gid: string; n: string }>(`SELECT broker, gid, count(*) AS n FROM ${tables.ledger} GROUP BY broker, gid ORDER BY broker, gid`);
  const expectedEffects = ['jetstream', 'rabbitmq'].flatMap((broker) => delivered.map((gid) => `${broker} ${gid} 1`));
  assert.deepEqual(effects.rows.map((row) => `${row.broker} ${row.gid} ${row.n}`), expectedEffects, 'each committed message applied exactly once per broker');
  const committedQuery = await coordinator.client.get(committedButNotSubmitted);
  assert.ok(committedQuery.history?.some((entry) => entry.phase === 'query-prepared'), 'the coordinator asked queryPrepared for the unsubmitted message');
});
