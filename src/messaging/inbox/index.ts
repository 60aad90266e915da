export * from './common.js';
export { SqliteInbox, sqliteInboxQueuedCallsMax, type SqliteInboxOptions } from './sqlite.js';
export { PostgresInbox } from './postgres.js';
export { MysqlInbox } from './mysql.js';
