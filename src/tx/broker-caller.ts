// Delivers message steps whose target is a broker (rabbitmq:…, jetstream:…) instead of an HTTP
// endpoint. A step counts as delivered only once the broker confirmed it; anything else is a
// transient answer, retried with the message's backoff under the same message id, so the
// broker (JetStream) or the consumer's inbox (RabbitMQ) drops the copies a retry may make.
import { isBrokerTarget, parseBrokerTarget, type BrokerName, type Publisher } from '../messaging/types.js';
import { branchHeaders } from '../shared/protocol.js';
import type { BranchCaller, CallContext } from './engine.js';
import type { BranchCall, CallResult, Tx } from './types.js';

/** Connects on first use and again after a failed connect, so the coordinator starts with a broker down. */
export class LazyPublisher {
  private connecting: Promise<Publisher> | null = null;

  constructor(readonly broker: BrokerName, private readonly connect: () => Promise<Publisher>) {}

  get(): Promise<Publisher> {
    this.connecting ??= this.connect().catch((error: unknown) => {
      this.connecting = null;
      throw error;
    });
    return this.connecting;
  }

  async close(): Promise<void> {
    const connecting = this.connecting;
    this.connecting = null;
    if (connecting) await connecting.then((publisher) => publisher.close(), () => undefined);
  }
}

export class BrokerBranchCaller implements BranchCaller {
  private readonly publishers: ReadonlyMap<BrokerName, LazyPublisher>;

  constructor(publishers: LazyPublisher[], private readonly instanceId: string) {
    this.publishers = new Map(publishers.map((publisher) => [publisher.broker, publisher]));
  }

  get brokers(): ReadonlySet<BrokerName> {
    return new Set(this.publishers.keys());
  }

  async call(tx: Tx, call: BranchCall): Promise<CallResult> {
    const answer = (outcome: CallResult['outcome'], detail?: string): CallResult => ({ branchId: call.branchId, op: call.op, outcome, ...(detail ? { detail } : {}) });
    const target = parseBrokerTarget(call.url);
    if ('error' in target) return answer('transient', `step target ${call.url} ${target.error}`);
    const lazy = this.publishers.get(target.broker);
    if (!lazy) return answer('transient', `no ${target.broker} connection is configured on coordinator ${this.instanceId}`);
    try {
      const publisher = await withTimeout(lazy.get(), tx.options.requestTimeoutMs, `connecting to ${target.broker}`);
      await withTimeout(
        publisher.publish({
          target,
          messageId: `${tx.gid}/${call.branchId}`,
          body: Buffer.from(call.payload ?? '', 'utf8'),
          contentType: 'application/json',
          headers: {
            ...tx.options.branchHeaders,
            [branchHeaders.gid]: tx.gid,
            [branchHeaders.branchId]: call.branchId,
            [branchHeaders.transType]: tx.mode,
            [branchHeaders.coordinator]: this.instanceId,
          },
        }),
        tx.options.requestTimeoutMs,
        `waiting for ${target.broker} to confirm`,
      );
      return answer('success');
    } catch (error) {
      return answer('transient', error instanceof Error ? error.message : String(error));
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.publishers.values()].map((publisher) => publisher.close()));
  }
}

/** Sends HTTP targets to one caller and broker targets to the other. */
export class RoutingBranchCaller implements BranchCaller {
  constructor(private readonly http: BranchCaller, private readonly brokers: BranchCaller) {}

  call(tx: Tx, call: BranchCall, context: CallContext): Promise<CallResult> {
    return isBrokerTarget(call.url) ? this.brokers.call(tx, call, context) : this.http.call(tx, call, context);
  }
}

function withTimeout<T>(work: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than requestTimeoutMs (${timeoutMs})`)), timeoutMs);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
