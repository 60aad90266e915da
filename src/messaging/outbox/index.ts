// The transactional outbox: write events in the same local transaction as the business change
// (`add`), and let an OutboxRelay publish them to RabbitMQ or JetStream after commit.
export {
  OutboxRelay,
  OutboxInputError,
  defaultOutboxTableName,
  outboxBodyBytesMax,
  outboxHeadersBytesMax,
  outboxMessageIdBytesMax,
  outboxTableNameCharsMax,
  purgePublished,
  relayBatchSizeMax,
  relayDefaults,
  retryDelayMs,
  type BatchResult,
  type OutboxAdded,
  type OutboxMessage,
  type OutboxOptions,
  type OutboxRelayOptions,
  type OutboxRow,
  type OutboxStore,
  type RowOutcome,
} from './relay.js';
export { InvalidPurgeOption, purgeBatchMaxLimit, type PurgeOptions } from '../../shared/purge.js';
export { PostgresOutbox } from './postgres.js';
export { MysqlOutbox } from './mysql.js';
export { SqliteOutbox, sqliteClaimTtlMs, type SqliteOutboxOptions } from './sqlite.js';
