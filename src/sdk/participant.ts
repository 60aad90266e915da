// Helpers that turn plain handler functions into correct participant endpoints: they read the
// branch (gid, branch_id, op, trans_type) from the coordinator's call, run the handler, and
// answer in DTM's words so the coordinator can tell success, a business refusal, "not yet"
// and a transient error apart (see classifyAnswer in protocol.ts).
//
// The core (`createParticipant`) knows no web framework; thin adapters serve it from
// node:http, fastify or express.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyPluginAsync } from 'fastify';
import { type Barrier, type BranchRef, InvalidBranchRef, branchRefFromQuery } from './barrier.js';
import { branchHeaders, branchQuery, ops, resultWords, statusBusinessFailure, statusOngoing, undoOf } from '../shared/protocol.js';

/** Throw to refuse the branch for a business reason: the coordinator rolls back (HTTP 409). */
export class BusinessFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BusinessFailure';
  }
}

/** Throw when the branch cannot answer yet: the coordinator asks again later (HTTP 425). */
export class Ongoing extends Error {
  constructor(message = '') {
    super(message);
    this.name = 'Ongoing';
  }
}

/**
 * The call came from a coordinator whose lease on the transaction has passed to another (its
 * `tandem-fence` is below one already seen): answered 503, never run. That coordinator can no
 * longer record anything for the transaction; the one that holds the lease calls again.
 */
export class StaleCoordinator extends Error {
  constructor(branch: BranchRef) {
    super(`refused: fence ${branch.fence} of transaction ${branch.gid} is below one this participant has already seen; the lease has passed to another coordinator`);
    this.name = 'StaleCoordinator';
  }
}

/** Throw when the call itself is malformed (HTTP 400); `field` names the culprit if known. */
export class BadRequest extends Error {
  readonly field: string | undefined;
  constructor(message: string, field?: string) {
    super(message);
    this.name = 'BadRequest';
    this.field = field;
  }
}

/** Everything a handler learns about one branch call. */
export type BranchRequest = {
  branch: BranchRef;
  /** The body parsed as JSON; undefined when empty or not declared as JSON. */
  body: unknown;
  rawBody: string;
  /** Lower-case header names. */
  headers: Record<string, string | undefined>;
  method: string;
  path: string;
  query: URLSearchParams;
};

/** Returns data to merge into the SUCCESS answer, or throws one of the errors above. */
export type Handler = (request: BranchRequest) => Promise<unknown> | unknown;

/** One HTTP request as an adapter hands it to the core; `url` is the path plus query string. */
export type ParticipantRequest = {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  rawBody: string;
};

export type ParticipantResponse = { status: number; body: string; contentType: string };

export interface Participant {
  /** The paths served, exactly as given to createParticipant. */
  readonly paths: readonly string[];
  hasRoute(path: string): boolean;
  handle(request: ParticipantRequest): Promise<ParticipantResponse>;
}

export type ParticipantOptions = {
  /** Called with errors that became a 500 answer, e.g. to log them. */
  onUnexpectedError?: (error: unknown, request: BranchRequest) => void;
};

export type AdapterOptions = {
  /** Larger request bodies get 413; default `requestBytesMax` (1 MiB). */
  requestBytesMax?: number;
};

/** Default limit on a branch call's body; coordinators send small JSON payloads. */
export const requestBytesMax = 1024 * 1024;

const jsonType = 'application/json';
const problemType = 'application/problem+json';
const servedMethods = new Set(['GET', 'POST']);

// ---------------------------------------------------------------------------------------------
// The core

export function createParticipant(routes: Record<string, Handler>, options: ParticipantOptions = {}): Participant {
  const handlers = new Map(Object.entries(routes));
  return {
    paths: [...handlers.keys()],
    hasRoute: (path) => handlers.has(path),
    handle: async (request) => {
      const { path, query } = splitUrl(request.url);
      const handler = handlers.get(path);
      if (!handler) return problem(404, 'Not Found', `no participant route for ${path}`);
      if (!servedMethods.has(request.method)) return problem(405, 'Method Not Allowed', `${request.method} is not served; use GET or POST`);
      let branchRequest: BranchRequest;
      try {
        branchRequest = toBranchRequest(request, path, query);
      } catch (error) {
        return answerForError(error);
      }
      return runHandler(handler, branchRequest, options);
    },
  };
}

async function runHandler(handler: Handler, request: BranchRequest, options: ParticipantOptions): Promise<ParticipantResponse> {
  try {
    return successAnswer(await handler(request));
  } catch (error) {
    const answer = answerForError(error);
    if (answer.status >= 500) options.onUnexpectedError?.(error, request);
    return answer;
  }
}

function splitUrl(url: string): { path: string; query: URLSearchParams } {
  const mark = url.indexOf('?');
  if (mark < 0) return { path: url, query: new URLSearchParams() };
  return { path: url.slice(0, mark), query: new URLSearchParams(url.slice(mark + 1)) };
}

function toBranchRequest(request: ParticipantRequest, path: string, query: URLSearchParams): BranchRequest {
  const headers = normalizeHeaders(request.headers);
  return {
    branch: branchRefOf(query, headers),
    body: parseBody(request.rawBody, headers['content-type']),
    rawBody: request.rawBody,
    headers,
    method: request.method,
    path,
    query,
  };
}

function normalizeHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | undefined> {
  const normalized: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(headers)) {
    normalized[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return normalized;
}

/** Each field from the query string, else from its tandem-* header. */
function branchRefOf(query: URLSearchParams, headers: Record<string, string | undefined>): BranchRef {
  const fields: Record<string, string | undefined> = {};
  const headerOfParam = new Map<string, string>();
  for (const key of Object.keys(branchQuery) as (keyof typeof branchQuery)[]) {
    const param = branchQuery[key];
    fields[param] = query.get(param) || headers[branchHeaders[key]];
    headerOfParam.set(param, branchHeaders[key]);
  }
  try {
    const branch = branchRefFromQuery(fields);
    const fence = fenceOf(headers[branchHeaders.fence]);
    return fence === undefined ? branch : { ...branch, fence };
  } catch (error) {
    if (!(error instanceof InvalidBranchRef)) throw error;
    throw new BadRequest(`${error.message} (or header ${headerOfParam.get(error.field)})`, error.field);
  }
}

/** The coordinator's lease epoch; a header that is not a whole number is a bad call. */
function fenceOf(header: string | undefined): number | undefined {
  if (header === undefined || header === '') return undefined;
  const fence = Number(header);
  if (!Number.isSafeInteger(fence) || fence < 0) throw new BadRequest(`header ${branchHeaders.fence} must be a whole number, got "${header}"`, branchHeaders.fence);
  return fence;
}

/** JSON when declared as JSON or undeclared; other declared types are left to rawBody. */
function parseBody(rawBody: string, contentType: string | undefined): unknown {
  if (rawBody.length === 0) return undefined;
  const declaredJson = contentType === undefined || /[/+]json\b/i.test(contentType);
  if (!declaredJson) return undefined;
  try {
    return JSON.parse(rawBody) as unknown;
  } catch {
    throw new BadRequest('request body is not valid JSON', 'body');
  }
}

/** 200 SUCCESS; a returned plain object's fields join the answer, any other value goes under `data`. */
function successAnswer(value: unknown): ParticipantResponse {
  const answer: Record<string, unknown> = { dtm_result: resultWords.success };
  if (isPlainObject(value)) Object.assign(answer, value, { dtm_result: resultWords.success });
  else if (value !== undefined) answer.data = value;
  return { status: 200, body: JSON.stringify(answer), contentType: jsonType };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function answerForError(error: unknown): ParticipantResponse {
  if (error instanceof BusinessFailure) {
    return dtmAnswer(statusBusinessFailure, { dtm_result: resultWords.failure, message: error.message });
  }
  if (error instanceof Ongoing) {
    return dtmAnswer(statusOngoing, error.message ? { dtm_result: resultWords.ongoing, message: error.message } : { dtm_result: resultWords.ongoing });
  }
  if (error instanceof BadRequest) return problem(400, 'Bad Request', error.message, error.field);
  if (error instanceof StaleCoordinator) return dtmAnswer(503, { dtm_result: 'ERROR', message: error.message });
  if (error instanceof InvalidBranchRef) return problem(400, 'Bad Request', error.message, error.field);
  const message = error instanceof Error ? error.message : String(error);
  return dtmAnswer(500, { dtm_result: 'ERROR', message });
}

function dtmAnswer(status: number, body: Record<string, string>): ParticipantResponse {
  return { status, body: JSON.stringify(body), contentType: jsonType };
}

/** RFC 9457 problem details, as the rest of Tandem answers bad input. */
function problem(status: number, title: string, detail: string, field?: string): ParticipantResponse {
  const body = field === undefined ? { type: 'about:blank', title, status, detail } : { type: 'about:blank', title, status, detail, field };
  return { status, body: JSON.stringify(body), contentType: problemType };
}

// ---------------------------------------------------------------------------------------------
// Handler combinators

/**
 * Runs `fn` inside `barrier.call`, in one local transaction with the barrier row. A duplicate
 * or a null compensation answers SUCCESS without running `fn` (and without the first call's
 * data); a hanging forward op (it arrived after its undo) answers a business FAILURE.
 */
export function barrierHandler<Tx>(barrier: Barrier<Tx>, fn: (tx: Tx, request: BranchRequest) => Promise<unknown>): Handler {
  return async (request) => {
    const result = await barrier.call(request.branch, (tx) => fn(tx, request));
    if (result.applied) return result.value;
    if (result.reason === 'stale-fence') throw new StaleCoordinator(request.branch);
    if (result.reason === 'hanging') {
      const undoOps = Object.keys(undoOf).filter((undo) => undoOf[undo] === request.branch.op);
      throw new BusinessFailure(`${request.branch.op} refused: its ${undoOps.join('/')} already ran for this branch`);
    }
    return undefined;
  };
}

/**
 * The queryPrepared endpoint of a two-phase message: answers success when the message's local
 * transaction committed, FAILURE (409) when it rolled back or never ran (and then makes sure it
 * never will), ONGOING (425) while it is still running.
 */
export function queryPreparedHandler<Tx>(barrier: Barrier<Tx>): Handler {
  return async (request) => {
    const state = await barrier.queryPrepared(request.branch.gid);
    if (state === 'rolled-back') throw new BusinessFailure(`the local transaction of message ${request.branch.gid} rolled back`);
    if (state === 'ongoing') throw new Ongoing(`the local transaction of message ${request.branch.gid} is still running`);
    return { state };
  };
}

/** One handler serving several ops on one URL, chosen by the branch's `op`. */
export function routeByOp(handlers: Record<string, Handler>): Handler {
  const known = Object.keys(handlers);
  return (request) => {
    const op = request.branch.op;
    if (!Object.hasOwn(handlers, op)) {
      throw new BadRequest(`op ${JSON.stringify(op)} is not served here; expected one of ${known.join(', ')}`, branchQuery.op);
    }
    return handlers[op](request);
  };
}

export type ThreePhaseOp = keyof typeof ops.threePhase;

export type ThreePhaseOptions = {
  canCommit: Handler;
  preCommit: Handler;
  doCommit: Handler;
  abort: Handler;
  /** After a successful preCommit, commit on our own if neither doCommit nor abort came within this. */
  autoCommitAfterMs: number;
  /** Where a failed automatic doCommit is reported; default console.error. */
  onAutoCommitError?: (error: unknown, branch: BranchRef) => void;
  /** Aborting it cancels every pending automatic commit (call it on shutdown). */
  signal?: AbortSignal;
};

const timerMsMax = 2 ** 31 - 1;

/**
 * Handlers for the four 3PC ops, keyed by op (wrap them with routeByOp to serve one URL).
 *
 * 3PC's rule: a participant that acknowledged preCommit and then hears nothing commits on its
 * own timeout. That is safe because the coordinator makes its commit decision durable before
 * it sends the first preCommit and never aborts after that (no deadline, retry limit or abort
 * request ends preCommit), so an abort can only come from the canCommit phase, and a branch
 * that was sent preCommit is never sent abort: the automatic commit cannot contradict the
 * coordinator, under crashes and partitions, as long as the coordinator's store keeps its word.
 *
 * preCommit may not refuse (this branch already voted yes at canCommit): a BusinessFailure
 * thrown by the preCommit handler is answered as an error (500), which the coordinator retries
 * like any transient failure until preCommit is acknowledged.
 *
 * A branch that voted yes but never received preCommit has no timer and waits for preCommit
 * or abort, blocking like a 2PC participant while the coordinator is away. The timer lives in
 * this process's memory: if the process restarts between preCommit and the timeout, the
 * pending commit is forgotten and the branch waits for the coordinator's doCommit the same way.
 * Wrap doCommit with barrierHandler so a late doCommit from the coordinator after an automatic
 * one is a harmless duplicate.
 */
export function threePhaseParticipant(options: ThreePhaseOptions): Record<ThreePhaseOp, Handler> {
  const { autoCommitAfterMs } = options;
  if (!Number.isInteger(autoCommitAfterMs) || autoCommitAfterMs <= 0 || autoCommitAfterMs > timerMsMax) {
    throw new RangeError(`autoCommitAfterMs must be a whole number from 1 to ${timerMsMax}, got ${autoCommitAfterMs}`);
  }
  const timers = new AutoCommitTimers(options);
  return {
    canCommit: options.canCommit,
    preCommit: async (request) => {
      let value: unknown;
      try {
        value = await options.preCommit(request);
      } catch (error) {
        if (!(error instanceof BusinessFailure)) throw error;
        throw new Error(`preCommit cannot refuse once canCommit voted yes (the coordinator retries it until acknowledged): ${error.message}`, { cause: error });
      }
      timers.arm(request);
      return value;
    },
    doCommit: (request) => {
      timers.disarm(request.branch);
      return options.doCommit(request);
    },
    abort: (request) => {
      timers.disarm(request.branch);
      return options.abort(request);
    },
  };
}

/** The pending automatic doCommits, one per (gid, branchId). */
class AutoCommitTimers {
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private readonly options: ThreePhaseOptions;

  constructor(options: ThreePhaseOptions) {
    this.options = options;
    options.signal?.addEventListener('abort', () => this.disarmAll(), { once: true });
  }

  arm(preCommit: BranchRequest): void {
    this.disarm(preCommit.branch);
    if (this.options.signal?.aborted) return;
    const key = branchKey(preCommit.branch);
    const timer = setTimeout(() => {
      this.pending.delete(key);
      void this.commitOnOurOwn(preCommit);
    }, this.options.autoCommitAfterMs);
    // A pending commit must not keep a process alive that is otherwise done.
    timer.unref();
    this.pending.set(key, timer);
  }

  disarm(branch: BranchRef): void {
    const key = branchKey(branch);
    clearTimeout(this.pending.get(key));
    this.pending.delete(key);
  }

  private disarmAll(): void {
    for (const timer of this.pending.values()) clearTimeout(timer);
    this.pending.clear();
  }

  /** Replays the preCommit's request as a doCommit for the same branch. */
  private async commitOnOurOwn(preCommit: BranchRequest): Promise<void> {
    const branch = { ...preCommit.branch, op: ops.threePhase.doCommit };
    try {
      await this.options.doCommit({ ...preCommit, branch });
    } catch (error) {
      const report = this.options.onAutoCommitError ?? reportAutoCommitError;
      report(error, branch);
    }
  }
}

function branchKey(branch: BranchRef): string {
  return JSON.stringify([branch.gid, branch.branchId]);
}

function reportAutoCommitError(error: unknown, branch: BranchRef): void {
  console.error(`tandem: automatic 3PC doCommit failed for gid ${branch.gid} branch ${branch.branchId}:`, error);
}

// ---------------------------------------------------------------------------------------------
// Adapters

type BodyRead = { ok: true; rawBody: string } | { ok: false };

/** Reads a request body up to `bytesMax`; stops reading (without buffering more) past it. */
function readBody(request: IncomingMessage, bytesMax: number): Promise<BodyRead> {
  const declaredBytes = Number(request.headers['content-length']);
  if (declaredBytes > bytesMax) return Promise.resolve({ ok: false });
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let receivedBytes = 0;
    const onData = (chunk: Buffer) => {
      receivedBytes += chunk.length;
      if (receivedBytes <= bytesMax) {
        chunks.push(chunk);
        return;
      }
      request.off('data', onData);
      request.off('end', onEnd);
      request.resume();
      resolve({ ok: false });
    };
    const onEnd = () => resolve({ ok: true, rawBody: Buffer.concat(chunks).toString('utf8') });
    request.on('data', onData);
    request.once('end', onEnd);
    request.once('error', reject);
  });
}

function tooLarge(bytesMax: number): ParticipantResponse {
  return problem(413, 'Content Too Large', `request body exceeds ${bytesMax} bytes`);
}

function send(response: ServerResponse, answer: ParticipantResponse, closeConnection = false): void {
  const headers: Record<string, string> = { 'content-type': `${answer.contentType}; charset=utf-8` };
  // After refusing an unread body, close rather than read the rest of it just to keep the connection.
  if (closeConnection) headers.connection = 'close';
  response.writeHead(answer.status, headers);
  response.end(answer.body);
}

/** Answers an error that escaped the core (a broken request stream, say), if still possible. */
function failRequest(response: ServerResponse, error: unknown): void {
  if (response.headersSent) {
    response.destroy(error instanceof Error ? error : undefined);
    return;
  }
  send(response, answerForError(error), true);
}

async function serveWithBody(
  participant: Participant,
  request: IncomingMessage,
  response: ServerResponse,
  url: string,
  bytesMax: number,
): Promise<void> {
  const read = await readBody(request, bytesMax);
  if (!read.ok) {
    send(response, tooLarge(bytesMax), true);
    return;
  }
  const answer = await participant.handle({ method: request.method ?? 'GET', url, headers: request.headers, rawBody: read.rawBody });
  send(response, answer);
}

/** A node:http request listener: `http.createServer(nodeHttpHandler(participant))`. */
export function nodeHttpHandler(participant: Participant, options: AdapterOptions = {}): (request: IncomingMessage, response: ServerResponse) => void {
  const bytesMax = options.requestBytesMax ?? requestBytesMax;
  return (request, response) => {
    const url = request.url ?? '/';
    const { path } = splitUrl(url);
    if (!participant.hasRoute(path)) {
      send(response, problem(404, 'Not Found', `no participant route for ${path}`));
      return;
    }
    serveWithBody(participant, request, response, url, bytesMax).catch((error: unknown) => failRequest(response, error));
  };
}

/**
 * Express-compatible middleware (`app.use(expressRouter(participant))`, or mounted under a
 * prefix: paths are matched against the mount-relative URL). Requests for other paths or
 * methods pass to `next`. If a body parser already ran, its result is used as the body.
 */
export function expressRouter(
  participant: Participant,
  options: AdapterOptions = {},
): (request: IncomingMessage & { body?: unknown }, response: ServerResponse, next: (error?: unknown) => void) => void {
  const bytesMax = options.requestBytesMax ?? requestBytesMax;
  return (request, response, next) => {
    const url = request.url ?? '/';
    if (!participant.hasRoute(splitUrl(url).path) || !servedMethods.has(request.method ?? '')) {
      next();
      return;
    }
    const served =
      request.body === undefined
        ? serveWithBody(participant, request, response, url, bytesMax)
        : serveParsed(participant, request, response, url, request.body);
    served.catch((error: unknown) => failRequest(response, error));
  };
}

async function serveParsed(participant: Participant, request: IncomingMessage, response: ServerResponse, url: string, body: unknown): Promise<void> {
  const rawBody = typeof body === 'string' ? body : Buffer.isBuffer(body) ? body.toString('utf8') : JSON.stringify(body);
  send(response, await participant.handle({ method: request.method ?? 'GET', url, headers: request.headers, rawBody }));
}

/**
 * A fastify plugin registering every route for GET and POST:
 * `app.register(fastifyPlugin(participant), { prefix: '/svc' })`. Inside its own scope it
 * takes bodies of any content type as text, so the core sees the raw body.
 */
export function fastifyPlugin(participant: Participant, options: AdapterOptions = {}): FastifyPluginAsync {
  const bytesMax = options.requestBytesMax ?? requestBytesMax;
  return async (instance) => {
    instance.removeAllContentTypeParsers();
    instance.addContentTypeParser('*', { parseAs: 'string', bodyLimit: bytesMax }, (_request, body, done) => done(null, body));
    for (const path of participant.paths) {
      instance.route({
        method: ['GET', 'POST'],
        url: path,
        handler: async (request, reply) => {
          // The route's own path, not request.url: under a prefix the latter includes it.
          const mark = request.url.indexOf('?');
          const url = mark < 0 ? path : path + request.url.slice(mark);
          const rawBody = typeof request.body === 'string' ? request.body : '';
          const answer = await participant.handle({ method: request.method, url, headers: request.headers, rawBody });
          return reply.code(answer.status).type(`${answer.contentType}; charset=utf-8`).send(answer.body);
        },
      });
    }
  };
}
