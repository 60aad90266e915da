// The HTTP server: native API, DTM-compatible API, metrics, health and OpenAPI, with every
// refusal answered as application/problem+json.
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Limits } from '../config.js';
import type { Engine } from '../tx/engine.js';
import type { Store } from '../store/store.js';
import type { Metrics } from './metrics.js';
import { registerNativeApi } from './native-api.js';
import { registerDtmApi } from './dtm-api.js';
import { registerRegistryApi } from './registry-api.js';
import type { ServiceRegistry } from '../registry/registry.js';
import { localRegistryApi, type RegistryApi } from '../registry/shared.js';
import { registerLocksApi } from './locks-api.js';
import { registerKvApi } from './kv-api.js';
import type { Locks } from '../locks/service.js';
import { registerWorkflowApi } from './workflow-api.js';
import type { WorkflowService } from '../tx/workflow-service.js';
import type { KvStore } from '../kv/store.js';
import { openApiDocument } from './openapi.js';
import type { BrokerName } from '../messaging/types.js';
import type { Socket } from 'node:net';
import { invalid, problemContentType, problemOfError, sendProblem, tooLarge, type Problem } from './problem.js';
import { jsonDeeperThan } from './validation.js';
import { authorize, type TokenBook } from './auth.js';
import type { OpenSpan, Tracing } from '../telemetry/tracing.js';
import { registerOperatorApi } from './operator-api.js';
import { registerConsoleRoutes } from './console-routes.js';
import { AuditLog } from './audit.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** W3C trace context of this request's span (or the one it came with); null when untraced. */
    traceparent: string | null;
    requestSpan: OpenSpan | null;
  }
}

export interface AppDeps {
  engine: Engine;
  store: Store;
  limits: Limits;
  metrics: Metrics;
  logger: FastifyBaseLogger;
  /** Locks and the key-value store; their routes are off when absent. */
  locks?: Locks;
  kv?: KvStore;
  registry: ServiceRegistry;
  /** The shared-store registry (PostgreSQL, Redis); the routes use `registry` alone when absent. */
  sharedRegistry?: RegistryApi;
  /** Brokers message steps may publish to. */
  brokers?: ReadonlySet<BrokerName>;
  /** API tokens; every request but /healthz needs one when present. */
  auth?: TokenBook;
  /** Serve HTTPS with this certificate and key. */
  tls?: { cert: Buffer; key: Buffer };
  /** Spans for requests; absent: no tracing at all. */
  tracing?: Tracing;
  /** Where operator actions are recorded; absent: in memory only (auditEntriesMax entries). */
  audit?: AuditLog;
  /** Durable workflows; their routes are off when absent. */
  workflows?: WorkflowService;
}

export function buildApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    ...(deps.tls ? { https: deps.tls } : {}),
    // Per-request logs at info level would drown the coordinator's own; requests log warnings up.
    loggerInstance: quieter(deps.logger),
    bodyLimit: deps.limits.requestBodyBytesMax,
    return503OnClosing: true,
    // Fastify's default (100) answers 414 to longer gids and lock names before validation can
    // name the field; the schemas enforce the real limits.
    routerOptions: { maxParamLength: 4 * Math.max(deps.limits.gidLengthMax, deps.limits.lockNameLengthMax) },
    // The router's own refusals (a bad %-escape, a parameter over maxParamLength) would
    // otherwise answer plain application/json.
    frameworkErrors: (error, _request, reply) => sendProblem(reply, routerProblem(error)),
    // So would requests Node's HTTP parser refuses before fastify sees them.
    clientErrorHandler: answerClientError,
  });
  // An empty body on a POST is accepted as {}; many clients send none for submit/abort.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim().length === 0) return done(null, undefined);
    // Before JSON.parse: everything after it (validation, JSON.stringify, the stores) recurses.
    if (jsonDeeperThan(text, deps.limits.jsonDepthMax)) {
      return done(invalid([{ field: 'body', message: `nests arrays and objects deeper than jsonDepthMax (${deps.limits.jsonDepthMax})` }]), undefined);
    }
    try {
      done(null, JSON.parse(text) as unknown);
    } catch (error) {
      done(invalid([{ field: 'body', message: `is not valid JSON: ${(error as Error).message}` }]), undefined);
    }
  });
  app.decorateRequest('traceparent', null);
  app.decorateRequest('requestSpan', null);
  if (deps.tracing) {
    const tracing = deps.tracing;
    app.addHook('onRequest', async (request) => {
      const incoming = request.headers.traceparent;
      const span = tracing.startRequest(request.method, request.routeOptions.url ?? 'unmatched', typeof incoming === 'string' ? incoming : undefined);
      request.requestSpan = span;
      request.traceparent = span.traceparent;
    });
    app.addHook('onResponse', async (request, reply) => {
      request.requestSpan?.end(reply.statusCode >= 500 ? `HTTP ${reply.statusCode}` : undefined);
    });
  }
  if (deps.auth) {
    const book = deps.auth;
    // onRequest runs before the body is read: a refused request costs no parsing and writes nothing.
    app.addHook('onRequest', async (request, reply) => {
      const verdict = authorize(book, request.method, request.url.split('?')[0], request.headers.authorization);
      if (verdict.allowed) return;
      if (verdict.status === 401) reply.header('www-authenticate', 'Bearer realm="tandem"');
      const title = verdict.status === 401 ? 'Unauthorized' : 'Forbidden';
      return sendProblem(reply, { type: `urn:tandem:problem:${verdict.status === 401 ? 'unauthorized' : 'forbidden'}`, title, status: verdict.status, detail: verdict.detail });
    });
  }
  app.setErrorHandler((error, request, reply) => sendProblem(reply, toProblem(error, deps, request.log)));
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, { type: 'urn:tandem:problem:no-route', title: 'Not found', status: 404, detail: `no route for ${request.method} ${request.url.split('?')[0]}` }),
  );

  app.get('/healthz', async () => ({ status: 'ok', activeTransactions: deps.engine.activeCount }));
  // /api/metrics is where DTM serves its exporter, so scrape configs written for DTM keep working.
  for (const path of ['/metrics', '/api/metrics']) {
    app.get(path, async (_request, reply) => reply.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics()));
  }
  app.get('/openapi.json', async () => openApiDocument(deps.limits));
  registerNativeApi(app, deps);
  registerDtmApi(app, deps);
  registerRegistryApi(app, deps.sharedRegistry ?? localRegistryApi(deps.registry), deps.limits);
  if (deps.locks) registerLocksApi(app, { locks: deps.locks, limits: deps.limits });
  if (deps.kv) registerKvApi(app, { kv: deps.kv, limits: deps.limits });
  registerOperatorApi(app, { ...deps, audit: deps.audit ?? new AuditLog(deps.limits.auditEntriesMax) });
  registerConsoleRoutes(app);
  if (deps.workflows) registerWorkflowApi(app, { workflows: deps.workflows, store: deps.store, limits: deps.limits });
  return app;
}

function routerProblem(error: FastifyError): Problem {
  if (error.code === 'FST_ERR_BAD_URL') return invalid([{ field: 'path', message: 'is not a valid URL: a %-escape does not decode to UTF-8' }]).problem;
  if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    const detail = 'a path parameter is longer than the router accepts';
    return { type: 'urn:tandem:problem:uri-too-long', title: 'URI too long', status: 414, detail, errors: [{ field: 'path', message: detail }] };
  }
  return { type: 'urn:tandem:problem:internal', title: 'Internal error', status: 500, detail: error.message };
}

/** Node's HTTP parser refused the request: answer problem+json on the socket and close it. */
function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, title, detail] =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'Request timeout', 'the request did not arrive in time']
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request header fields too large', 'the request headers exceed the HTTP parser\'s limit']
        : [400, 'Bad request', 'the request is not valid HTTP/1.1'];
  const body = JSON.stringify({ type: 'urn:tandem:problem:bad-request', title, status, detail });
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${title}\r\nConnection: close\r\nContent-Type: ${problemContentType}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }
  socket.destroy(error);
}

function quieter(logger: FastifyBaseLogger): FastifyBaseLogger {
  const levels = ['trace', 'debug', 'info'];
  return levels.includes(logger.level) ? logger.child({}, { level: 'warn' }) : logger;
}

function toProblem(error: unknown, deps: AppDeps, log: { error: (obj: unknown, msg: string) => void }): Problem {
  const known = problemOfError(error);
  if (known) return known.problem;
  const fastifyError = error as Partial<FastifyError>;
  if (fastifyError.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return tooLarge(`the request body exceeds requestBodyBytesMax (${deps.limits.requestBodyBytesMax} bytes)`).problem;
  }
  if (fastifyError.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return invalid([{ field: 'content-type', message: 'must be application/json' }]).problem;
  }
  if (fastifyError.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') return invalid([{ field: 'body', message: 'must not be empty' }]).problem;
  if (typeof fastifyError.statusCode === 'number' && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    return { type: 'urn:tandem:problem:bad-request', title: 'Bad request', status: fastifyError.statusCode, detail: fastifyError.message ?? 'bad request' };
  }
  log.error({ err: error }, 'request failed');
  return { type: 'urn:tandem:problem:internal', title: 'Internal error', status: 500, detail: error instanceof Error ? error.message : String(error) };
}
