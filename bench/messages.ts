// Messages per second into RabbitMQ and NATS JetStream, end to end and with confirms: through
// Tandem (two-phase messages on a coordinator; the transactional outbox and its relay) side by
// side in one run with the raw client publishing that bounds them (amqplib confirm channel,
// JetStream publish awaiting its PubAck).
//
// Every path sends the same fixed number of messages with the same bounded concurrency and the
// same ~200-byte JSON body, into a queue or stream of its own (fresh names per run, deleted at
// the end). A consumer on that queue or stream counts distinct message ids as they arrive; a
// path's figure is its messages over the time from its first send to the arrival of its last
// message ("end to end"). What the sender saw is reported too: confirms (raw), the
// coordinator's 201 (tandemMsg…), committed outbox rows (outbox…).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import amqp from 'amqplib';
import type { ChannelModel, ConfirmChannel } from 'amqplib';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, type ConsumerMessages, type JetStreamClient } from '@nats-io/jetstream';
import pg from 'pg';
import { Agent, request } from 'undici';
import { declareRabbitTopology, deleteRabbitTopology, RabbitPublisher, type RabbitTopology } from '../src/messaging/rabbitmq.js';
import { deleteStream, ensureStream, JetStreamPublisher } from '../src/messaging/jetstream.js';
import { OutboxRelay, PostgresOutbox } from '../src/messaging/outbox/index.js';
import type { Publisher } from '../src/messaging/types.js';
import { TandemClient } from '../src/sdk/client.js';
import { startChildServer, type ChildServer } from './support/children.js';
import { reportProfile } from './support/cpu-profile.js';
import { gitCommit } from './support/commit.js';
import { numberFlag, UsageError } from './support/flags.js';
import {
  cpuSecondsOfMachine,
  cpuSecondsOfPid,
  cpuSecondsOfSelf,
  formatTable,
  isMemoryBacked,
  machineInfo,
  prometheusValue,
  round,
  summarizeLatencies,
} from './support/stats.js';

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(benchDir, '..', '..');
const rabbitUrl = process.env.TANDEM_BENCH_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const jetstreamUrl = process.env.TANDEM_BENCH_JETSTREAM_URL ?? 'nats://127.0.0.1:4222';
const postgresUrl = process.env.TANDEM_BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const ratioGoal = 0.5;
/** A path whose consumer saw no new message for this long gives up waiting (the rest count as missing). */
const arrivalStallMs = 30_000;

const allPaths = ['rawRabbit', 'rawJetStream', 'tandemMsgRabbit', 'tandemMsgJetStream', 'tandemMsgBatchedRabbit', 'tandemMsgBatchedJetStream', 'outboxRabbit', 'outboxJetStream'] as const;
type PathName = (typeof allPaths)[number];
type Broker = 'rabbitmq' | 'jetstream';
type Kind = 'raw' | 'tandemMsg' | 'outbox';

const pathInfo: Record<PathName, { kind: Kind; broker: Broker; raw: PathName; label: string; sent: string }> = {
  rawRabbit: { kind: 'raw', broker: 'rabbitmq', raw: 'rawRabbit', label: 'raw amqplib, confirm channel', sent: 'confirmed' },
  rawJetStream: { kind: 'raw', broker: 'jetstream', raw: 'rawJetStream', label: 'raw JetStream publish + PubAck', sent: 'acked' },
  tandemMsgRabbit: { kind: 'tandemMsg', broker: 'rabbitmq', raw: 'rawRabbit', label: 'Tandem msg → RabbitMQ', sent: 'accepted' },
  tandemMsgJetStream: { kind: 'tandemMsg', broker: 'jetstream', raw: 'rawJetStream', label: 'Tandem msg → JetStream', sent: 'accepted' },
  // The same submits from a client with batching on: the submits of one tick share a request.
  tandemMsgBatchedRabbit: { kind: 'tandemMsg', broker: 'rabbitmq', raw: 'rawRabbit', label: 'Tandem msg, client batching → RabbitMQ', sent: 'accepted' },
  tandemMsgBatchedJetStream: { kind: 'tandemMsg', broker: 'jetstream', raw: 'rawJetStream', label: 'Tandem msg, client batching → JetStream', sent: 'accepted' },
  outboxRabbit: { kind: 'outbox', broker: 'rabbitmq', raw: 'rawRabbit', label: 'PG outbox + relay → RabbitMQ', sent: 'committed' },
  outboxJetStream: { kind: 'outbox', broker: 'jetstream', raw: 'rawJetStream', label: 'PG outbox + relay → JetStream', sent: 'committed' },
};

interface Config {
  messages: number;
  warmup: number;
  concurrency: number;
  rounds: number;
  messageBytes: number;
  paths: PathName[];
  queueType: 'quorum' | 'classic';
  sqliteSync: 'full' | 'normal';
  relayBatchSize: number;
  relays: number;
  cpuProf: boolean;
  outFile: string;
}

const help = `npm run bench -- messages [flags]
  --messages N        messages per path and round (default 10000)
  --warmup N          unrecorded messages per path before its first round (default 1000)
  --concurrency N     sends in flight at once on every path (default 64)
  --rounds N          rounds over all paths, every other one in reverse order, so that a
                      machine whose load drifts favours no path (default 3)
  --message-bytes N   size of the JSON body of every message (default 200)
  --paths LIST        comma-separated subset of ${allPaths.join(', ')}
                      (default all; a Tandem path brings in its raw counterpart)
  --queue-type T      RabbitMQ queue type for every path: quorum (Tandem's default topology)
                      or classic (default quorum)
  --sqlite-sync M     the coordinator's store: full (fsync every group commit, its default) or normal
  --relay-batch-size N  rows the outbox relay claims per batch (default 100, the relay's default)
  --relays N          outbox relays per outbox table, side by side (default 1)
  --cpu-prof          profile the coordinator (node --cpu-prof) and print its hot spots
  --out FILE          where to write the JSON (default bench/results/messages.json)
Brokers and database come from TANDEM_BENCH_RABBITMQ_URL, TANDEM_BENCH_JETSTREAM_URL and
TANDEM_BENCH_POSTGRES_URL (defaults: the local servers).`;

function parseConfig(args: string[]): Config | null {
  const { values } = parseArgs({
    args,
    options: {
      messages: { type: 'string', default: '10000' },
      warmup: { type: 'string', default: '1000' },
      concurrency: { type: 'string', default: '64' },
      rounds: { type: 'string', default: '3' },
      'message-bytes': { type: 'string', default: '200' },
      paths: { type: 'string', default: allPaths.join(',') },
      'queue-type': { type: 'string', default: 'quorum' },
      'sqlite-sync': { type: 'string', default: 'full' },
      'relay-batch-size': { type: 'string', default: '100' },
      relays: { type: 'string', default: '1' },
      'cpu-prof': { type: 'boolean', default: false },
      out: { type: 'string', default: path.join(repoRoot, 'bench', 'results', 'messages.json') },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return null;
  const queueType = values['queue-type'];
  if (queueType !== 'quorum' && queueType !== 'classic') throw new UsageError(`--queue-type must be quorum or classic, got "${queueType}"`);
  const sqliteSync = values['sqlite-sync'];
  if (sqliteSync !== 'full' && sqliteSync !== 'normal') throw new UsageError(`--sqlite-sync must be full or normal, got "${sqliteSync}"`);
  const asked = values.paths.split(',').map((name) => name.trim()).filter(Boolean);
  for (const name of asked) {
    if (!(allPaths as readonly string[]).includes(name)) throw new UsageError(`--paths: unknown path "${name}"; known: ${allPaths.join(', ')}`);
  }
  if (asked.length === 0) throw new UsageError('--paths names no path');
  // A ratio needs its baseline measured in the same run.
  const wanted = new Set<PathName>(asked.flatMap((name) => [name as PathName, pathInfo[name as PathName].raw]));
  return {
    messages: numberFlag('--messages', values.messages, { integer: true, min: 1 }),
    warmup: numberFlag('--warmup', values.warmup, { integer: true, min: 0 }),
    concurrency: numberFlag('--concurrency', values.concurrency, { integer: true, min: 1 }),
    rounds: numberFlag('--rounds', values.rounds, { integer: true, min: 1 }),
    messageBytes: numberFlag('--message-bytes', values['message-bytes'], { integer: true, min: 120 }),
    paths: allPaths.filter((name) => wanted.has(name)),
    queueType,
    sqliteSync,
    relayBatchSize: numberFlag('--relay-batch-size', values['relay-batch-size'], { integer: true, min: 1 }),
    relays: numberFlag('--relays', values.relays, { integer: true, min: 1 }),
    cpuProf: values['cpu-prof'],
    outFile: path.resolve(values.out),
  };
}

// ---------------------------------------------------------------------------------------------
// The message every path sends

/** A plausible order event, padded so that its JSON text is exactly `bytes` long. */
function payloadOf(sequence: number, bytes: number): Record<string, unknown> {
  const payload = {
    event: 'order.placed',
    orderId: `order-${String(sequence).padStart(9, '0')}`,
    customerId: `customer-${String(sequence % 9973).padStart(6, '0')}`,
    sku: 'SKU-0042-BLUE-M',
    quantity: 1 + (sequence % 5),
    amountCents: 1250 + (sequence % 1000),
    currency: 'EUR',
    note: '',
  };
  const short = bytes - Buffer.byteLength(JSON.stringify(payload));
  payload.note = 'x'.repeat(Math.max(0, short));
  return payload;
}

// ---------------------------------------------------------------------------------------------
// Counting arrivals at the consumer

/** Distinct message ids seen by one path's consumer, and when the last one came. */
class ArrivalCounter {
  private readonly seen = new Set<string>();
  duplicates = 0;
  lastArrivalMs = 0;
  private readonly sentAtMs = new Map<string, number>();
  readonly latenciesMs: number[] = [];
  private recording = false;
  private waiter: { target: number; resolve: () => void } | null = null;

  get count(): number {
    return this.seen.size;
  }

  /** Latency is recorded for messages sent while recording is on. */
  record(on: boolean): void {
    this.recording = on;
  }

  sent(messageId: string): void {
    if (this.recording) this.sentAtMs.set(messageId, performance.now());
  }

  /** The sender gave up on this message (it failed): it is no longer expected. */
  forget(messageId: string): void {
    this.sentAtMs.delete(messageId);
  }

  arrive(messageId: string): void {
    if (this.seen.has(messageId)) {
      this.duplicates++;
      return;
    }
    this.seen.add(messageId);
    const nowMs = performance.now();
    this.lastArrivalMs = nowMs;
    const sentMs = this.sentAtMs.get(messageId);
    if (sentMs !== undefined) {
      this.sentAtMs.delete(messageId);
      this.latenciesMs.push(nowMs - sentMs);
    }
    if (this.waiter && this.seen.size >= this.waiter.target) {
      const { resolve } = this.waiter;
      this.waiter = null;
      resolve();
    }
  }

  /** Resolves when `target` distinct ids have arrived, or (false) after arrivalStallMs with no new one. */
  async reach(target: number): Promise<boolean> {
    while (this.seen.size < target) {
      const before = this.seen.size;
      const reached = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          this.waiter = null;
          resolve(false);
        }, arrivalStallMs);
        this.waiter = {
          target,
          resolve: () => {
            clearTimeout(timer);
            resolve(true);
          },
        };
      });
      if (!reached && this.seen.size === before) return false;
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// Brokers: one destination (queue or stream) per path, with a counting consumer on it

interface Destination {
  /** `rabbitmq:<exchange>/<routingKey>` or `jetstream:<subject>`. */
  target: string;
  counter: ArrivalCounter;
  remove(): Promise<void>;
}

interface BrokerClients {
  rabbit: ChannelModel;
  nats: NatsConnection;
  js: JetStreamClient;
}

async function rabbitDestination(clients: BrokerClients, name: string, queueType: 'quorum' | 'classic'): Promise<Destination> {
  const topology: RabbitTopology = await declareRabbitTopology(clients.rabbit, { exchange: name, queue: name, routingKey: 'bench', queueType });
  const counter = new ArrivalCounter();
  // The consumer has a channel of its own; automatic acks, so it costs the broker as little as it can.
  const channel = await clients.rabbit.createChannel();
  channel.on('error', () => undefined);
  await channel.consume(topology.queue, (message) => {
    if (message) counter.arrive(String(message.properties.messageId));
  }, { noAck: true });
  return {
    target: `rabbitmq:${topology.exchange}/${topology.routingKey}`,
    counter,
    remove: async () => {
      await channel.close().catch(() => undefined);
      await deleteRabbitTopology(clients.rabbit, topology);
    },
  };
}

async function jetstreamDestination(clients: BrokerClients, name: string): Promise<Destination> {
  const stream = name.replace(/[^A-Za-z0-9_-]/g, '_');
  const subject = name;
  await ensureStream(clients.nats, stream, [subject]);
  const counter = new ArrivalCounter();
  // An ordered consumer: no acks, the client itself keeps the order and recovers gaps.
  const consumer = await clients.js.consumers.get(stream);
  const messages: ConsumerMessages = await consumer.consume({
    max_messages: 1000,
    callback: (message) => counter.arrive(message.headers?.get('Nats-Msg-Id') || `seq-${message.seq}`),
  });
  return {
    target: `jetstream:${subject}`,
    counter,
    remove: async () => {
      await messages.close().catch(() => undefined);
      await deleteStream(clients.nats, stream);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Senders: one message per call, the message id fixed before the send

interface Sender {
  /** Sends message `sequence` under `messageId`; resolves when the path's sender is done with it. */
  send(sequence: number, messageId: string): Promise<void>;
  close(): Promise<void>;
}

/** A connection of its own, as the coordinator and the relay have: the consumers' traffic does not share it. */
async function rawRabbitSender(destination: Destination, config: Config): Promise<Sender> {
  const connection = await amqp.connect(rabbitUrl);
  connection.on('error', () => undefined);
  const channel: ConfirmChannel = await connection.createConfirmChannel();
  channel.on('error', () => undefined);
  const [, exchange, routingKey] = /^rabbitmq:([^/]*)\/(.*)$/.exec(destination.target)!;
  return {
    send: (sequence, messageId) =>
      new Promise<void>((resolve, reject) => {
        const body = Buffer.from(JSON.stringify(payloadOf(sequence, config.messageBytes)));
        channel.publish(exchange, routingKey, body, { persistent: true, mandatory: true, messageId, contentType: 'application/json' }, (error: unknown) =>
          error ? reject(error instanceof Error ? error : new Error(String(error))) : resolve(),
        );
      }),
    close: () => connection.close().catch(() => undefined),
  };
}

async function rawJetStreamSender(destination: Destination, config: Config): Promise<Sender> {
  const nc = await natsConnect({ servers: jetstreamUrl });
  const js = jetstream(nc);
  const subject = destination.target.slice('jetstream:'.length);
  return {
    send: async (sequence, messageId) => {
      const ack = await js.publish(subject, JSON.stringify(payloadOf(sequence, config.messageBytes)), { msgID: messageId });
      if (ack.duplicate) throw new Error(`PubAck for ${messageId} says duplicate`);
    },
    close: () => nc.drain().catch(() => undefined),
  };
}

function tandemMsgSender(client: TandemClient, destination: Destination, config: Config): Sender {
  return {
    send: async (sequence, messageId) => {
      // The step's message id is `<gid>/<branchId>`; the bench picks the gid so it knows it in advance.
      const gid = messageId.slice(0, -'/01'.length);
      const view = await client.msg({ gid }).add(destination.target, payloadOf(sequence, config.messageBytes)).submit();
      if (view.status !== 'submitted' && view.status !== 'succeeded') throw new Error(`message ${gid} is ${view.status}`);
    },
    close: async () => undefined,
  };
}

interface OutboxSetup {
  pool: pg.Pool;
  outbox: PostgresOutbox;
  /** One relay unless --relays says more; they share the table (SKIP LOCKED) and the publisher. */
  relays: OutboxRelay[];
  publisher: Publisher;
  batches: { count: number; rows: number; failed: number };
}

/**
 * The application side of the outbox: one local transaction per message (BEGIN, the outbox
 * insert, COMMIT) on a pool as large as the concurrency, and after each commit the in-process
 * relay is woken, as an application does.
 */
function outboxSender(setup: OutboxSetup, destination: Destination, config: Config): Sender {
  return {
    send: async (sequence, messageId) => {
      const client = await setup.pool.connect();
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        await setup.outbox.add(client, { target: destination.target, body: JSON.stringify(payloadOf(sequence, config.messageBytes)), messageId, headers: { 'content-type': 'application/json' } });
        await client.query('COMMIT');
      } catch (error) {
        broken = error instanceof Error ? error : new Error(String(error));
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      } finally {
        client.release(broken);
      }
      for (const relay of setup.relays) relay.wake();
    },
    close: async () => undefined,
  };
}

/** `pool` is shared by both outbox paths: the application's pool, which the relay also uses. */
async function startOutbox(pool: pg.Pool, broker: Broker, tableName: string, config: Config): Promise<OutboxSetup> {
  const outbox = new PostgresOutbox(pool, { tableName });
  await outbox.ensureSchema();
  const publisher: Publisher = broker === 'rabbitmq' ? await RabbitPublisher.connect(rabbitUrl) : await JetStreamPublisher.connect(jetstreamUrl);
  const batches = { count: 0, rows: 0, failed: 0 };
  const relays = Array.from({ length: config.relays }, () =>
    new OutboxRelay({
      store: outbox,
      publishers: publisher,
      batchSize: config.relayBatchSize,
      onError: (error) => console.error(`outbox relay (${broker}): ${error instanceof Error ? error.message : String(error)}`),
      onBatch: (result) => {
        batches.count++;
        batches.rows += result.claimed;
        batches.failed += result.failed;
      },
    }),
  );
  for (const relay of relays) relay.start();
  return { pool, outbox, relays, publisher, batches };
}

async function stopOutbox(setup: OutboxSetup): Promise<void> {
  await Promise.all(setup.relays.map((relay) => relay.stop()));
  await setup.publisher.close();
  await setup.pool.query(`DROP TABLE IF EXISTS ${setup.outbox.tableName}`).catch(() => undefined);
}

/**
 * The relay alone: with the relay stopped, `count` rows are written in a few large
 * transactions (untimed), then the relay is started and timed until the consumer has them all.
 * This is the relay's own capacity, without the application's commit rate in front of it.
 */
async function measureRelayDrain(name: PathName, setup: OutboxSetup, destination: Destination, options: { runId: string; firstSequence: number; count: number; messageBytes: number }): Promise<{ rows: number; ms: number; batches: number }> {
  await Promise.all(setup.relays.map((relay) => relay.stop()));
  const rowsPerTransaction = 500;
  let next = 0;
  const writer = async () => {
    while (next < options.count) {
      const from = next;
      const to = Math.min(options.count, from + rowsPerTransaction);
      next = to;
      const client = await setup.pool.connect();
      try {
        await client.query('BEGIN');
        for (let index = from; index < to; index++) {
          const sequence = options.firstSequence + index;
          const body = JSON.stringify(payloadOf(sequence, options.messageBytes));
          await setup.outbox.add(client, { target: destination.target, body, messageId: `bench-${options.runId}-${name}-${sequence}/01`, headers: { 'content-type': 'application/json' } });
        }
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      } finally {
        client.release();
      }
    }
  };
  await Promise.all(Array.from({ length: 4 }, writer));
  const target = destination.counter.count + options.count;
  const batchesBefore = setup.batches.count;
  const startMs = performance.now();
  for (const relay of setup.relays) relay.start();
  const arrived = await destination.counter.reach(target);
  return { rows: options.count, ms: arrived ? destination.counter.lastArrivalMs - startMs : NaN, batches: setup.batches.count - batchesBefore };
}

// ---------------------------------------------------------------------------------------------
// CPU accounting: this process, the coordinator, and the brokers and database (found by name)

type CpuPart = 'benchProcess' | 'coordinator' | 'rabbitmq' | 'nats' | 'postgres' | 'restOfMachine';
type CpuSnapshot = Record<CpuPart, number>;
/** Raw readings; servers with many processes (PostgreSQL backends come and go) are kept per pid. */
type CpuReading = { single: Record<'benchProcess' | 'coordinator', number>; servers: Record<'rabbitmq' | 'nats' | 'postgres', Map<number, number>>; machine: number };

const serverCommands: Record<'rabbitmq' | 'nats' | 'postgres', readonly string[]> = {
  rabbitmq: ['beam.smp', 'erl_child_setup', 'epmd'],
  nats: ['nats-server'],
  postgres: ['postgres'],
};

/** CPU seconds per pid of every process whose command name is one of `names`. */
function cpuSecondsByPid(names: readonly string[]): Map<number, number> {
  const found = new Map<number, number>();
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return found;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const command = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (names.includes(command)) found.set(Number(entry), cpuSecondsOfPid(Number(entry)) ?? 0);
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return found;
}

function cpuReading(coordinatorPid: number | undefined): CpuReading {
  return {
    single: { benchProcess: cpuSecondsOfSelf(), coordinator: coordinatorPid === undefined ? 0 : (cpuSecondsOfPid(coordinatorPid) ?? NaN) },
    servers: { rabbitmq: cpuSecondsByPid(serverCommands.rabbitmq), nats: cpuSecondsByPid(serverCommands.nats), postgres: cpuSecondsByPid(serverCommands.postgres) },
    machine: cpuSecondsOfMachine() ?? NaN,
  };
}

/**
 * CPU used between two readings. A server process that started in between counts from zero; one
 * that ended in between is lost (its time lands in restOfMachine, as does everything the other
 * users of a shared server, e.g. other PostgreSQL clients, make it do).
 */
function cpuUsed(open: CpuReading, close: CpuReading): CpuSnapshot {
  const server = (part: 'rabbitmq' | 'nats' | 'postgres') => {
    let total = 0;
    for (const [pid, seconds] of close.servers[part]) total += seconds - (open.servers[part].get(pid) ?? 0);
    return total;
  };
  const ours = {
    benchProcess: close.single.benchProcess - open.single.benchProcess,
    coordinator: close.single.coordinator - open.single.coordinator,
    rabbitmq: server('rabbitmq'),
    nats: server('nats'),
    postgres: server('postgres'),
  };
  return { ...ours, restOfMachine: close.machine - open.machine - Object.values(ours).reduce((sum, seconds) => sum + seconds, 0) };
}

interface StoreSnapshot {
  commits: number;
  writes: number;
  commitSeconds: number;
}

async function storeSnapshot(coordinator: ChildServer | undefined): Promise<StoreSnapshot> {
  if (!coordinator) return { commits: 0, writes: 0, commitSeconds: 0 };
  const response = await request(`${coordinator.url}/metrics`);
  const text = await response.body.text();
  return {
    commits: prometheusValue(text, 'tandem_store_commit_batch_size_count') ?? NaN,
    writes: prometheusValue(text, 'tandem_store_commit_batch_size_sum') ?? NaN,
    commitSeconds: prometheusValue(text, 'tandem_store_commit_duration_seconds_sum') ?? NaN,
  };
}

// ---------------------------------------------------------------------------------------------
// One batch of one path

interface BatchResult {
  sent: number;
  failed: number;
  failureReasons: string[];
  /** From the first send to the last send the sender saw done (confirm, 201, commit). */
  sendMs: number;
  /** From the first send to the arrival of the last message; NaN if some never arrived. */
  endToEndMs: number;
  missing: number;
  sendLatenciesMs: number[];
  cpuSeconds: CpuSnapshot;
  store: StoreSnapshot;
}

/** Sends `count` messages, `concurrency` at a time, then waits for all of them at the consumer. */
async function runBatch(
  name: PathName,
  sender: Sender,
  destination: Destination,
  options: { runId: string; firstSequence: number; count: number; concurrency: number; record: boolean; coordinator?: ChildServer },
): Promise<BatchResult> {
  const { counter } = destination;
  const expectedBefore = counter.count;
  const failureReasons: string[] = [];
  const sendLatenciesMs: number[] = [];
  let failed = 0;
  let next = 0;
  let lastSendMs = 0;
  counter.record(options.record);
  const cpuOpen = cpuReading(options.coordinator?.pid);
  const storeOpen = await storeSnapshot(options.coordinator);
  const startMs = performance.now();
  const worker = async () => {
    while (next < options.count) {
      const sequence = options.firstSequence + next++;
      const messageId = `bench-${options.runId}-${name}-${sequence}/01`;
      const beganMs = performance.now();
      counter.sent(messageId);
      try {
        await sender.send(sequence, messageId);
        lastSendMs = performance.now();
        if (options.record) sendLatenciesMs.push(lastSendMs - beganMs);
      } catch (error) {
        failed++;
        counter.forget(messageId);
        const reason = error instanceof Error ? error.message : String(error);
        if (failureReasons.length < 5 && !failureReasons.includes(reason)) failureReasons.push(reason);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.count) }, worker));
  const sent = options.count - failed;
  // A failed send may still have arrived (a confirm lost, say); wait for the ones that succeeded.
  const arrived = await counter.reach(expectedBefore + sent);
  const endToEndMs = arrived ? counter.lastArrivalMs - startMs : NaN;
  const cpuClose = cpuReading(options.coordinator?.pid);
  const storeClose = await storeSnapshot(options.coordinator);
  counter.record(false);
  const cpuSeconds = cpuUsed(cpuOpen, cpuClose);
  return {
    sent,
    failed,
    failureReasons,
    sendMs: lastSendMs - startMs,
    endToEndMs,
    missing: Math.max(0, expectedBefore + sent - counter.count),
    sendLatenciesMs,
    cpuSeconds,
    store: { commits: storeClose.commits - storeOpen.commits, writes: storeClose.writes - storeOpen.writes, commitSeconds: storeClose.commitSeconds - storeOpen.commitSeconds },
  };
}

interface PathTotals {
  sent: number;
  failed: number;
  missing: number;
  failureReasons: string[];
  sendMs: number;
  endToEndMs: number;
  sendLatenciesMs: number[];
  cpuSeconds: CpuSnapshot;
  store: StoreSnapshot;
  rounds: Array<{ msgsPerSec: number; sentPerSec: number }>;
  relayDrain: { rows: number; ms: number; batches: number; perRound: number[] };
}

function emptyTotals(): PathTotals {
  return {
    sent: 0,
    failed: 0,
    missing: 0,
    failureReasons: [],
    sendMs: 0,
    endToEndMs: 0,
    sendLatenciesMs: [],
    cpuSeconds: { benchProcess: 0, coordinator: 0, rabbitmq: 0, nats: 0, postgres: 0, restOfMachine: 0 },
    store: { commits: 0, writes: 0, commitSeconds: 0 },
    rounds: [],
    relayDrain: { rows: 0, ms: 0, batches: 0, perRound: [] },
  };
}

function addBatch(totals: PathTotals, batch: BatchResult): void {
  totals.sent += batch.sent;
  totals.failed += batch.failed;
  totals.missing += batch.missing;
  for (const reason of batch.failureReasons) if (totals.failureReasons.length < 5 && !totals.failureReasons.includes(reason)) totals.failureReasons.push(reason);
  totals.sendMs += batch.sendMs;
  totals.endToEndMs += batch.endToEndMs;
  for (const latency of batch.sendLatenciesMs) totals.sendLatenciesMs.push(latency);
  for (const key of Object.keys(totals.cpuSeconds) as CpuPart[]) totals.cpuSeconds[key] += batch.cpuSeconds[key];
  for (const key of Object.keys(totals.store) as Array<keyof StoreSnapshot>) totals.store[key] += batch.store[key];
  totals.rounds.push({ msgsPerSec: round((batch.sent * 1000) / batch.endToEndMs, 1), sentPerSec: round((batch.sent * 1000) / batch.sendMs, 1) });
}

// ---------------------------------------------------------------------------------------------

interface PathRuntime {
  destination: Destination;
  sender: Sender;
  outbox?: OutboxSetup;
  nextSequence: number;
}

export async function main(args: string[]): Promise<void> {
  const config = parseConfig(args);
  if (!config) {
    console.log(help);
    return;
  }
  const runId = randomBytes(3).toString('hex');
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-bench-messages-'));
  const profileDir = path.join(workDir, 'profile');
  const cleanups: Array<() => Promise<unknown>> = [];
  const cleanUp = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch((error: unknown) => console.error(`cleanup: ${error instanceof Error ? error.message : String(error)}`));
  };
  const onInterrupt = () => void cleanUp().then(() => process.exit(130));
  process.once('SIGINT', onInterrupt);
  try {
    const rabbit = await amqp.connect(rabbitUrl);
    rabbit.on('error', () => undefined);
    cleanups.push(() => rabbit.close());
    const nats = await natsConnect({ servers: jetstreamUrl });
    cleanups.push(() => nats.drain());
    const clients: BrokerClients = { rabbit, nats, js: jetstream(nats) };

    const needsCoordinator = config.paths.some((name) => pathInfo[name].kind === 'tandemMsg');
    let coordinator: ChildServer | undefined;
    let agent: Agent | undefined;
    let tandem: TandemClient | undefined;
    let tandemBatching: TandemClient | undefined;
    if (needsCoordinator) {
      coordinator = await startChildServer({
        name: 'coordinator',
        script: path.join(repoRoot, 'dist', 'src', 'cli', 'main.js'),
        args: [
          'serve', '--port', '0', '--store', `sqlite:${path.join(workDir, 'tandem.db')}`, '--sqlite-sync', config.sqliteSync, '--log-level', 'warn',
          '--rabbitmq-url', rabbitUrl, '--jetstream-url', jetstreamUrl,
        ],
        nodeArgs: config.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
      });
      const started = coordinator;
      cleanups.push(() => started.stop());
      const ownAgent = new Agent({ connections: config.concurrency, pipelining: 1, keepAliveTimeout: 60_000 });
      agent = ownAgent;
      cleanups.push(() => ownAgent.close());
      tandem = new TandemClient({ url: coordinator.url, dispatcher: agent });
      tandemBatching = new TandemClient({ url: coordinator.url, dispatcher: agent, batching: { sizeMax: config.concurrency } });
    }

    console.log(
      `messages bench: ${config.messages} messages per path and round, ${config.rounds} round(s), ${config.concurrency} in flight, ` +
        `${config.messageBytes}-byte JSON bodies, ${config.queueType} queues, coordinator sqlite sync=${config.sqliteSync}; ${config.warmup} warm-up messages per path`,
    );
    let pool: pg.Pool | undefined;
    if (config.paths.some((name) => pathInfo[name].kind === 'outbox')) {
      // One connection per sender in flight, and one for each relay's batch.
      const ownPool = new pg.Pool({ connectionString: postgresUrl, max: config.concurrency + 2 * config.relays });
      ownPool.on('error', () => undefined);
      pool = ownPool;
      cleanups.push(() => ownPool.end());
    }
    const runtimes = new Map<PathName, PathRuntime>();
    for (const name of config.paths) {
      const info = pathInfo[name];
      const destinationName = `tandem.bench.${runId}.${name}`;
      const destination = info.broker === 'rabbitmq' ? await rabbitDestination(clients, destinationName, config.queueType) : await jetstreamDestination(clients, destinationName);
      cleanups.push(() => destination.remove());
      let sender: Sender;
      let outbox: OutboxSetup | undefined;
      if (info.kind === 'raw') {
        sender = info.broker === 'rabbitmq' ? await rawRabbitSender(destination, config) : await rawJetStreamSender(destination, config);
      } else if (info.kind === 'tandemMsg') {
        sender = tandemMsgSender(name.startsWith('tandemMsgBatched') ? tandemBatching! : tandem!, destination, config);
      } else {
        const started = await startOutbox(pool!, info.broker, `bench_outbox_${runId}_${info.broker}`, config);
        outbox = started;
        cleanups.push(() => stopOutbox(started));
        sender = outboxSender(started, destination, config);
      }
      cleanups.push(() => sender.close());
      runtimes.set(name, { destination, sender, outbox, nextSequence: 0 });
    }

    const totals = new Map<PathName, PathTotals>(config.paths.map((name) => [name, emptyTotals()]));
    for (let roundIndex = 0; roundIndex < config.rounds; roundIndex++) {
      const order = roundIndex % 2 === 0 ? config.paths : [...config.paths].reverse();
      console.log(`round ${roundIndex + 1}/${config.rounds}`);
      for (const name of order) {
        const runtime = runtimes.get(name)!;
        const usesCoordinator = pathInfo[name].kind === 'tandemMsg' ? coordinator : undefined;
        if (roundIndex === 0 && config.warmup > 0) {
          const warm = await runBatch(name, runtime.sender, runtime.destination, {
            runId, firstSequence: runtime.nextSequence, count: config.warmup, concurrency: config.concurrency, record: false, coordinator: usesCoordinator,
          });
          runtime.nextSequence += config.warmup;
          if (warm.failed > 0 || warm.missing > 0) console.error(`  ${name} warm-up: ${warm.failed} failed, ${warm.missing} missing: ${warm.failureReasons.join(' | ')}`);
        }
        const batch = await runBatch(name, runtime.sender, runtime.destination, {
          runId, firstSequence: runtime.nextSequence, count: config.messages, concurrency: config.concurrency, record: true, coordinator: usesCoordinator,
        });
        runtime.nextSequence += config.messages;
        const pathTotals = totals.get(name)!;
        addBatch(pathTotals, batch);
        const latest = pathTotals.rounds.at(-1)!;
        let drainText = '';
        if (runtime.outbox) {
          const drain = await measureRelayDrain(name, runtime.outbox, runtime.destination, { runId, firstSequence: runtime.nextSequence, count: config.messages, messageBytes: config.messageBytes });
          runtime.nextSequence += config.messages;
          const perSecond = round((drain.rows * 1000) / drain.ms, 1);
          pathTotals.relayDrain.rows += drain.rows;
          pathTotals.relayDrain.ms += drain.ms;
          pathTotals.relayDrain.batches += drain.batches;
          pathTotals.relayDrain.perRound.push(perSecond);
          drainText = `; relay alone drains ${Math.round(perSecond)}/s`;
        }
        console.log(
          `  ${name.padEnd(19)} ${String(Math.round(latest.msgsPerSec)).padStart(6)} msgs/s end to end  ` +
            `(${pathInfo[name].sent} ${Math.round(latest.sentPerSec)}/s${drainText})${batch.failed ? `  ${batch.failed} failed` : ''}${batch.missing ? `  ${batch.missing} missing` : ''}`,
        );
      }
    }

    const duplicates = Object.fromEntries([...runtimes].map(([name, runtime]) => [name, runtime.destination.counter.duplicates]));
    const endToEndLatencies = new Map([...runtimes].map(([name, runtime]) => [name, runtime.destination.counter.latenciesMs]));
    const relayBatches = Object.fromEntries([...runtimes].filter(([, runtime]) => runtime.outbox).map(([name, runtime]) => [name, { ...runtime.outbox!.batches }]));
    await cleanUp();
    const profile = config.cpuProf && coordinator ? reportProfile(profileDir) : null;
    const report = buildReport(config, totals, endToEndLatencies, duplicates, relayBatches, workDir, profile);
    printReport(report);
    fs.mkdirSync(path.dirname(config.outFile), { recursive: true });
    fs.writeFileSync(config.outFile, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`\nwrote ${path.relative(process.cwd(), config.outFile) || config.outFile}`);
    if ([...totals.values()].some((path) => path.failed > 0 || path.missing > 0)) {
      console.error('some messages failed or never arrived; the figures above count the others only');
      process.exitCode = 1;
    }
  } finally {
    process.off('SIGINT', onInterrupt);
    await cleanUp();
    if (!config.cpuProf) fs.rmSync(workDir, { recursive: true, force: true });
  }
}



function pathFigures(name: PathName, totals: PathTotals, endToEndLatenciesMs: number[]) {
  const endToEndS = totals.endToEndMs / 1000;
  const sendLatency = summarizeLatencies(totals.sendLatenciesMs);
  const endToEndLatency = summarizeLatencies(endToEndLatenciesMs);
  const perMessage = (seconds: number) => (totals.sent ? round((seconds * 1000) / totals.sent, 3) : null);
  return {
    description: pathInfo[name].label,
    broker: pathInfo[name].broker,
    msgsPerSec: round(totals.sent / endToEndS, 1),
    /** What the sender saw: confirms (raw), the coordinator's 201 (tandemMsg), committed rows (outbox). */
    senderDone: pathInfo[name].sent,
    senderPerSec: round((totals.sent * 1000) / totals.sendMs, 1),
    sent: totals.sent,
    failed: totals.failed,
    missing: totals.missing,
    failureReasons: totals.failureReasons,
    endToEndSeconds: round(endToEndS, 3),
    sendLatencyMs: { p50: round(sendLatency.p50Ms, 2), p99: round(sendLatency.p99Ms, 2), mean: round(sendLatency.meanMs, 2) },
    endToEndLatencyMs: { p50: round(endToEndLatency.p50Ms, 2), p99: round(endToEndLatency.p99Ms, 2), mean: round(endToEndLatency.meanMs, 2) },
    coresUsed: Object.fromEntries(Object.entries(totals.cpuSeconds).map(([part, seconds]) => [part, round(seconds / endToEndS, 2)])),
    cpuMsPerMessage: Object.fromEntries(Object.entries(totals.cpuSeconds).map(([part, seconds]) => [part, perMessage(seconds)])),
    rounds: totals.rounds,
    ...(pathInfo[name].kind === 'outbox'
      ? {
          relayDrain: {
            description: 'relay alone: rows written beforehand (untimed), relay started, timed until the consumer counted them all',
            msgsPerSec: round((totals.relayDrain.rows * 1000) / totals.relayDrain.ms, 1),
            rows: totals.relayDrain.rows,
            rowsPerBatch: totals.relayDrain.batches ? round(totals.relayDrain.rows / totals.relayDrain.batches, 1) : null,
            perRound: totals.relayDrain.perRound,
          },
        }
      : {}),
  };
}

function buildReport(
  config: Config,
  totals: Map<PathName, PathTotals>,
  endToEndLatencies: Map<PathName, number[]>,
  duplicates: Record<string, number>,
  relayBatches: Record<string, { count: number; rows: number; failed: number }>,
  workDir: string,
  profile: ReturnType<typeof reportProfile>,
) {
  const paths = Object.fromEntries(config.paths.map((name) => [name, pathFigures(name, totals.get(name)!, endToEndLatencies.get(name) ?? [])])) as Record<PathName, ReturnType<typeof pathFigures>>;
  const summary: Record<string, number> = {};
  for (const name of config.paths) summary[`${name}MsgsPerSec`] = paths[name].msgsPerSec;
  for (const name of config.paths) {
    const info = pathInfo[name];
    if (info.kind === 'raw') continue;
    summary[`${name}RatioToRaw`] = round(paths[name].msgsPerSec / paths[info.raw].msgsPerSec, 3);
    summary[`${name}${info.kind === 'tandemMsg' ? 'Accepted' : 'Committed'}PerSec`] = paths[name].senderPerSec;
    const drain = paths[name].relayDrain;
    if (drain) {
      summary[`${name}RelayDrainMsgsPerSec`] = drain.msgsPerSec;
      summary[`${name}RelayDrainRatioToRaw`] = round(drain.msgsPerSec / paths[info.raw].msgsPerSec, 3);
    }
  }
  summary.ratioGoal = ratioGoal;
  const tandemStore = (['tandemMsgRabbit', 'tandemMsgJetStream', 'tandemMsgBatchedRabbit', 'tandemMsgBatchedJetStream'] as const).filter((name) => totals.has(name)).map((name) => {
    const { store, sent, endToEndMs } = totals.get(name)!;
    return [name, {
      commitsPerSec: round(store.commits / (endToEndMs / 1000), 1),
      averageBatchSize: round(store.writes / store.commits, 2),
      averageCommitMs: round((store.commitSeconds * 1000) / store.commits, 3),
      writesPerMessage: sent ? round(store.writes / sent, 2) : null,
    }] as const;
  });
  return {
    benchmark: 'messages',
    finishedAt: new Date().toISOString(),
    summary,
    config: {
      messagesPerPathAndRound: config.messages,
      warmupMessagesPerPath: config.warmup,
      concurrency: config.concurrency,
      rounds: config.rounds,
      messageBytes: config.messageBytes,
      paths: config.paths,
      rabbitQueueType: config.queueType,
      coordinatorStore: 'sqlite',
      sqliteSync: config.sqliteSync,
      storeOnMemoryFilesystem: isMemoryBacked(workDir),
      relayBatchSize: config.relayBatchSize,
      relaysPerOutboxTable: config.relays,
      endToEnd: 'from the first send of a round to the arrival of its last message at a consumer on the queue/stream (distinct message ids)',
      processes: 'load generator, consumers and outbox relay (this process); coordinator (child process); RabbitMQ, NATS, PostgreSQL (local servers)',
    },
    machine: machineInfo(),
    commit: gitCommit(repoRoot),
    paths,
    coordinatorStore: Object.fromEntries(tandemStore),
    outboxRelayBatches: relayBatches,
    consumerDuplicates: duplicates,
    ...(profile ? { coordinatorProfile: { file: profile.file, byPlace: profile.top.byPlace.slice(0, 10), byFunction: profile.top.byFunction.slice(0, 10) } } : {}),
  };
}

function printReport(report: ReturnType<typeof buildReport>): void {
  const rows = [['path', 'msgs/s e2e', 'ratio', 'sender/s', 'e2e p50 ms', 'e2e p99 ms', 'failed', 'cpu bench', 'cpu coord', 'cpu rabbit', 'cpu nats', 'cpu pg', 'cpu rest']];
  for (const [name, figures] of Object.entries(report.paths)) {
    const ratio = report.summary[`${name}RatioToRaw`];
    const cores = figures.coresUsed;
    rows.push([
      `${name} (${figures.description})`,
      figures.msgsPerSec.toFixed(0),
      ratio === undefined ? '1' : ratio.toFixed(3),
      `${figures.senderPerSec.toFixed(0)} ${figures.senderDone}`,
      figures.endToEndLatencyMs.p50.toFixed(1),
      figures.endToEndLatencyMs.p99.toFixed(1),
      String(figures.failed + figures.missing),
      ...(['benchProcess', 'coordinator', 'rabbitmq', 'nats', 'postgres', 'restOfMachine'] as const).map((part) => String(cores[part])),
    ]);
  }
  console.log(`\n${formatTable(rows)}`);
  console.log(`\nratio goal: ≥ ${ratioGoal} of the raw publish into the same broker (cpu columns: cores used during the path's rounds)`);
  for (const [name, store] of Object.entries(report.coordinatorStore)) {
    console.log(`${name} store: ${store.commitsPerSec} commits/s, ${store.averageBatchSize} writes per commit, ${store.averageCommitMs} ms per commit, ${store.writesPerMessage} writes per message`);
  }
  for (const [name, batches] of Object.entries(report.outboxRelayBatches)) {
    const drain = report.paths[name as PathName].relayDrain!;
    console.log(
      `${name} relay (whole run): ${batches.count} batches, ${batches.count ? round(batches.rows / batches.count, 1) : 0} rows per batch, ${batches.failed} failed publishes; ` +
        `alone (backlog drain) ${drain.msgsPerSec} msgs/s = ${report.summary[`${name}RelayDrainRatioToRaw`]} of raw`,
    );
  }
  for (const [name, figures] of Object.entries(report.paths)) {
    if (figures.failureReasons.length) console.log(`${name} failures, e.g.: ${figures.failureReasons.join(' | ')}`);
  }
}
