// The inbox: an idempotent consumer's memory of the messages it applied, kept in the
// consumer's own database. The inbox row is inserted in the same local transaction as the
// message's effect, so both commit or neither does; the primary key (consumer, message_id)
// turns a second delivery into a no-op, and makes a concurrent second delivery wait for the
// first one's commit (then skip) or rollback (then apply).

import type { PurgeOptions } from '../../shared/purge.js';

export { InvalidPurgeOption, purgeBatchMaxLimit, type PurgeOptions } from '../../shared/purge.js';

export type InboxResult<T> = { applied: true; value: T } | { applied: false; reason: 'duplicate' };

/** The shape the three backends share; `Tx` is the driver's handle on the local transaction. */
export interface Inbox<Tx> {
  readonly consumer: string;
  readonly tableName: string;
  ensureSchema(): Promise<void>;
  /**
   * Runs `fn` in a local transaction that also records `messageId` for this consumer, unless
   * it was recorded before. A throw from `fn` rolls both back and is rethrown.
   */
  applyOnce<T>(messageId: string, fn: (tx: Tx) => Promise<T>): Promise<InboxResult<T>>;
  /**
   * Forgets up to `batchMax` of this consumer's messages received longer than `olderThanMs`
   * ago (on the database's clock); returns how many. `olderThanMs` 0 forgets nothing. A
   * message delivered again after its row went is applied again, so keep rows longer than the
   * broker may redeliver (its retention, or the outbox relay's retries).
   */
  purgeOlderThan(options: PurgeOptions): Promise<number>;
}

export type InboxOptions = {
  /** Who consumes: one service (or one handler) sharing the table with others. */
  consumer: string;
  /** Default `tandem_inbox`; must be a plain SQL identifier (letters, digits, underscore). */
  tableName?: string;
};

export const defaultInboxTableName = 'tandem_inbox';

/**
 * Key limits in UTF-8 bytes, matching the column sizes. A coordinator message id is
 * `<gid>/<branchId>` (128 + 1 + 128 bytes), hence 320. Checked up front because MySQL's
 * INSERT IGNORE would truncate an overlong id with only a warning, merging two messages.
 */
export const inboxMessageIdBytesMax = 320;
export const inboxConsumerBytesMax = 128;

/** Thrown for an empty or overlong message id or consumer name. */
export class InvalidInboxKey extends Error {
  constructor(readonly field: 'messageId' | 'consumer', problem: string) {
    super(`inbox: ${field} ${problem}`);
    this.name = 'InvalidInboxKey';
  }
}

export function assertMessageId(messageId: string): void {
  if (typeof messageId !== 'string' || messageId === '') throw new InvalidInboxKey('messageId', 'is missing');
  const bytes = Buffer.byteLength(messageId, 'utf8');
  if (bytes > inboxMessageIdBytesMax) {
    throw new InvalidInboxKey('messageId', `is ${bytes} bytes, longer than inboxMessageIdBytesMax (${inboxMessageIdBytesMax})`);
  }
}

export function validConsumer(consumer: string): string {
  if (typeof consumer !== 'string' || consumer === '') throw new InvalidInboxKey('consumer', 'is missing');
  if (Buffer.byteLength(consumer, 'utf8') > inboxConsumerBytesMax) {
    throw new InvalidInboxKey('consumer', `is longer than inboxConsumerBytesMax (${inboxConsumerBytesMax}) bytes`);
  }
  return consumer;
}

const identifierPattern = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export function validTableName(tableName: string | undefined): string {
  const name = tableName ?? defaultInboxTableName;
  if (!identifierPattern.test(name)) {
    throw new Error(`inbox table name must be a plain SQL identifier (letters, digits, _), got ${JSON.stringify(name)}`);
  }
  return name;
}
