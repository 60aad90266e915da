// What every broker integration shares: where a message goes, what it carries, and the one
// promise a publisher makes (resolve only once the broker has taken responsibility for it).
// The coordinator's message steps and the outbox relay both publish through this interface.

/**
 * Where a message goes, written as a string so that it fits in a transaction step's URL:
 *   rabbitmq:<exchange>/<routingKey>   (exchange may be empty: `rabbitmq:/queue-name`)
 *   jetstream:<subject>
 */
export type BrokerTarget =
  | { broker: 'rabbitmq'; exchange: string; routingKey: string }
  | { broker: 'jetstream'; subject: string };

export type BrokerName = BrokerTarget['broker'];

export interface OutgoingMessage {
  target: BrokerTarget;
  /**
   * Stable across retries of the same logical message (the coordinator uses `<gid>/<branchId>`,
   * the outbox its row id). RabbitMQ carries it as `messageId`; JetStream as `Nats-Msg-Id`, so
   * the stream drops a republish within its duplicate window. Consumers' inboxes key on it.
   */
  messageId: string;
  body: Buffer;
  /** Extra headers, e.g. tandem-gid and tandem-branch-id. */
  headers?: Record<string, string>;
  contentType?: string;
}

/** Thrown for a publish the broker refused or could not confirm; the caller retries later. */
export class PublishError extends Error {
  constructor(
    message: string,
    /** True when retrying the same message cannot help (no such exchange, unroutable…). */
    readonly permanent = false,
  ) {
    super(message);
    this.name = 'PublishError';
  }
}

export interface Publisher {
  readonly broker: BrokerName;
  /**
   * Resolves once the broker confirmed the message (RabbitMQ publisher confirm and not
   * returned as unroutable; JetStream PubAck). Rejects with PublishError otherwise, including
   * when the connection drops before the confirm: the message may or may not have arrived,
   * so the caller must publish it again with the same messageId.
   */
  publish(message: OutgoingMessage): Promise<void>;
  close(): Promise<void>;
}

export const brokerTargetBytesMax = 512;

/** Parses a target string; returns an error message naming what is wrong instead of throwing. */
export function parseBrokerTarget(text: string): BrokerTarget | { error: string } {
  if (Buffer.byteLength(text) > brokerTargetBytesMax) return { error: `is longer than brokerTargetBytesMax (${brokerTargetBytesMax}) bytes` };
  if (text.startsWith('rabbitmq:')) {
    const rest = text.slice('rabbitmq:'.length);
    const slash = rest.indexOf('/');
    if (slash < 0) return { error: 'must be rabbitmq:<exchange>/<routingKey>' };
    const exchange = rest.slice(0, slash);
    const routingKey = rest.slice(slash + 1);
    if (exchange === '' && routingKey === '') return { error: 'needs an exchange or a routing key (queue name)' };
    return { broker: 'rabbitmq', exchange, routingKey };
  }
  if (text.startsWith('jetstream:')) {
    const subject = text.slice('jetstream:'.length);
    if (!/^[^\s*>]+$/.test(subject) || subject.startsWith('.') || subject.endsWith('.') || subject.includes('..')) {
      return { error: 'must be jetstream:<subject> with a concrete subject (no spaces or wildcards)' };
    }
    return { broker: 'jetstream', subject };
  }
  return { error: 'is not a broker target (rabbitmq:<exchange>/<routingKey> or jetstream:<subject>)' };
}

export function isBrokerTarget(text: string): boolean {
  return text.startsWith('rabbitmq:') || text.startsWith('jetstream:');
}

export function formatBrokerTarget(target: BrokerTarget): string {
  return target.broker === 'rabbitmq' ? `rabbitmq:${target.exchange}/${target.routingKey}` : `jetstream:${target.subject}`;
}

/**
 * Bounds the publishes a publisher has handed to the broker and not yet seen confirmed. One
 * beyond `inFlightMax` waits its turn (first come, first served) instead of piling up in the
 * client library's write buffer; one beyond `waitingMax` waiters is refused at once, so a
 * stalled broker turns into PublishErrors rather than unbounded memory.
 */
export class InFlightLimit {
  private inFlight = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(
    readonly inFlightMax: number,
    readonly waitingMax: number,
  ) {
    if (!Number.isInteger(inFlightMax) || inFlightMax < 1) throw new RangeError(`inFlightMax must be a positive integer, got ${inFlightMax}`);
    if (!Number.isInteger(waitingMax) || waitingMax < 0) throw new RangeError(`waitingMax must be a non-negative integer, got ${waitingMax}`);
  }

  get size(): number {
    return this.inFlight;
  }

  async acquire(): Promise<void> {
    if (this.inFlight < this.inFlightMax && this.waiters.length === 0) {
      this.inFlight += 1;
      return;
    }
    if (this.waiters.length >= this.waitingMax) {
      throw new PublishError(`more than ${this.waitingMax} publishes are waiting for one of inFlightMax (${this.inFlightMax}) slots`);
    }
    // release() hands its slot straight to the first waiter, so `inFlight` stays unchanged.
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.inFlight -= 1;
  }
}

/** The message of an error, for logs and PublishError texts. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
