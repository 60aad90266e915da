// NATS JetStream publishing. Each publish carries `Nats-Msg-Id: <messageId>`, so a republish
// within the stream's duplicate window is acknowledged as a duplicate and stored once: unlike
// RabbitMQ, the broker itself absorbs the retries the caller makes after a lost PubAck.
import { connect, headers as natsHeaders, nanos, type NatsConnection } from '@nats-io/transport-node';
import {
  JetStreamApiCodes,
  JetStreamApiError,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type PubAck,
} from '@nats-io/jetstream';
import { errorText, InFlightLimit, PublishError, type BrokerName, type OutgoingMessage, type Publisher } from './types.js';

export type JetStreamPublisherOptions = {
  /** Publishes awaiting their PubAck; more wait their turn. */
  inFlightMax: number;
  /** Publishes waiting for an in-flight slot; more are refused with PublishError. */
  waitingPublishesMax: number;
  /** A publish with no PubAck after this long rejects; the caller republishes (deduplicated). */
  publishTimeoutMs: number;
  /**
   * Reconnect attempts the NATS client makes after losing the server, before it closes the
   * connection; the next publish then opens a fresh one. (The client's own default is endless.)
   */
  reconnectAttemptsMax: number;
  /** Wait between the NATS client's reconnect attempts. */
  reconnectTimeWaitMs: number;
  /** Timeout of one initial connection attempt. */
  connectTimeoutMs: number;
};

export const defaultJetStreamPublisherOptions: Readonly<JetStreamPublisherOptions> = Object.freeze({
  inFlightMax: 256,
  waitingPublishesMax: 10_000,
  publishTimeoutMs: 5_000,
  reconnectAttemptsMax: 60,
  reconnectTimeWaitMs: 250,
  connectTimeoutMs: 5_000,
});

export class JetStreamPublisher implements Publisher {
  readonly broker: BrokerName = 'jetstream';
  private readonly url: string;
  private readonly options: JetStreamPublisherOptions;
  private readonly limit: InFlightLimit;
  private connection: { nc: NatsConnection; js: JetStreamClient } | null = null;
  private opening: Promise<{ nc: NatsConnection; js: JetStreamClient }> | null = null;
  private readonly publishing = new Set<Promise<void>>();
  private closing = false;

  private constructor(url: string, options: JetStreamPublisherOptions) {
    this.url = url;
    this.options = options;
    this.limit = new InFlightLimit(options.inFlightMax, options.waitingPublishesMax);
  }

  static async connect(url: string, options: Partial<JetStreamPublisherOptions> = {}): Promise<JetStreamPublisher> {
    const publisher = new JetStreamPublisher(url, { ...defaultJetStreamPublisherOptions, ...options });
    await publisher.current();
    return publisher;
  }

  publish(message: OutgoingMessage): Promise<void> {
    const run = this.publishNow(message);
    const tracked = run.catch(() => undefined);
    this.publishing.add(tracked);
    void tracked.then(() => this.publishing.delete(tracked));
    return run;
  }

  /** Creates the stream, or updates its subjects and duplicate window if it exists. */
  async ensureStream(name: string, subjects: string[], options: EnsureStreamOptions = {}): Promise<void> {
    const { nc } = await this.current();
    await ensureStream(nc, name, subjects, options);
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.publishing]);
    const connection = this.connection;
    this.connection = null;
    if (connection) await connection.nc.drain().catch(() => connection.nc.close());
  }

  private async publishNow(message: OutgoingMessage): Promise<void> {
    const target = message.target;
    if (target.broker !== 'jetstream') throw new PublishError(`jetstream publisher cannot publish to ${target.broker}`, true);
    if (message.messageId === '') throw new PublishError('jetstream: messageId is empty', true);
    if (this.closing) throw new PublishError('jetstream publisher is closed', true);
    await this.limit.acquire();
    try {
      if (this.closing) throw new PublishError('jetstream publisher is closed', true);
      const { js } = await this.current();
      const headers = natsHeaders();
      for (const [key, value] of Object.entries(message.headers ?? {})) headers.set(key, value);
      if (message.contentType !== undefined) headers.set('Content-Type', message.contentType);
      let ack: PubAck;
      try {
        ack = await js.publish(target.subject, message.body, {
          msgID: message.messageId,
          headers,
          timeout: this.options.publishTimeoutMs,
        });
      } catch (error) {
        throw publishErrorOf(error, target.subject, message.messageId, this.options.publishTimeoutMs);
      }
      // A duplicate ack means an earlier copy is stored: exactly what a retry wants.
      if (!ack.stream) throw new PublishError(`jetstream: PubAck for ${message.messageId} names no stream`);
    } finally {
      this.limit.release();
    }
  }

  /** The open connection; a closed one (reconnect attempts used up) is replaced. */
  private current(): Promise<{ nc: NatsConnection; js: JetStreamClient }> {
    if (this.connection && !this.connection.nc.isClosed()) return Promise.resolve(this.connection);
    this.opening ??= this.open().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  private async open(): Promise<{ nc: NatsConnection; js: JetStreamClient }> {
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: this.url,
        maxReconnectAttempts: this.options.reconnectAttemptsMax,
        reconnectTimeWait: this.options.reconnectTimeWaitMs,
        timeout: this.options.connectTimeoutMs,
        // Stack traces captured for every request cost ~5% of a publishing coordinator's CPU.
        noAsyncTraces: true,
      });
    } catch (error) {
      throw new PublishError(`jetstream: cannot connect to ${this.url}: ${errorText(error)}`);
    }
    this.connection = { nc, js: jetstream(nc, { timeout: this.options.publishTimeoutMs }) };
    return this.connection;
  }
}

function publishErrorOf(error: unknown, subject: string, messageId: string, publishTimeoutMs: number): PublishError {
  // js.publish reports "no responders" as JetStreamNotEnabled: usually no stream takes the
  // subject. Not permanent: the stream may be created, or JetStream may be electing a leader.
  if (error instanceof Error && error.name === 'JetStreamNotEnabled') {
    return new PublishError(`jetstream: no stream takes subject "${subject}" (no responders) for ${messageId}`);
  }
  if (error instanceof JetStreamApiError) {
    return new PublishError(`jetstream: the stream refused ${messageId}: ${error.message}`);
  }
  if (error instanceof Error && error.name === 'TimeoutError') {
    return new PublishError(`jetstream: no PubAck for ${messageId} within publishTimeoutMs (${publishTimeoutMs}); publish it again`);
  }
  return new PublishError(`jetstream: publish of ${messageId} failed (${errorText(error)}); publish it again`);
}

export type EnsureStreamOptions = {
  /** Republishes of one Nats-Msg-Id within this window are dropped; server default 2 min. */
  duplicateWindowMs?: number;
  /** Default 'file' (durable). */
  storage?: 'file' | 'memory';
};

/** Creates the stream, or updates its subjects and duplicate window if it already exists. */
export async function ensureStream(nc: NatsConnection, name: string, subjects: string[], options: EnsureStreamOptions = {}): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const config = {
    name,
    subjects,
    storage: options.storage === 'memory' ? StorageType.Memory : StorageType.File,
    ...(options.duplicateWindowMs === undefined ? {} : { duplicate_window: nanos(options.duplicateWindowMs) }),
  };
  try {
    await jsm.streams.info(name);
  } catch (error) {
    if (!isStreamNotFound(error)) throw error;
    await jsm.streams.add(config);
    return;
  }
  await jsm.streams.update(name, { subjects, ...(options.duplicateWindowMs === undefined ? {} : { duplicate_window: nanos(options.duplicateWindowMs) }) });
}

/** Deletes a stream if it exists (tests clean up with it). */
export async function deleteStream(nc: NatsConnection, name: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  try {
    await jsm.streams.delete(name);
  } catch (error) {
    if (!isStreamNotFound(error)) throw error;
  }
}


function isStreamNotFound(error: unknown): boolean {
  return error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound;
}
