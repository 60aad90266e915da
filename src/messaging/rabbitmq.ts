// RabbitMQ publishing with publisher confirms, and the topology helper consumers and tests use.
//
// A publish resolves only when the broker has confirmed it AND did not return it as
// unroutable. With `mandatory`, RabbitMQ sends basic.return before the basic.ack of the same
// message, so a return marks the matching pending publish and its ack then rejects it.
// Everything that can go wrong (nack, unroutable, channel or connection closed before the ack,
// no ack in time) rejects with PublishError; the caller publishes again with the same
// messageId and the consumer's inbox drops the copies (RabbitMQ itself does not de-duplicate).
import { setTimeout as delay } from 'node:timers/promises';
import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, Message } from 'amqplib';
import { errorText, InFlightLimit, PublishError, type BrokerName, type OutgoingMessage, type Publisher } from './types.js';

export type RabbitPublisherOptions = {
  /** Publishes handed to the broker and not yet confirmed; more wait their turn. */
  inFlightMax: number;
  /** Publishes waiting for an in-flight slot; more are refused with PublishError. */
  waitingPublishesMax: number;
  /** A publish with no confirm after this long rejects (a stuck broker or half-open socket). */
  confirmTimeoutMs: number;
  /** Connection (or channel) attempts one publish makes before it gives up. */
  reconnectAttemptsMax: number;
  /** Wait before the second attempt; doubles per attempt up to reconnectBackoffMsMax. */
  reconnectBackoffMs: number;
  reconnectBackoffMsMax: number;
  /** AMQP heartbeat, so a silently dead connection is noticed; used unless the URL sets one. */
  heartbeatSeconds: number;
  /** TCP connect timeout of one attempt. */
  connectTimeoutMs: number;
  /** Exchanges remembered as existing (checked once each); the memory is reset when full. */
  knownExchangesMax: number;
};

export const defaultRabbitPublisherOptions: Readonly<RabbitPublisherOptions> = Object.freeze({
  inFlightMax: 256,
  waitingPublishesMax: 10_000,
  confirmTimeoutMs: 10_000,
  reconnectAttemptsMax: 5,
  reconnectBackoffMs: 100,
  reconnectBackoffMsMax: 2_000,
  heartbeatSeconds: 10,
  connectTimeoutMs: 5_000,
  knownExchangesMax: 1_000,
});

/** One publish waiting for its confirm on one channel. */
type PendingPublish = {
  messageId: string;
  /** Set by basic.return, which arrives before the ack of the same message. */
  returned?: string;
  settle(error?: PublishError): void;
};

/** A confirm channel and the publishes it owes an answer to. */
type Session = {
  channel: ConfirmChannel;
  pending: PendingPublish[];
  closed: boolean;
  closeReason?: string;
  /** Set while the channel's write buffer is full; publishes wait for 'drain'. */
  drained?: Promise<void>;
};

export class RabbitPublisher implements Publisher {
  readonly broker: BrokerName = 'rabbitmq';
  private readonly url: string;
  private readonly options: RabbitPublisherOptions;
  private readonly limit: InFlightLimit;
  private connection: ChannelModel | null = null;
  private connectionError: string | undefined;
  private session: Session | null = null;
  private opening: Promise<Session> | null = null;
  private readonly knownExchanges = new Set<string>(['']);
  private readonly probing = new Map<string, Promise<void>>();
  private readonly publishing = new Set<Promise<void>>();
  private closing = false;

  private constructor(url: string, options: RabbitPublisherOptions) {
    this.url = withHeartbeat(url, options.heartbeatSeconds);
    this.options = options;
    this.limit = new InFlightLimit(options.inFlightMax, options.waitingPublishesMax);
  }

  /** Connects and opens the confirm channel; rejects with PublishError if it cannot. */
  static async connect(url: string, options: Partial<RabbitPublisherOptions> = {}): Promise<RabbitPublisher> {
    const publisher = new RabbitPublisher(url, { ...defaultRabbitPublisherOptions, ...options });
    await publisher.currentSession();
    return publisher;
  }

  publish(message: OutgoingMessage): Promise<void> {
    const run = this.publishNow(message);
    const tracked = run.catch(() => undefined);
    this.publishing.add(tracked);
    void tracked.then(() => this.publishing.delete(tracked));
    return run;
  }

  /** Stops taking publishes, waits for those in flight to settle, then closes the connection. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.publishing]);
    const connection = this.connection;
    this.connection = null;
    this.session = null;
    if (connection) await connection.close().catch(() => undefined);
  }

  private async publishNow(message: OutgoingMessage): Promise<void> {
    const target = message.target;
    if (target.broker !== 'rabbitmq') throw new PublishError(`rabbitmq publisher cannot publish to ${target.broker}`, true);
    if (message.messageId === '') throw new PublishError('rabbitmq: messageId is empty', true);
    if (this.closing) throw new PublishError('rabbitmq publisher is closed', true);
    await this.limit.acquire();
    try {
      if (this.closing) throw new PublishError('rabbitmq publisher is closed', true);
      await this.ensureExchange(target.exchange);
      const session = await this.currentSession();
      if (session.drained) await session.drained;
      await this.publishOn(session, target.exchange, target.routingKey, message);
    } finally {
      this.limit.release();
    }
  }

  private publishOn(session: Session, exchange: string, routingKey: string, message: OutgoingMessage): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const pending: PendingPublish = {
        messageId: message.messageId,
        settle: (error) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const index = session.pending.indexOf(pending);
          if (index >= 0) session.pending.splice(index, 1);
          if (error) reject(error);
          else resolve();
        },
      };
      const timer = setTimeout(() => {
        pending.settle(new PublishError(`rabbitmq: no confirm for ${message.messageId} within confirmTimeoutMs (${this.options.confirmTimeoutMs}); publish it again`));
      }, this.options.confirmTimeoutMs);
      session.pending.push(pending);
      if (session.closed) {
        pending.settle(this.channelClosedError(session, message.messageId));
        return;
      }
      let written: boolean;
      try {
        written = session.channel.publish(
          exchange,
          routingKey,
          message.body,
          {
            persistent: true,
            mandatory: true,
            messageId: message.messageId,
            headers: message.headers ?? {},
            contentType: message.contentType,
            timestamp: Math.floor(Date.now() / 1000),
          },
          (error: unknown) => this.onConfirm(session, pending, error),
        );
      } catch (error) {
        // amqplib throws synchronously on a channel that is closing or closed.
        pending.settle(new PublishError(`rabbitmq: could not write ${message.messageId}: ${errorText(error)}; publish it again`));
        return;
      }
      if (!written) waitForDrain(session);
    });
  }

  private onConfirm(session: Session, pending: PendingPublish, error: unknown): void {
    if (error === null || error === undefined) {
      if (pending.returned !== undefined) {
        // Not permanent: a queue may be bound to the exchange later.
        pending.settle(new PublishError(`rabbitmq: ${pending.messageId} was unroutable (${pending.returned}); no queue is bound for it`, false));
      } else {
        pending.settle();
      }
      return;
    }
    if (errorText(error) === 'message nacked') {
      pending.settle(new PublishError(`rabbitmq: the broker refused ${pending.messageId} (nack)`, false));
      return;
    }
    pending.settle(this.channelClosedError(session, pending.messageId));
  }

  private channelClosedError(session: Session, messageId: string): PublishError {
    const reason = session.closeReason ?? this.connectionError ?? 'channel closed';
    return new PublishError(`rabbitmq: the channel closed before the broker confirmed ${messageId} (${reason}); publish it again`);
  }

  /** The open confirm channel, opening a connection and channel first when needed. */
  private currentSession(): Promise<Session> {
    if (this.session && !this.session.closed) return Promise.resolve(this.session);
    this.opening ??= this.openSession().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  private async openSession(): Promise<Session> {
    let lastError: unknown;
    for (let attempt = 0; attempt < this.options.reconnectAttemptsMax; attempt += 1) {
      if (attempt > 0) await delay(backoffMs(attempt, this.options));
      if (this.closing) throw new PublishError('rabbitmq publisher is closed', true);
      try {
        const connection = this.connection ?? (await this.openConnection());
        const channel = await connection.createConfirmChannel();
        this.session = this.adopt(channel);
        return this.session;
      } catch (error) {
        lastError = error;
        this.dropConnection();
      }
    }
    throw new PublishError(`rabbitmq: no connection after reconnectAttemptsMax (${this.options.reconnectAttemptsMax}) attempts: ${errorText(lastError)}`);
  }

  private async openConnection(): Promise<ChannelModel> {
    const connection = await amqp.connect(this.url, { timeout: this.options.connectTimeoutMs });
    this.connectionError = undefined;
    connection.on('error', (error: unknown) => {
      this.connectionError = `connection error: ${errorText(error)}`;
    });
    connection.on('close', () => {
      this.connectionError ??= 'connection closed';
      if (this.connection === connection) this.connection = null;
    });
    this.connection = connection;
    return connection;
  }

  /** Forgets a connection that failed us; closing it also closes its channels. */
  private dropConnection(): void {
    const connection = this.connection;
    this.connection = null;
    if (connection) connection.close().catch(() => undefined);
  }

  private adopt(channel: ConfirmChannel): Session {
    const session: Session = { channel, pending: [], closed: false };
    channel.on('return', (returned: Message) => markReturned(session, returned));
    // 'error' comes before 'close' and carries the server's reason (e.g. 404 NOT_FOUND).
    channel.on('error', (error: unknown) => {
      session.closeReason = errorText(error);
    });
    channel.on('close', () => {
      session.closed = true;
      if (this.session === session) this.session = null;
      for (const pending of [...session.pending]) pending.settle(this.channelClosedError(session, pending.messageId));
    });
    return session;
  }

  /**
   * Publishing to a missing exchange makes the server close the channel, failing every other
   * publish in flight on it. So each exchange is checked once, on a throwaway channel, before
   * the first publish to it.
   */
  private async ensureExchange(exchange: string): Promise<void> {
    if (this.knownExchanges.has(exchange)) return;
    let probe = this.probing.get(exchange);
    if (!probe) {
      probe = this.probeExchange(exchange).finally(() => this.probing.delete(exchange));
      this.probing.set(exchange, probe);
    }
    await probe;
  }

  private async probeExchange(exchange: string): Promise<void> {
    await this.currentSession();
    const connection = this.connection;
    if (!connection) throw new PublishError(`rabbitmq: connection lost while checking exchange "${exchange}"; publish it again`);
    let channel: Channel;
    try {
      channel = await connection.createChannel();
    } catch (error) {
      throw new PublishError(`rabbitmq: could not open a channel to check exchange "${exchange}": ${errorText(error)}`);
    }
    channel.on('error', () => undefined);
    try {
      await channel.checkExchange(exchange);
    } catch (error) {
      if (errorCode(error) === 404) throw new PublishError(`rabbitmq: exchange "${exchange}" does not exist (declare it first)`, true);
      throw new PublishError(`rabbitmq: could not check exchange "${exchange}": ${errorText(error)}`);
    } finally {
      await channel.close().catch(() => undefined);
    }
    if (this.knownExchanges.size >= this.options.knownExchangesMax) {
      this.knownExchanges.clear();
      this.knownExchanges.add('');
    }
    this.knownExchanges.add(exchange);
  }
}

/** Marks the earliest unanswered publish with the returned message's id. */
function markReturned(session: Session, returned: Message): void {
  const messageId: unknown = returned.properties.messageId;
  const pending = session.pending.find((candidate) => candidate.messageId === messageId && candidate.returned === undefined);
  if (pending) {
    const fields = returned.fields as { replyCode?: number; replyText?: string; exchange: string; routingKey: string };
    pending.returned = `${fields.replyCode ?? ''} ${fields.replyText ?? 'returned'}, exchange "${fields.exchange}", routing key "${fields.routingKey}"`;
  }
}

function waitForDrain(session: Session): void {
  if (session.drained) return;
  const channel = session.channel;
  session.drained = new Promise<void>((resolve) => {
    const done = () => {
      channel.off('drain', done);
      channel.off('close', done);
      session.drained = undefined;
      resolve();
    };
    channel.on('drain', done);
    channel.on('close', done);
  });
}

function backoffMs(attempt: number, options: RabbitPublisherOptions): number {
  return Math.min(options.reconnectBackoffMsMax, options.reconnectBackoffMs * 2 ** (attempt - 1));
}

function withHeartbeat(url: string, heartbeatSeconds: number): string {
  const parsed = new URL(url);
  if (!parsed.searchParams.has('heartbeat')) parsed.searchParams.set('heartbeat', String(heartbeatSeconds));
  return parsed.toString();
}


function errorCode(error: unknown): unknown {
  return typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
}

// ---------------------------------------------------------------------------------------------
// Topology

export type RabbitTopologySpec = {
  exchange: string;
  queue: string;
  /** Binding key of the queue on the exchange. */
  routingKey: string;
  /** Default 'direct'. */
  exchangeType?: 'direct' | 'topic' | 'fanout';
  /**
   * Default 'quorum': quorum queues count deliveries in the `x-delivery-count` header, which
   * the consumer uses to decide when a failing message goes to the dead-letter queue.
   */
  queueType?: 'quorum' | 'classic';
  /** Default `<queue>.dlx`. */
  deadLetterExchange?: string;
  /** Default `<queue>.dlq`. */
  deadLetterQueue?: string;
  /**
   * Quorum queues only: the broker itself dead-letters a message after this many deliveries
   * (a backstop for consumers that crash on it before they can count). Unset by default.
   */
  deliveryLimit?: number;
};

export type RabbitTopology = Required<Omit<RabbitTopologySpec, 'deliveryLimit'>> & { deliveryLimit?: number };

/**
 * Declares exchange → queue (durable, dead-lettering to a fanout DLX) → dead-letter queue.
 * Runs on its own channel, so a mismatch with an existing declaration (406) does not close a
 * channel the caller uses.
 */
export async function declareRabbitTopology(connection: ChannelModel, spec: RabbitTopologySpec): Promise<RabbitTopology> {
  const topology: RabbitTopology = {
    exchange: spec.exchange,
    queue: spec.queue,
    routingKey: spec.routingKey,
    exchangeType: spec.exchangeType ?? 'direct',
    queueType: spec.queueType ?? 'quorum',
    deadLetterExchange: spec.deadLetterExchange ?? `${spec.queue}.dlx`,
    deadLetterQueue: spec.deadLetterQueue ?? `${spec.queue}.dlq`,
    deliveryLimit: spec.deliveryLimit,
  };
  const channel = await connection.createChannel();
  channel.on('error', () => undefined);
  try {
    const queueTypeArgs = { 'x-queue-type': topology.queueType };
    await channel.assertExchange(topology.deadLetterExchange, 'fanout', { durable: true });
    await channel.assertQueue(topology.deadLetterQueue, { durable: true, arguments: queueTypeArgs });
    await channel.bindQueue(topology.deadLetterQueue, topology.deadLetterExchange, '');
    if (topology.exchange !== '') await channel.assertExchange(topology.exchange, topology.exchangeType, { durable: true });
    const queueArgs: Record<string, unknown> = { ...queueTypeArgs, 'x-dead-letter-exchange': topology.deadLetterExchange };
    if (topology.deliveryLimit !== undefined) queueArgs['x-delivery-limit'] = topology.deliveryLimit;
    await channel.assertQueue(topology.queue, { durable: true, arguments: queueArgs });
    if (topology.exchange !== '') await channel.bindQueue(topology.queue, topology.exchange, topology.routingKey);
  } finally {
    await channel.close().catch(() => undefined);
  }
  return topology;
}

/** Deletes what declareRabbitTopology declared (tests clean up with it). */
export async function deleteRabbitTopology(connection: ChannelModel, topology: RabbitTopology): Promise<void> {
  const channel = await connection.createChannel();
  channel.on('error', () => undefined);
  try {
    await channel.deleteQueue(topology.queue);
    await channel.deleteQueue(topology.deadLetterQueue);
    if (topology.exchange !== '') await channel.deleteExchange(topology.exchange);
    await channel.deleteExchange(topology.deadLetterExchange);
  } finally {
    await channel.close().catch(() => undefined);
  }
}
