// The outbox relay: moves rows that the application wrote inside its own local transactions
// to a broker, and marks a row published only after the broker confirmed it.
//
// The core here knows nothing about SQL. Each database backend (postgres.ts, mysql.ts,
// sqlite.ts) implements `OutboxStore.relayBatch`: claim a bounded batch of due rows in id
// order so that no other relay can claim them, hand them to the relay, then record each row's
// outcome and release the claim. On PostgreSQL and MariaDB the claim is a row lock
// (SELECT … FOR UPDATE SKIP LOCKED) held by an open transaction until the outcomes commit; on
// SQLite it is a claim column with an owner and an expiry.
//
// Guarantees:
// - At least once: a row is marked published only after its confirm. A relay that dies
//   mid-batch leaves its rows unpublished (its transaction rolls back, or its claim expires),
//   and another relay publishes them again. Consumers drop the repeats by message id (the
//   inbox; JetStream also drops them by Nats-Msg-Id within the stream's duplicate window).
// - In the normal path (no crash, no lost commit) no row is published twice, even with several
//   relays on one table: a claimed row is invisible to other relays until it is marked.
// - Order: within a batch, publishes are issued in id order (so on one broker connection a
//   target receives them in id order). A row that fails is retried after a backoff and may
//   then arrive after rows written later; with several relays, batches run side by side and
//   their rows interleave. Consumers that need strict order must tolerate or reorder.
import type { BrokerName, OutgoingMessage, Publisher } from '../types.js';
import { checkedPurgeOptions, type PurgeOptions } from '../../shared/purge.js';
import { PublishError, parseBrokerTarget } from '../types.js';

/** One claimed row as the relay sees it. */
export interface OutboxRow {
  /** The row id as a decimal string (bigint ids do not fit a JS number everywhere). */
  id: string;
  target: string;
  messageId: string;
  body: Buffer;
  headers: Record<string, string>;
  /** Publish attempts made before this one. */
  attempts: number;
}

export type RowOutcome =
  | { id: string; published: true }
  | { id: string; published: false; error: string; retryAfterMs: number };

export interface OutboxStore {
  /** For messages only. */
  readonly tableName: string;
  /**
   * Claims up to `batchSize` due rows in id order, calls `handle` with them (possibly an empty
   * array: then it may skip calling), records the outcomes it returns, and releases the claim.
   * Returns how many rows it claimed. A throw from `handle` releases the claim unrecorded.
   */
  relayBatch(batchSize: number, handle: (rows: OutboxRow[]) => Promise<RowOutcome[]>): Promise<number>;
  /** Deletes up to `rowsMax` rows published more than `retentionMs` ago; returns how many. */
  deletePublished(retentionMs: number, rowsMax: number): Promise<number>;
  /**
   * Longest a claim may stay unrecorded before another relay may take the rows (SQLite's
   * claim expiry); undefined when the claim lasts exactly as long as the claimant lives.
   */
  readonly claimTtlMs?: number;
}

/**
 * The SDK's purge rule on an outbox: deletes up to `batchMax` rows published more than
 * `olderThanMs` ago (on the database's clock); `olderThanMs` 0 deletes nothing. Rows not yet
 * published are never deleted, however old. Each backend's `purgeOlderThan` is this.
 */
export function purgePublished(store: Pick<OutboxStore, 'deletePublished'>, options: PurgeOptions): Promise<number> {
  let checked: PurgeOptions | null;
  try {
    checked = checkedPurgeOptions(options);
  } catch (error) {
    return Promise.reject(error);
  }
  return checked ? store.deletePublished(checked.olderThanMs, checked.batchMax) : Promise.resolve(0);
}

/** Largest batch a relay may claim: one batch is one open transaction holding that many row locks. */
export const relayBatchSizeMax = 1000;

export const relayDefaults = {
  /** Rows claimed per batch. */
  batchSize: 100,
  /** Wait before looking again after a batch that was not full. */
  pollIntervalMs: 1000,
  /** A publish not confirmed within this counts as failed (it may still arrive: at-least-once). */
  publishTimeoutMs: 10_000,
  /** Backoff after a row's first failed publish; doubles with each further failure. */
  retryIntervalMs: 1000,
  /** Ceiling of the per-row backoff; also used at once for permanent errors. */
  retryIntervalMsMax: 60_000,
  /** Wait after a batch that failed as a whole (database unreachable, …). */
  errorIntervalMs: 1000,
  /** How often published rows older than `retentionMs` are deleted (when retention is set). */
  cleanupIntervalMs: 60_000,
  /** Rows one cleanup statement deletes at most, so a cleanup never holds long locks. */
  cleanupRowsMax: 1000,
  /** Characters of a publish error kept in last_error. */
  lastErrorCharsMax: 1000,
} as const;

export interface BatchResult {
  claimed: number;
  published: number;
  failed: number;
}

export interface OutboxRelayOptions {
  store: OutboxStore;
  /** One publisher per broker the rows name; a row for a broker without one fails and backs off. */
  publishers: Publisher | readonly Publisher[];
  batchSize?: number;
  pollIntervalMs?: number;
  publishTimeoutMs?: number;
  retryIntervalMs?: number;
  retryIntervalMsMax?: number;
  errorIntervalMs?: number;
  /** Delete published rows older than this; undefined keeps them (the default). */
  retentionMs?: number;
  cleanupIntervalMs?: number;
  cleanupRowsMax?: number;
  /** Errors the loop survived (a batch or a cleanup that threw); default: a line on stderr. */
  onError?: (error: unknown) => void;
  /** Called after every batch that claimed rows, e.g. for metrics or tests. */
  onBatch?: (result: BatchResult) => void;
}

function positiveInteger(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new RangeError(`outbox relay: ${name} must be an integer from 1 to ${max}, got ${value}`);
  }
  return value;
}

/** Backoff before the next try of a row that has now failed `failures` times. */
export function retryDelayMs(failures: number, retryIntervalMs: number, retryIntervalMsMax: number): number {
  const doublings = Math.min(Math.max(failures - 1, 0), 30);
  return Math.min(retryIntervalMs * 2 ** doublings, retryIntervalMsMax);
}

function errorText(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.slice(0, relayDefaults.lastErrorCharsMax);
}

/** Resolves with the publish, or rejects once `timeoutMs` passed without a confirm. */
async function publishWithin(publisher: Publisher, message: OutgoingMessage, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new PublishError(`no broker confirm within publishTimeoutMs (${timeoutMs} ms)`)), timeoutMs);
  });
  try {
    await Promise.race([publisher.publish(message), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export class OutboxRelay {
  private readonly store: OutboxStore;
  private readonly publishers = new Map<BrokerName, Publisher>();
  private readonly batchSize: number;
  private readonly pollIntervalMs: number;
  private readonly publishTimeoutMs: number;
  private readonly retryIntervalMs: number;
  private readonly retryIntervalMsMax: number;
  private readonly errorIntervalMs: number;
  private readonly retentionMs: number | undefined;
  private readonly cleanupIntervalMs: number;
  private readonly cleanupRowsMax: number;
  private readonly onError: (error: unknown) => void;
  private readonly onBatch: (result: BatchResult) => void;
  private loop: Promise<void> | undefined;
  private stopping = false;
  private wakeWaiter: (() => void) | undefined;
  private wokenEarly = false;
  private nextCleanupAtMs = 0;

  constructor(options: OutboxRelayOptions) {
    this.store = options.store;
    const publishers = Array.isArray(options.publishers) ? options.publishers : [options.publishers as Publisher];
    for (const publisher of publishers) {
      if (this.publishers.has(publisher.broker)) throw new Error(`outbox relay: two publishers for ${publisher.broker}`);
      this.publishers.set(publisher.broker, publisher);
    }
    this.batchSize = positiveInteger('batchSize', options.batchSize ?? relayDefaults.batchSize, relayBatchSizeMax);
    this.pollIntervalMs = positiveInteger('pollIntervalMs', options.pollIntervalMs ?? relayDefaults.pollIntervalMs);
    this.publishTimeoutMs = positiveInteger('publishTimeoutMs', options.publishTimeoutMs ?? relayDefaults.publishTimeoutMs);
    this.retryIntervalMs = positiveInteger('retryIntervalMs', options.retryIntervalMs ?? relayDefaults.retryIntervalMs);
    this.retryIntervalMsMax = positiveInteger('retryIntervalMsMax', options.retryIntervalMsMax ?? relayDefaults.retryIntervalMsMax);
    this.errorIntervalMs = positiveInteger('errorIntervalMs', options.errorIntervalMs ?? relayDefaults.errorIntervalMs);
    this.retentionMs = options.retentionMs === undefined ? undefined : positiveInteger('retentionMs', options.retentionMs);
    this.cleanupIntervalMs = positiveInteger('cleanupIntervalMs', options.cleanupIntervalMs ?? relayDefaults.cleanupIntervalMs);
    this.cleanupRowsMax = positiveInteger('cleanupRowsMax', options.cleanupRowsMax ?? relayDefaults.cleanupRowsMax);
    if (this.retryIntervalMs > this.retryIntervalMsMax) {
      throw new RangeError(`outbox relay: retryIntervalMs (${this.retryIntervalMs}) exceeds retryIntervalMsMax (${this.retryIntervalMsMax})`);
    }
    this.onError = options.onError ?? ((error) => console.error(`outbox relay (${this.store.tableName}): ${errorText(error)}`));
    this.onBatch = options.onBatch ?? (() => undefined);
    // A claim that can expire while its publishes are still waiting would let a second relay
    // publish the same rows in the normal path.
    const claimTtlMs = this.store.claimTtlMs;
    if (claimTtlMs !== undefined && claimTtlMs <= this.publishTimeoutMs * 2) {
      throw new RangeError(`outbox relay: the store's claim lasts ${claimTtlMs} ms; it must exceed twice publishTimeoutMs (${this.publishTimeoutMs} ms)`);
    }
  }

  get running(): boolean {
    return this.loop !== undefined;
  }

  /** Starts the loop; a second call while running does nothing. */
  start(): void {
    if (this.loop && this.stopping) throw new Error('outbox relay: start() while stopping; await stop() first');
    if (this.loop) return;
    this.stopping = false;
    this.loop = this.run().finally(() => {
      this.loop = undefined;
    });
  }

  /** Stops the loop after the batch in flight (if any) has recorded its outcomes. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake();
    await this.loop;
  }

  /** Ends the current wait at once, e.g. right after the application committed new rows. */
  wake(): void {
    if (this.wakeWaiter) this.wakeWaiter();
    else this.wokenEarly = true;
  }

  /** Claims, publishes and records one batch. The loop calls this; tests and tools may too. */
  async runOnce(): Promise<BatchResult> {
    let published = 0;
    let failed = 0;
    const claimed = await this.store.relayBatch(this.batchSize, async (rows) => {
      const outcomes = await this.publishAll(rows);
      for (const outcome of outcomes) {
        if (outcome.published) published += 1;
        else failed += 1;
      }
      return outcomes;
    });
    const result = { claimed, published, failed };
    if (claimed > 0) this.onBatch(result);
    return result;
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      let waitMs = 0;
      try {
        const { claimed } = await this.runOnce();
        // A full batch means more rows are probably due: go again without waiting.
        if (claimed < this.batchSize) waitMs = this.pollIntervalMs;
      } catch (error) {
        this.onError(error);
        waitMs = this.errorIntervalMs;
      }
      await this.cleanupWhenDue();
      if (waitMs > 0 && !this.stopping) await this.waitMs(waitMs);
    }
  }

  /** Publishes every row, issuing the publishes in id order, and awaits every confirm. */
  private publishAll(rows: OutboxRow[]): Promise<RowOutcome[]> {
    return Promise.all(rows.map((row) => this.publishRow(row)));
  }

  private async publishRow(row: OutboxRow): Promise<RowOutcome> {
    const failures = row.attempts + 1;
    const target = parseBrokerTarget(row.target);
    if ('error' in target) {
      return { id: row.id, published: false, error: `target ${target.error}`, retryAfterMs: this.retryIntervalMsMax };
    }
    const publisher = this.publishers.get(target.broker);
    if (!publisher) {
      return { id: row.id, published: false, error: `no publisher for ${target.broker}`, retryAfterMs: this.retryIntervalMsMax };
    }
    try {
      await publishWithin(publisher, { target, messageId: row.messageId, body: row.body, headers: row.headers }, this.publishTimeoutMs);
      return { id: row.id, published: true };
    } catch (error) {
      const permanent = error instanceof PublishError && error.permanent;
      const retryAfterMs = permanent ? this.retryIntervalMsMax : retryDelayMs(failures, this.retryIntervalMs, this.retryIntervalMsMax);
      return { id: row.id, published: false, error: errorText(error), retryAfterMs };
    }
  }

  private async cleanupWhenDue(): Promise<void> {
    if (this.retentionMs === undefined || this.stopping) return;
    const nowMs = Date.now();
    if (nowMs < this.nextCleanupAtMs) return;
    this.nextCleanupAtMs = nowMs + this.cleanupIntervalMs;
    try {
      await this.store.deletePublished(this.retentionMs, this.cleanupRowsMax);
    } catch (error) {
      this.onError(error);
    }
  }

  private waitMs(ms: number): Promise<void> {
    if (this.wokenEarly) {
      this.wokenEarly = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wakeWaiter = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeWaiter = done;
    });
  }
}

// ---------------------------------------------------------------------------------------------
// What `add` accepts, checked the same way by every backend before anything is written.

/** What the application writes into its outbox inside its own local transaction. */
export interface OutboxMessage {
  /** `rabbitmq:<exchange>/<routingKey>` or `jetstream:<subject>`; checked at write time. */
  target: string;
  body: Buffer | Uint8Array | string;
  headers?: Record<string, string>;
  /**
   * Consumers and JetStream de-duplicate by this. Default: a random UUID, fixed in the row, so
   * that two services' outboxes feeding one consumer never produce the same id.
   */
  messageId?: string;
}

export interface OutboxAdded {
  id: string;
  messageId: string;
}

/** Largest body `add` accepts; leaves room for headers under NATS' default 1 MiB max_payload. */
export const outboxBodyBytesMax = 512 * 1024;
/** Largest headers object, measured as its JSON text. */
export const outboxHeadersBytesMax = 16 * 1024;
/** Longest message id (the unique column's size). */
export const outboxMessageIdBytesMax = 200;
/** Longest table name; index names add a suffix and must stay within 63 bytes. */
export const outboxTableNameCharsMax = 48;
export const defaultOutboxTableName = 'tandem_outbox';

export interface OutboxOptions {
  /** Default `tandem_outbox`; a plain SQL identifier (letters, digits, _). */
  tableName?: string;
  /** Default `outboxBodyBytesMax`. */
  bodyBytesMax?: number;
}

/** Bad input to `add`; `field` names the offending field. Nothing was written. */
export class OutboxInputError extends Error {
  readonly field: string;
  constructor(field: string, problem: string) {
    super(`outbox: ${field} ${problem}`);
    this.name = 'OutboxInputError';
    this.field = field;
  }
}

/** A message checked and turned into column values. */
export interface OutboxRowValues {
  target: string;
  messageId: string;
  body: Buffer;
  headersJson: string;
}

const identifierPattern = new RegExp(`^[A-Za-z_][A-Za-z0-9_]{0,${outboxTableNameCharsMax - 1}}$`);
/** Printable ASCII without ':' (NATS and AMQP both accept these as header names). */
const headerNamePattern = /^[!-9;-~]+$/;
/** Printable, no line breaks (NATS headers are line based). */
const lineSafePattern = /^[^\r\n\0]*$/;

export function validOutboxTableName(tableName: string | undefined): string {
  const name = tableName ?? defaultOutboxTableName;
  if (!identifierPattern.test(name)) {
    throw new Error(`outbox table name must be a plain SQL identifier of at most ${outboxTableNameCharsMax} characters, got ${JSON.stringify(name)}`);
  }
  return name;
}

export function validBodyBytesMax(bodyBytesMax: number | undefined): number {
  return positiveInteger('bodyBytesMax', bodyBytesMax ?? outboxBodyBytesMax);
}

function bodyBuffer(body: unknown): Buffer {
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  throw new OutboxInputError('body', 'must be a Buffer, Uint8Array or string');
}

function headersJson(headers: unknown): string {
  if (headers === undefined) return '{}';
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) {
    throw new OutboxInputError('headers', 'must be an object of string values');
  }
  for (const [name, value] of Object.entries(headers)) {
    if (!headerNamePattern.test(name)) throw new OutboxInputError('headers', `has an invalid name ${JSON.stringify(name)}`);
    // NATS reserves these (Nats-Msg-Id carries the message id); the relay sets what it needs.
    if (/^nats-/i.test(name)) throw new OutboxInputError('headers', `name ${JSON.stringify(name)} is reserved by NATS`);
    if (typeof value !== 'string' || !lineSafePattern.test(value)) {
      throw new OutboxInputError('headers', `value of ${JSON.stringify(name)} must be a string without line breaks`);
    }
  }
  const json = JSON.stringify(headers);
  if (Buffer.byteLength(json) > outboxHeadersBytesMax) {
    throw new OutboxInputError('headers', `are longer than outboxHeadersBytesMax (${outboxHeadersBytesMax}) bytes as JSON`);
  }
  return json;
}

function messageIdOf(messageId: unknown, newId: () => string): string {
  if (messageId === undefined) return newId();
  if (typeof messageId !== 'string' || messageId === '' || !lineSafePattern.test(messageId) || messageId.trim() !== messageId) {
    throw new OutboxInputError('messageId', 'must be a non-empty string without line breaks or surrounding spaces');
  }
  if (Buffer.byteLength(messageId) > outboxMessageIdBytesMax) {
    throw new OutboxInputError('messageId', `is longer than outboxMessageIdBytesMax (${outboxMessageIdBytesMax}) bytes`);
  }
  return messageId;
}

/** Checks every field before any write, so that bad input never leaves a half-written row. */
export function outboxRowValues(message: OutboxMessage, bodyBytesMax: number, newId: () => string): OutboxRowValues {
  if (typeof message !== 'object' || message === null) throw new OutboxInputError('message', 'must be an object');
  if (typeof message.target !== 'string') throw new OutboxInputError('target', 'must be a string');
  const target = parseBrokerTarget(message.target);
  if ('error' in target) throw new OutboxInputError('target', target.error);
  const body = bodyBuffer(message.body);
  if (body.byteLength > bodyBytesMax) {
    throw new OutboxInputError('body', `is ${body.byteLength} bytes, more than outboxBodyBytesMax (${bodyBytesMax})`);
  }
  return { target: message.target, messageId: messageIdOf(message.messageId, newId), body, headersJson: headersJson(message.headers) };
}

/** Reads the headers column back; a value that is not a string map (hand-edited row) becomes {}. */
export function parseHeadersColumn(value: unknown): Record<string, string> {
  const parsed: unknown = typeof value === 'string' ? safeJson(value) : value;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return {};
  const headers: Record<string, string> = {};
  for (const [name, item] of Object.entries(parsed)) if (typeof item === 'string') headers[name] = item;
  return headers;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
