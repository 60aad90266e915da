// Idempotent consumers for RabbitMQ and JetStream. Brokers deliver at least once, so each
// message's effect runs through the inbox: the effect and the inbox row commit together, and
// a redelivery (or a republish after a lost confirm) finds the row and is acknowledged
// without running the handler again. The broker ack comes only after the commit; a crash in
// between means one more delivery, which the inbox drops.
//
// A handler that throws gets the message redelivered until it has been delivered
// `deliveriesMax` times; then it goes to the dead-letter path (RabbitMQ: nack without
// requeue, so the queue's dead-letter exchange takes it; JetStream: term()).
import { setTimeout as delay } from 'node:timers/promises';
import amqp from 'amqplib';
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, JetStreamApiCodes, JetStreamApiError, jetstream, jetstreamManager, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { InvalidInboxKey, type Inbox } from './inbox/common.js';
import { errorText, type BrokerName } from './types.js';

export type IncomingMessage = {
  broker: BrokerName;
  messageId: string;
  body: Buffer;
  /** String-valued headers (broker-internal structured headers such as x-death are left out). */
  headers: Record<string, string>;
  contentType?: string;
  /** 1 on the first delivery. */
  deliveryCount: number;
  /** The routing key (RabbitMQ) or subject (JetStream) the message was published with. */
  subject: string;
};

export type MessageHandler<Tx> = (message: IncomingMessage, tx: Tx) => Promise<void>;

/** What became of one delivery. */
export type ConsumeOutcome = 'applied' | 'duplicate' | 'retry' | 'dead-lettered' | 'rejected';

export type ConsumeEvent = {
  outcome: ConsumeOutcome;
  /** Absent only for a message rejected for having none. */
  messageId?: string;
  deliveryCount: number;
  /** Why, for retry, dead-lettered and rejected. */
  reason?: string;
};

export type ConsumerHandle = {
  /** Stops taking deliveries and waits for the handlers in flight to finish and ack. */
  close(): Promise<void>;
  /** Deliveries by outcome so far. */
  readonly counts: Readonly<Record<ConsumeOutcome, number>>;
};

type CommonConsumeOptions<Tx> = {
  inbox: Inbox<Tx>;
  handler: MessageHandler<Tx>;
  /** Deliveries of one message before it goes to the dead-letter path; default consumerDeliveriesMax. */
  deliveriesMax?: number;
  /** Messages handled at once (RabbitMQ prefetch; JetStream pull batch); default consumerPrefetch. */
  prefetch?: number;
  /** Called after each delivery is settled; tests await progress with it. */
  onEvent?: (event: ConsumeEvent) => void;
  /** Where reasons for rejected and dead-lettered messages go; default console.warn. */
  log?: (line: string) => void;
};

export const consumerDeliveriesMax = 5;
export const consumerPrefetch = 16;
/** Pause before a failed message is requeued, so a failing handler does not spin. */
export const consumerRedeliveryDelayMs = 100;
/** JetStream: how long a delivery may stay unacknowledged before the server redelivers it. */
export const consumerAckWaitMs = 30_000;
/** RabbitMQ classic queues carry no delivery count; failures are counted here, bounded. */
export const consumerFailureCountsMax = 10_000;

function newCounts(): Record<ConsumeOutcome, number> {
  return { applied: 0, duplicate: 0, retry: 0, 'dead-lettered': 0, rejected: 0 };
}


/** Options are programmer input: a bad limit is a bug, so it throws at once. */
function assertLimits<Tx>(options: CommonConsumeOptions<Tx>): void {
  for (const [name, value] of [
    ['deliveriesMax', options.deliveriesMax],
    ['prefetch', options.prefetch],
  ] as const) {
    if (value !== undefined && (!Number.isInteger(value) || value < 1)) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
}

/** Runs one delivery through the inbox; the broker-specific parts are callbacks. */
async function settleDelivery<Tx>(
  options: CommonConsumeOptions<Tx>,
  message: IncomingMessage,
  settle: {
    ack(): void;
    retry(): Promise<void>;
    deadLetter(reason: string): void;
  },
): Promise<ConsumeEvent> {
  const deliveriesMax = options.deliveriesMax ?? consumerDeliveriesMax;
  try {
    const result = await options.inbox.applyOnce(message.messageId, (tx) => options.handler(message, tx));
    settle.ack();
    return { outcome: result.applied ? 'applied' : 'duplicate', messageId: message.messageId, deliveryCount: message.deliveryCount };
  } catch (error) {
    const reason = errorText(error);
    if (error instanceof InvalidInboxKey || message.deliveryCount >= deliveriesMax) {
      settle.deadLetter(reason);
      return { outcome: 'dead-lettered', messageId: message.messageId, deliveryCount: message.deliveryCount, reason };
    }
    await settle.retry();
    return { outcome: 'retry', messageId: message.messageId, deliveryCount: message.deliveryCount, reason };
  }
}

/** Counts failures per message id, forgetting the oldest beyond `sizeMax`. */
class FailureCounts {
  private readonly counts = new Map<string, number>();
  constructor(private readonly sizeMax: number) {}
  get(id: string): number {
    return this.counts.get(id) ?? 0;
  }
  add(id: string): void {
    const next = this.get(id) + 1;
    this.counts.delete(id);
    if (this.counts.size >= this.sizeMax) {
      const oldest = this.counts.keys().next();
      if (!oldest.done) this.counts.delete(oldest.value);
    }
    this.counts.set(id, next);
  }
  forget(id: string): void {
    this.counts.delete(id);
  }
}

/** Tracks handler promises so that close() can wait for them. */
class InFlight {
  private readonly running = new Set<Promise<void>>();
  get size(): number {
    return this.running.size;
  }
  add(work: Promise<void>): void {
    const tracked = work.finally(() => this.running.delete(tracked));
    this.running.add(tracked);
  }
  /** Resolves when at least one running handler has finished. */
  async one(): Promise<void> {
    if (this.running.size > 0) await Promise.race(this.running);
  }
  async all(): Promise<void> {
    await Promise.all([...this.running]);
  }
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

export type RabbitConsumeOptions<Tx> = CommonConsumeOptions<Tx> & {
  /** An open connection (shared, left open) or a URL (connected here, closed by close()). */
  connection: ChannelModel | string;
  queue: string;
  /** Pause before a requeue; default consumerRedeliveryDelayMs. */
  redeliveryDelayMs?: number;
  /** Default 10 000 (consumerFailureCountsMax). */
  failureCountsMax?: number;
};

/** Pause before reopening a RabbitMQ consumer whose connection or channel closed, doubling up to the max. */
export const consumerReconnectDelayMs = 100;
export const consumerReconnectDelayMsMax = 5000;

/**
 * The delivery count comes from `x-delivery-count`, which quorum queues (the default of
 * declareRabbitTopology) maintain; on classic queues it falls back to counting failures here,
 * which a restart of the consumer forgets. When the channel or the connection closes under
 * it, the consumer reopens them (a connection of its own when given a URL; a new channel on
 * the shared connection otherwise) with backoff, until close(); unacknowledged deliveries are
 * redelivered by the broker and the inbox drops the copies.
 */
export async function consumeRabbit<Tx>(options: RabbitConsumeOptions<Tx>): Promise<ConsumerHandle> {
  assertLimits(options);
  const log = options.log ?? ((line: string) => console.warn(line));
  const owned = typeof options.connection === 'string';
  const counts = newCounts();
  const failures = new FailureCounts(options.failureCountsMax ?? consumerFailureCountsMax);
  const inFlight = new InFlight();
  let closing = false;
  let current: { connection: ChannelModel; channel: Channel; consumerTag: string } | null = null;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let reconnectDelayMs = consumerReconnectDelayMs;
  const record = (event: ConsumeEvent) => {
    counts[event.outcome] += 1;
    options.onEvent?.(event);
  };

  const onDelivery = (channel: Channel, delivery: ConsumeMessage | null) => {
    if (delivery === null) {
      log(`rabbitmq consumer ${options.queue}: the broker cancelled the consumer (queue deleted?)`);
      return;
    }
    inFlight.add(
      handleRabbitDelivery(options, channel, delivery, failures, () => closing, log).then(record, (error: unknown) => {
        log(`rabbitmq consumer ${options.queue}: ${errorText(error)}`);
      }),
    );
  };

  const open = async () => {
    const connection = typeof options.connection === 'string' ? await amqp.connect(options.connection) : options.connection;
    try {
      if (owned) connection.on('error', (error: unknown) => log(`rabbitmq consumer ${options.queue}: connection error: ${errorText(error)}`));
      const channel = await connection.createChannel();
      channel.on('error', (error: unknown) => log(`rabbitmq consumer ${options.queue}: channel error: ${errorText(error)}`));
      // A closed connection closes its channels too, so this one event covers both.
      channel.on('close', () => {
        if (current?.channel === channel) current = null;
        scheduleReconnect();
      });
      await channel.prefetch(options.prefetch ?? consumerPrefetch);
      const { consumerTag } = await channel.consume(options.queue, (delivery) => onDelivery(channel, delivery), { noAck: false });
      current = { connection, channel, consumerTag };
      reconnectDelayMs = consumerReconnectDelayMs;
    } catch (error) {
      if (owned) await connection.close().catch(() => undefined);
      throw error;
    }
  };

  function scheduleReconnect(): void {
    if (closing || reconnectTimer) return;
    log(`rabbitmq consumer ${options.queue}: channel closed; reopening in ${reconnectDelayMs} ms`);
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      open().catch((error: unknown) => {
        log(`rabbitmq consumer ${options.queue}: reopening failed: ${errorText(error)}`);
        reconnectDelayMs = Math.min(reconnectDelayMs * 2, consumerReconnectDelayMsMax);
        scheduleReconnect();
      });
    }, reconnectDelayMs);
  }

  await open();
  return {
    counts,
    close: async () => {
      if (closing) return;
      closing = true;
      clearTimeout(reconnectTimer);
      const open = current;
      if (open) await open.channel.cancel(open.consumerTag).catch(() => undefined);
      await inFlight.all();
      if (open) {
        await open.channel.close().catch(() => undefined);
        if (owned) await open.connection.close().catch(() => undefined);
      }
    },
  };
}

async function handleRabbitDelivery<Tx>(
  options: RabbitConsumeOptions<Tx>,
  channel: Channel,
  delivery: ConsumeMessage,
  failures: FailureCounts,
  closing: () => boolean,
  log: (line: string) => void,
): Promise<ConsumeEvent> {
  const rawId: unknown = delivery.properties.messageId;
  const rawHeaders = (delivery.properties.headers ?? {}) as Record<string, unknown>;
  const headerCount = typeof rawHeaders['x-delivery-count'] === 'number' ? rawHeaders['x-delivery-count'] : 0;
  if (typeof rawId !== 'string' || rawId === '') {
    const reason = 'message has no messageId property; an idempotent consumer cannot apply it';
    log(`rabbitmq consumer ${options.queue}: dead-lettering a message: ${reason}`);
    quietly(() => channel.nack(delivery, false, false), log);
    return { outcome: 'rejected', deliveryCount: headerCount + 1, reason };
  }
  const message: IncomingMessage = {
    broker: 'rabbitmq',
    messageId: rawId,
    body: delivery.content,
    headers: stringHeaders(rawHeaders),
    contentType: typeof delivery.properties.contentType === 'string' ? delivery.properties.contentType : undefined,
    deliveryCount: Math.max(headerCount, failures.get(rawId)) + 1,
    subject: delivery.fields.routingKey,
  };
  return settleDelivery(options, message, {
    ack: () => {
      failures.forget(rawId);
      quietly(() => channel.ack(delivery), log);
    },
    retry: async () => {
      failures.add(rawId);
      if (!closing()) await delay(options.redeliveryDelayMs ?? consumerRedeliveryDelayMs);
      quietly(() => channel.nack(delivery, false, true), log);
    },
    deadLetter: (reason) => {
      failures.forget(rawId);
      log(`rabbitmq consumer ${options.queue}: dead-lettering ${rawId} after ${message.deliveryCount} deliveries: ${reason}`);
      quietly(() => channel.nack(delivery, false, false), log);
    },
  });
}

/** ack/nack throw on a closed channel; the broker then redelivers, and the inbox copes. */
function quietly(settle: () => void, log: (line: string) => void): void {
  try {
    settle();
  } catch (error) {
    log(`could not settle a delivery (it will be redelivered): ${errorText(error)}`);
  }
}

function stringHeaders(raw: Record<string, unknown>): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value === 'string') headers[key] = value;
    else if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') headers[key] = String(value);
    else if (Buffer.isBuffer(value)) headers[key] = value.toString('utf8');
  }
  return headers;
}

// ---------------------------------------------------------------------------------------------
// JetStream

export type JetStreamConsumeOptions<Tx> = CommonConsumeOptions<Tx> & {
  /** An open connection (shared, left open) or a URL (connected here, closed by close()). */
  connection: NatsConnection | string;
  stream: string;
  /** Durable consumer name; created (or updated) with ack explicit and max_deliver = deliveriesMax. */
  durable: string;
  filterSubject?: string;
  /** Default consumerAckWaitMs. */
  ackWaitMs?: number;
  /** Redelivery delay asked for with nak(); default consumerRedeliveryDelayMs. */
  nakDelayMs?: number;
  /**
   * The consumer's max_ack_pending: the server sends no more while this many are unacked
   * (covers messages pulled but not yet handled); default consumerAckPendingPerPrefetch × prefetch.
   */
  ackPendingMax?: number;
};

export const consumerAckPendingPerPrefetch = 4;

export async function consumeJetStream<Tx>(options: JetStreamConsumeOptions<Tx>): Promise<ConsumerHandle> {
  assertLimits(options);
  const log = options.log ?? ((line: string) => console.warn(line));
  const owned = typeof options.connection === 'string';
  const nc = typeof options.connection === 'string' ? await connect({ servers: options.connection }) : options.connection;
  const prefetch = options.prefetch ?? consumerPrefetch;
  await ensureDurableConsumer(nc, options, prefetch);
  const consumer = await jetstream(nc).consumers.get(options.stream, options.durable);
  const messages: ConsumerMessages = await consumer.consume({ max_messages: prefetch });
  const counts = newCounts();
  const inFlight = new InFlight();

  const loop = (async () => {
    for await (const delivery of messages) {
      // Never more handlers than the pull batch: the loop waits instead of buffering.
      while (inFlight.size >= prefetch) await inFlight.one();
      inFlight.add(
        handleJetStreamDelivery(options, delivery, log).then(
          (event) => {
            counts[event.outcome] += 1;
            options.onEvent?.(event);
          },
          (error: unknown) => log(`jetstream consumer ${options.durable}: ${errorText(error)}`),
        ),
      );
    }
  })().catch((error: unknown) => log(`jetstream consumer ${options.durable} stopped: ${errorText(error)}`));

  let closed = false;
  return {
    counts,
    close: async () => {
      if (closed) return;
      closed = true;
      await messages.close();
      await loop;
      await inFlight.all();
      if (owned) await nc.drain().catch(() => undefined);
    },
  };
}

async function ensureDurableConsumer<Tx>(nc: NatsConnection, options: JetStreamConsumeOptions<Tx>, prefetch: number): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const settings = {
    max_deliver: options.deliveriesMax ?? consumerDeliveriesMax,
    ack_wait: nanos(options.ackWaitMs ?? consumerAckWaitMs),
    max_ack_pending: options.ackPendingMax ?? prefetch * consumerAckPendingPerPrefetch,
  };
  try {
    await jsm.consumers.info(options.stream, options.durable);
  } catch (error) {
    if (!(error instanceof JetStreamApiError) || error.code !== JetStreamApiCodes.ConsumerNotFound) throw error;
    await jsm.consumers.add(options.stream, {
      durable_name: options.durable,
      ack_policy: AckPolicy.Explicit,
      ...(options.filterSubject === undefined ? {} : { filter_subject: options.filterSubject }),
      ...settings,
    });
    return;
  }
  await jsm.consumers.update(options.stream, options.durable, settings);
}

async function handleJetStreamDelivery<Tx>(options: JetStreamConsumeOptions<Tx>, delivery: JsMsg, log: (line: string) => void): Promise<ConsumeEvent> {
  const messageId = delivery.headers?.get('Nats-Msg-Id') ?? '';
  const deliveryCount = delivery.info.deliveryCount;
  if (messageId === '') {
    const reason = 'message has no Nats-Msg-Id header; an idempotent consumer cannot apply it';
    log(`jetstream consumer ${options.durable}: terminating stream sequence ${delivery.seq}: ${reason}`);
    // term() without a reason: servers before 2.10 only understand a bare +TERM.
    delivery.term();
    return { outcome: 'rejected', deliveryCount, reason };
  }
  const message: IncomingMessage = {
    broker: 'jetstream',
    messageId,
    body: Buffer.from(delivery.data),
    headers: natsHeaderRecord(delivery),
    contentType: delivery.headers?.get('Content-Type') || undefined,
    deliveryCount,
    subject: delivery.subject,
  };
  return settleDelivery(options, message, {
    ack: () => delivery.ack(),
    retry: async () => delivery.nak(options.nakDelayMs ?? consumerRedeliveryDelayMs),
    deadLetter: (reason) => {
      log(`jetstream consumer ${options.durable}: terminating ${messageId} after ${deliveryCount} deliveries: ${reason}`);
      delivery.term();
    },
  });
}

function natsHeaderRecord(delivery: JsMsg): Record<string, string> {
  const headers: Record<string, string> = {};
  if (!delivery.headers) return headers;
  for (const key of delivery.headers.keys()) headers[key] = delivery.headers.get(key);
  return headers;
}
