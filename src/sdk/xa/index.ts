// XA participants: keep a real database transaction prepared between the action and the
// coordinator's commit or rollback. `tandem/xa` in package exports is the lead's call.
export * from './common.js';
export { PostgresXa } from './postgres.js';
export { MysqlXa, UntrustedXaServer, mysqlSessionEndPollMs, mysqlSessionEndWaitMsMax, mysqlXaVersionsMin, xaServerVerdict, type XaServerVerdict } from './mysql.js';
