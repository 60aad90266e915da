// Wires store, engine, caller and HTTP server together: what `tandem serve` runs.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { limitsFromEnv, txDefaults, type Limits } from '../config.js';
import { openStore } from '../store/open.js';
import type { SqliteSync } from '../store/sqlite.js';
import type { Store } from '../store/store.js';
import { AbandonedAtShutdownError, Engine } from '../tx/engine.js';
import { HostClock, StoreClock, type EngineClock } from '../tx/store-clock.js';
import { WorkflowService } from '../tx/workflow-service.js';
import { HttpBranchCaller } from '../tx/http-caller.js';
import { BrokerBranchCaller, LazyPublisher, RoutingBranchCaller } from '../tx/broker-caller.js';
import { RabbitPublisher } from '../messaging/rabbitmq.js';
import { JetStreamPublisher } from '../messaging/jetstream.js';
import { buildApp } from './app.js';
import { Metrics } from './metrics.js';
import { ServiceRegistry } from '../registry/registry.js';
import { openLockAndKv } from '../locks/wiring.js';
import { isLoopbackHost, parseTokenEntries, TokenBook, type TokenEntry } from './auth.js';
import { Tracing, TracingBranchCaller } from '../telemetry/tracing.js';
import { openSharedRegistry } from '../registry/wiring.js';
import { AuditLog } from './audit.js';

export interface ServeOptions {
  host: string;
  port: number;
  storeUrl: string;
  sqliteSync: SqliteSync;
  logLevel: string;
  limits?: Partial<Limits>;
  /**
   * This instance's name in leases and heartbeats. An embedded SQLite store serves one
   * coordinator, so it defaults to a fixed name and a restarted process takes its work back at
   * once; shared stores default to a name unique to this process.
   */
  instanceId?: string;
  /** amqp:// URL; message steps may then publish to `rabbitmq:<exchange>/<routingKey>`. */
  rabbitmqUrl?: string;
  /** nats:// URL of a JetStream-enabled server; message steps may then publish to `jetstream:<subject>`. */
  jetstreamUrl?: string;
  /** A file of API token entries (`<name> <role> sha256:<hex>` per line). */
  tokensFile?: string;
  /** Token entries given inline (TANDEM_TOKENS), separated by commas or newlines. */
  tokens?: string;
  /** PEM files: the API is served over HTTPS when both are given. */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** PEM file of the certificate authorities trusted for https branch URLs. */
  branchCaFile?: string;
  /** OTLP/HTTP endpoint for traces (e.g. http://127.0.0.1:4318/v1/traces); absent: none exported. */
  otlpTracesUrl?: string;
  /** Append-only JSON-lines file of operator actions; absent: the audit log is in memory only. */
  auditLogPath?: string;
}

export class ServeConfigError extends Error {}

/**
 * Tokens are off only on loopback with none configured: anything else may be reached from
 * another machine, and an open coordinator there would run anyone's transactions.
 */
export function tokenBookOf(options: Pick<ServeOptions, 'host' | 'tokensFile' | 'tokens'>): TokenBook | undefined {
  const entries: TokenEntry[] = [];
  if (options.tokensFile !== undefined) entries.push(...parseTokenEntries(fs.readFileSync(options.tokensFile, 'utf8'), options.tokensFile));
  if (options.tokens !== undefined) entries.push(...parseTokenEntries(options.tokens, 'TANDEM_TOKENS'));
  if (entries.length > 0) return new TokenBook(entries);
  if (isLoopbackHost(options.host)) return undefined;
  throw new ServeConfigError(
    `refusing to listen on ${options.host} without API tokens: anyone who can reach it could run transactions. ` +
      'Make one with `tandem token create --name NAME --role admin` and pass --tokens-file (or TANDEM_TOKENS), or listen on 127.0.0.1',
  );
}

function tlsOf(options: Pick<ServeOptions, 'tlsCertFile' | 'tlsKeyFile'>): { cert: Buffer; key: Buffer } | undefined {
  if (options.tlsCertFile === undefined && options.tlsKeyFile === undefined) return undefined;
  if (options.tlsCertFile === undefined || options.tlsKeyFile === undefined) throw new ServeConfigError('--tls-cert and --tls-key go together');
  return { cert: fs.readFileSync(options.tlsCertFile), key: fs.readFileSync(options.tlsKeyFile) };
}

export interface RunningCoordinator {
  app: FastifyInstance;
  engine: Engine;
  store: Store;
  url: string;
  port: number;
  close(): Promise<void>;
}

function defaultInstanceId(storeUrl: string): string {
  if (storeUrl.startsWith('sqlite:')) return 'local';
  return `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

export async function serve(options: ServeOptions): Promise<RunningCoordinator> {
  const limits: Limits = { ...limitsFromEnv(process.env), ...options.limits };
  // Configuration is checked before anything is opened, so a refusal leaves nothing behind.
  const auth = tokenBookOf(options);
  const tls = tlsOf(options);
  const logger: Logger = pino({ level: options.logLevel });
  const store = await openStore(options.storeUrl, {
    sqliteSync: options.sqliteSync,
    postgresPoolSizeMax: limits.postgresPoolSizeMax,
    postgresFlushesInFlightMax: limits.postgresFlushesInFlightMax,
    storeConnectTimeoutMs: limits.storeConnectTimeoutMs,
    storeCommandTimeoutMs: limits.storeCommandTimeoutMs,
  });
  const metrics = new Metrics();
  store.onCommit(metrics.observeCommit);
  const instanceId = options.instanceId ?? defaultInstanceId(options.storeUrl);
  const registry = new ServiceRegistry(limits);
  const httpCaller = new HttpBranchCaller({
    connectionsPerOriginMax: limits.connectionsPerOriginMax,
    answerBytesMax: limits.answerBytesMax,
    instanceId,
    resolver: registry,
    failoverAttemptsMax: limits.failoverAttemptsMax,
    ...(options.branchCaFile !== undefined ? { caCertificates: fs.readFileSync(options.branchCaFile) } : {}),
  });
  const brokerCaller = new BrokerBranchCaller(publishersFor(options, limits), instanceId);
  const tracing = new Tracing({ instanceId, ...(options.otlpTracesUrl !== undefined ? { otlpEndpoint: options.otlpTracesUrl } : {}) });
  const caller = new TracingBranchCaller(new RoutingBranchCaller(httpCaller, brokerCaller), tracing);
  // One clock for the engine and the workflows: worker leases are judged on the same time as the engine's.
  const clock = sharedClockOf(store, options.storeUrl, limits, metrics, logger) ?? new HostClock(Date.now);
  const workflows = new WorkflowService({
    store,
    limits,
    nowMs: () => clock.nowMs(),
    defaults: {
      timeoutToFailMs: 0,
      requestTimeoutMs: txDefaults.requestTimeoutMs,
      retryIntervalMs: txDefaults.retryIntervalMs,
      retryIntervalMsMax: limits.retryIntervalMsMax,
      retryLimit: null,
      branchHeaders: {},
      concurrent: false,
    },
  });
  const engine = new Engine({
    store,
    instanceId,
    clock,
    caller,
    limits,
    observer: { ...metrics.engineObserver, woken: (tx) => workflows.onWoken(tx) },
    onError: (error, gid) => {
      // Expected at a shutdown that outlasted its drain: the warning below says so once.
      if (error instanceof AbandonedAtShutdownError) return;
      logger.error({ err: error, gid }, 'transaction work failed; the recovery scan will retry it');
    },
  });
  const lockAndKv = await openLockAndKv(options.storeUrl, {
    sqliteSync: options.sqliteSync,
    limits,
    onError: (error, context) => logger.error({ err: error }, context),
    storeConnectTimeoutMs: limits.storeConnectTimeoutMs,
    storeCommandTimeoutMs: limits.storeCommandTimeoutMs,
  });
  const audit = new AuditLog(limits.auditEntriesMax, options.auditLogPath);
  const sharedRegistry = await openSharedRegistry(options.storeUrl, registry, limits, (error, context) => logger.error({ err: error }, context));
  const app = buildApp({
    engine,
    store,
    limits,
    metrics,
    logger,
    locks: lockAndKv?.locks ?? undefined,
    kv: lockAndKv?.kv,
    registry,
    ...(sharedRegistry ? { sharedRegistry } : {}),
    brokers: brokerCaller.brokers,
    auth,
    tls,
    tracing,
    audit,
    workflows,
  });
  let closing = false;
  // An answer given while the server closes ends its connection: a keep-alive connection that
  // went idle after the server's close began would otherwise hold the process open.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (closing) reply.header('connection', 'close');
    return payload;
  });
  await app.listen({ host: options.host, port: options.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  await engine.start();
  return {
    app,
    engine,
    store,
    port,
    url: `${tls ? 'https' : 'http'}://${options.host.includes(':') ? `[${options.host}]` : options.host}:${port}`,
    async close() {
      // No new work, and result long polls answered now: otherwise the HTTP server would wait
      // out their timeouts (up to resultWaitMsMax) before the drain even began.
      closing = true;
      engine.beginStop();
      workflows.close();
      // Queued acquires and workflow claims are long polls too: answering them lets the HTTP server drain.
      const httpClosed = Promise.all([app.close(), lockAndKv?.close()]);
      const { drained } = await engine.stop(limits.shutdownDrainMs);
      if (!drained) {
        logger.warn({ shutdownDrainMs: limits.shutdownDrainMs }, 'rounds still in flight at shutdown keep their leases until they expire');
        // Requests waiting on those rounds (waitResult creates, submits with wait) would hold
        // the HTTP server open past the drain limit: cut them; their transactions are durable.
        app.server.closeAllConnections();
      } else {
        app.server.closeIdleConnections();
      }
      await httpClosed;
      // Undrained calls are cut rather than awaited (up to their requestTimeoutMs): their rounds
      // write nothing more, and their leases lapse for another instance to take over.
      await (drained ? httpCaller.close() : httpCaller.destroy());
      await brokerCaller.close();
      await tracing.shutdown();
      await sharedRegistry?.close();
      registry.close();
      await store.close();
    },
  };
}

/**
 * Coordinators sharing a store read every lease and deadline from the store's clock; an
 * embedded store has one coordinator, whose own clock is the only one.
 */
function sharedClockOf(store: Store, storeUrl: string, limits: Limits, metrics: Metrics, logger: Logger): EngineClock | undefined {
  if (storeUrl.startsWith('sqlite:')) return undefined;
  let warned = false;
  return new StoreClock(() => store.clockMs(), {
    onMeasured: ({ driftMs, roundTripMs }) => {
      metrics.clockDriftMs.set(driftMs);
      const exceeded = Math.abs(driftMs) > limits.clockDriftMsMax;
      if (exceeded && !warned) logger.warn({ driftMs, roundTripMs, clockDriftMsMax: limits.clockDriftMsMax }, "this host's clock is off the store's; leases and deadlines use the store's");
      warned = exceeded;
    },
  });
}

function publishersFor(options: ServeOptions, limits: Limits): LazyPublisher[] {
  const publishers: LazyPublisher[] = [];
  const { rabbitmqUrl, jetstreamUrl } = options;
  if (rabbitmqUrl) {
    publishers.push(new LazyPublisher('rabbitmq', () => RabbitPublisher.connect(rabbitmqUrl, { inFlightMax: limits.publishesInFlightMax })));
  }
  if (jetstreamUrl) {
    publishers.push(new LazyPublisher('jetstream', () => JetStreamPublisher.connect(jetstreamUrl, { inFlightMax: limits.publishesInFlightMax })));
  }
  return publishers;
}
