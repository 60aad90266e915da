// DTM-compatible HTTP API under /api/dtmsvr, so services written against DTM's SDKs (Go, Java,
// Python, Node, PHP, C#) drive Tandem unchanged. It follows DTM's answers: 200
// {"dtm_result":"SUCCESS"} when done, 409 {"dtm_result":"FAILURE","message":…} when refused
// (a duplicate gid in another status, a submit of a finished transaction, an abort that is not
// allowed), and, Tandem's own rule, 400 application/problem+json naming the DTM field for a
// malformed request (with dtm_result and message added so every SDK can show the reason).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { GidTakenError, type ApplyOutcome } from '../tx/engine.js';
import type { Tx, TxEvent } from '../tx/types.js';
import { decodeCursor, encodeCursor } from '../store/store.js';
import { tandemVersion } from '../shared/version.js';
import type { ApiDeps } from './native-api.js';
import { newGid } from './native-api.js';
import { DtmWorkflowRoutes, isDtmWorkflowRequest, registerDtmWorkflowApi } from './dtm-workflow-api.js';
import { invalid, problemOfError, ProblemError, type FieldError } from './problem.js';
import {
  checkTransType,
  dtmQueryView,
  dtmResult,
  dtmSchemas,
  dtmStatusOf,
  dtmSummaryView,
  globalStatusOf,
  modeOfTransType,
  msgDelayMs,
  parseDtm,
  toDtmNewTx,
  toDtmTccBranch,
  toDtmXaBranch,
  type DtmSchemas,
  type SupportedTransType,
  type DtmTransBody,
} from './dtm-shapes.js';

const prefix = '/api/dtmsvr';

type Handler = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/** Answers of the DTM protocol. */
const answer = {
  success: () => ({ dtm_result: dtmResult.success }),
  refuse: (reply: FastifyReply, message: string) => reply.code(409).send({ dtm_result: dtmResult.failure, message }),
  ongoing: (reply: FastifyReply, message: string) => reply.code(425).send({ dtm_result: dtmResult.ongoing, message }),
};

export function registerDtmApi(app: FastifyInstance, deps: ApiDeps): void {
  const schemas = dtmSchemas(deps.limits);
  const routes = new DtmRoutes(deps, schemas);

  app.get(`${prefix}/newGid`, async () => ({ gid: newGid(), dtm_result: dtmResult.success }));
  app.post(`${prefix}/prepare`, dtmHandler((request, reply) => routes.prepare(request, reply)));
  // trans_type "workflow" (DTM's workflow protocol) goes to dtm-workflow-api.ts.
  const workflow = deps.workflows ? new DtmWorkflowRoutes(deps.workflows, deps.limits) : null;
  if (workflow) registerDtmWorkflowApi(app, workflow);
  app.post(`${prefix}/submit`, dtmHandler((request, reply) => (workflow && isDtmWorkflowRequest(request) ? workflow.submit(request, reply) : routes.submit(request, reply))));
  app.post(`${prefix}/abort`, dtmHandler((request, reply) => routes.abort(request, reply)));
  // registerTccBranch and registerXaBranch are the names older SDKs (Node, PHP) still call.
  for (const name of ['registerBranch', 'registerTccBranch', 'registerXaBranch']) {
    app.post(`${prefix}/${name}`, dtmHandler((request, reply) => (workflow && isDtmWorkflowRequest(request) ? workflow.registerBranch(request, reply) : routes.registerBranch(request, reply))));
  }
  app.get(`${prefix}/query`, dtmHandler((request) => routes.query(request)));
  app.get(`${prefix}/all`, dtmHandler((request) => routes.all(request)));
  app.post(`${prefix}/forceStop`, dtmHandler((request, reply) => routes.forceStop(request, reply)));
  app.post(`${prefix}/resetNextCronTime`, dtmHandler((request, reply) => routes.resetNextCronTime(request, reply)));
  app.get(`${prefix}/resetCronTime`, dtmHandler((request) => routes.resetCronTime(request)));
  app.get(`${prefix}/version`, async () => ({ version: `tandem-${tandemVersion}` }));
  for (const route of notServed) {
    app.route({ method: route.method, url: `${prefix}/${route.path}`, handler: dtmHandler(async () => refuseNotServed(route)) });
  }
  // DTM's liveness probe.
  app.all('/api/ping', async () => ({ msg: 'pong' }));
}

/** DTM routes Tandem does not serve, each refused with why and what to use instead. */
interface NotServed {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  why: string;
}

export const notServed: readonly NotServed[] = [
  ...(['subscribe', 'unsubscribe'] as const).map((path) => ({
    method: 'GET' as const,
    path,
    why: 'Tandem keeps no topic subscriptions: give a msg step the subscriber\'s URL itself, or a broker target (rabbitmq:<exchange>/<routingKey>, jetstream:<subject>) and let the broker fan out',
  })),
  { method: 'DELETE', path: 'topic/:topicName', why: 'Tandem keeps no topic subscriptions, so there is no topic to delete' },
  ...(['scanKV', 'queryKV'] as const).map((path) => ({
    method: 'GET' as const,
    path,
    why: 'DTM\'s KV table holds only its topic subscriptions, which Tandem does not keep; Tandem\'s own key-value store is served under /v1/kv',
  })),
];

/** 501 problem+json with DTM's dtm_result and message (dtmHandler adds them). */
function refuseNotServed(route: NotServed): never {
  throw new ProblemError({
    type: 'urn:tandem:problem:not-served',
    title: 'Not served',
    status: 501,
    detail: `${route.method} ${prefix}/${route.path} is not served by Tandem. ${route.why}.`,
  });
}

/** Adds DTM's dtm_result/message to problems, so SDKs that read only those still see why. */
function dtmHandler(handler: Handler): Handler {
  return async (request, reply) => {
    try {
      return await handler(request, reply);
    } catch (error) {
      const problem = problemOfError(error);
      if (!problem) throw error;
      throw new ProblemError({ ...problem.problem, dtm_result: dtmResult.failure, message: problem.problem.detail });
    }
  };
}

class DtmRoutes {
  constructor(
    private readonly deps: ApiDeps,
    private readonly schemas: DtmSchemas,
  ) {}

  /**
   * Opens a TCC or XA transaction, prepares a message (which needs query_prepared) or a saga.
   * Repeating it while the transaction is still prepared is fine.
   */
  async prepare(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const body = parseDtm(this.schemas.trans, request.body);
    const transType = checkTransType(body.trans_type);
    // A prepared saga, as in DTM, keeps its steps and waits for a submit of the same gid
    // (or its timeout_to_fail, or forceStop) without calling anything.
    if (transType === 'msg' && !body.query_prepared) {
      throw invalid([{ field: 'query_prepared', message: 'a prepared msg needs the URL the coordinator asks when the app does not submit' }]);
    }
    const { spec } = this.translate(request, body, transType);
    try {
      await this.deps.engine.create(spec, { submit: false, waitForRound: false, traceparent: request.traceparent });
      return answer.success();
    } catch (error) {
      if (!(error instanceof GidTakenError)) throw error;
    }
    const existing = await this.deps.store.get(body.gid);
    if (existing && existing.status === 'prepared') return answer.success();
    return answer.refuse(reply, `current status '${existing ? dtmStatusOf(existing.status) : 'unknown'}', cannot prepare`);
  }

  /**
   * Starts a saga, or decides a prepared TCC transaction. A gid already submitted is accepted
   * again (an SDK retrying); one that has gone further is refused.
   */
  async submit(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const body = parseDtm(this.schemas.trans, request.body);
    const transType = checkTransType(body.trans_type);
    if (!(await this.deps.store.get(body.gid))) {
      // Only a new transaction needs its steps; an SDK submitting a prepared one may resend them.
      const { spec, waitResult } = this.translate(request, body, transType);
      try {
        const tx = await this.deps.engine.create(spec, { submit: true, waitForRound: waitResult, traceparent: request.traceparent });
        return this.submitted(reply, tx, waitResult);
      } catch (error) {
        if (!(error instanceof GidTakenError)) throw error;
      }
    }
    return this.submitExisting(body, reply, body.wait_result === true);
  }

  private translate(request: FastifyRequest, body: DtmTransBody, transType: SupportedTransType) {
    return toDtmNewTx(body, transType, forwardedHeaders(request, body), this.schemas, this.deps.limits, this.deps.brokers);
  }

  private async submitExisting(body: DtmTransBody, reply: FastifyReply, waitResult: boolean): Promise<unknown> {
    const existing = await this.deps.store.get(body.gid);
    if (!existing) return answer.refuse(reply, `transaction ${body.gid} vanished while being submitted`);
    if (existing.status === 'submitted') return this.submitted(reply, existing, waitResult);
    if (existing.status !== 'prepared') {
      return answer.refuse(reply, `current status '${dtmStatusOf(existing.status)}', cannot submit`);
    }
    const outcome = await this.deps.engine.apply(body.gid, submitEvent(existing, body), { waitForRound: waitResult });
    const tx = settled(outcome);
    if (typeof tx === 'string') return answer.refuse(reply, tx);
    return this.submitted(reply, tx, waitResult);
  }

  /** Without wait_result, submitted is enough; with it, DTM answers whether the transaction succeeded. */
  private submitted(reply: FastifyReply, tx: Tx, waitResult: boolean): unknown {
    if (!waitResult || tx.status === 'succeeded') return answer.success();
    if (tx.status === 'failed' || tx.status === 'aborting') {
      return answer.refuse(reply, tx.reason ?? `transaction ${tx.gid} is ${dtmStatusOf(tx.status)}`);
    }
    return answer.ongoing(reply, `transaction ${tx.gid} is still ${dtmStatusOf(tx.status)}; its branches are being retried`);
  }

  /** Cancels a prepared TCC, XA or message transaction; as in DTM, only before its decision. */
  async abort(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const body = parseDtm(this.schemas.trans, request.body);
    checkTransType(body.trans_type);
    const existing = await this.deps.store.get(body.gid);
    if (!existing) return answer.refuse(reply, `no transaction has gid ${body.gid}`);
    const abortable = existing.mode === 'tcc' || existing.mode === 'xa' || existing.mode === 'msg';
    if (!abortable || (existing.status !== 'prepared' && existing.status !== 'aborting')) {
      return answer.refuse(reply, `trans type '${existing.mode}' current status '${dtmStatusOf(existing.status)}', cannot abort (forceStop ends any unfinished transaction as failed, calling nothing)`);
    }
    const reason = (body.rollback_reason || 'aborted by the application').slice(0, 1000);
    const event: TxEvent = { type: 'abort', reason };
    const tx = settled(await this.deps.engine.apply(body.gid, event, { waitForRound: body.wait_result === true }));
    return typeof tx === 'string' ? answer.refuse(reply, tx) : answer.success();
  }

  /**
   * Adds a TCC branch's confirm and cancel, or an XA branch's url. Registering the same branch
   * id again is a no-op, as in DTM.
   */
  async registerBranch(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const body = parseDtm(this.schemas.branch, request.body);
    const transType = checkTransType(body.trans_type);
    if (transType !== 'tcc' && transType !== 'xa') {
      throw invalid([{ field: 'trans_type', message: `only tcc and xa transactions register branches, not ${transType}` }]);
    }
    const branch = transType === 'xa' ? toDtmXaBranch(body, this.schemas) : toDtmTccBranch(body, this.schemas);
    const existing = await this.deps.store.get(body.gid);
    if (!existing || existing.mode !== transType || existing.status !== 'prepared') {
      return answer.refuse(reply, `no prepared ${transType} transaction has gid ${body.gid}`);
    }
    if (existing.branches.some((known) => known.branchId === branch.branchId)) return answer.success();
    const outcome = await this.deps.engine.apply(body.gid, { type: 'register', branch, branchCountMax: this.deps.limits.branchCountMax }, { waitForRound: false });
    if (outcome.kind === 'refused' && outcome.error.code === 'duplicate-branch') return answer.success();
    if (outcome.kind === 'refused' && outcome.error.code === 'branch-limit') throw invalid([{ field: 'branch_id', message: outcome.error.message }]);
    const tx = settled(outcome);
    return typeof tx === 'string' ? answer.refuse(reply, tx) : answer.success();
  }

  /** DTM answers an unknown gid with a null transaction, not an error. */
  async query(request: FastifyRequest): Promise<unknown> {
    const { gid } = parseDtm(this.schemas.query, request.query);
    return dtmQueryView(await this.deps.store.get(gid));
  }

  /** Newest first, paged by `position` (the next_position of the previous page; "" at the end). */
  async all(request: FastifyRequest): Promise<unknown> {
    const query = parseDtm(this.schemas.list, request.query);
    if (query.gid) {
      const tx = await this.deps.store.get(query.gid);
      return { transactions: tx ? [dtmQueryView(tx).transaction] : [], next_position: '' };
    }
    const status = query.status ? globalStatusOf(query.status) : undefined;
    if (status === null) throw invalid([{ field: 'status', message: 'must be one of prepared, submitted, aborting, succeed, failed' }]);
    const mode = query.transType ? modeOfTransType(query.transType) : undefined;
    if (mode === null) return { transactions: [], next_position: '' };
    if (query.position && !decodeCursor(query.position)) {
      throw invalid([{ field: 'position', message: 'is not a next_position this server gave' }]);
    }
    const requested = query.limit === undefined ? 100 : Number(query.limit);
    if (requested < 1) throw invalid([{ field: 'limit', message: 'must be at least 1' }]);
    const range = createTimeRange(query.createTimeStart, query.createTimeEnd);
    // The listing is newest first, so a createTimeEnd is a starting position.
    const cursor = query.position || (range.endBeforeMs !== null ? encodeCursor(range.endBeforeMs, '') : undefined);
    // A larger limit is served in pages of listLimitMax: next_position leads on.
    const page = await this.deps.store.list({
      ...(status ? { status } : {}),
      ...(mode ? { mode } : {}),
      ...(cursor ? { cursor } : {}),
      limit: Math.min(requested, this.deps.limits.listLimitMax),
    });
    const items = page.items.filter((item) => item.createdAtMs >= range.startMs);
    // Once a page reaches past createTimeStart, nothing older can match.
    const exhausted = items.length < page.items.length;
    return { transactions: items.map(dtmSummaryView), next_position: exhausted ? '' : (page.nextCursor ?? '') };
  }

  /**
   * DTM's forceStop: ends an unfinished transaction as failed at once, whatever its type and
   * status, calling nothing more (no compensation, cancel or rollback): the operator takes over
   * whatever the branches were left with. An ended transaction is refused.
   */
  async forceStop(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const { gid } = parseDtm(this.schemas.gidOnly, request.body);
    const outcome = await this.deps.engine.apply(gid, { type: 'forceStop', reason: 'forceStop: ended by an operator; no further branch was called' }, { waitForRound: false });
    const tx = settled(outcome);
    if (typeof tx === 'string') {
      const status = outcome.kind === 'refused' ? dtmStatusOf(outcome.tx.status) : 'unknown';
      return answer.refuse(reply, `global transaction force stop error. status: ${status}. ${tx}`);
    }
    return answer.success();
  }

  /** DTM's resetNextCronTime: the pending calls of one unfinished transaction are retried now, backoff reset. */
  async resetNextCronTime(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const { gid } = parseDtm(this.schemas.gidOnly, request.body);
    const tx = settled(await this.deps.engine.apply(gid, { type: 'retryNow' }, { waitForRound: false }));
    return typeof tx === 'string' ? answer.refuse(reply, `${tx}: ${gid}`) : answer.success();
  }

  /**
   * DTM's resetCronTime: retry now every unfinished transaction whose next attempt is more
   * than `timeout` seconds away (default 3 × 35 s), newest first. Tandem looks at most `limit`
   * (default 100, at most listLimitMax) submitted and aborting transactions per call; while
   * `has_remaining` is true, call again.
   */
  async resetCronTime(request: FastifyRequest): Promise<unknown> {
    const query = parseDtm(this.schemas.resetCron, request.query);
    const afterMs = (query.timeout === undefined ? 3 * 35 : Number(query.timeout)) * 1000;
    const limit = Math.min(query.limit === undefined ? 100 : Number(query.limit), this.deps.limits.listLimitMax);
    if (limit < 1) throw invalid([{ field: 'limit', message: 'must be at least 1' }]);
    let examined = 0;
    let succeedCount = 0;
    let hasRemaining = false;
    for (const status of ['submitted', 'aborting'] as const) {
      const page = await this.deps.store.list({ status, limit: limit - examined });
      examined += page.items.length;
      if (page.nextCursor) hasRemaining = true;
      const farOff = page.items.filter((item) => item.nextAttemptAtMs !== null && item.nextAttemptAtMs > Date.now() + afterMs);
      for (const item of farOff) {
        const outcome = await this.deps.engine.apply(item.gid, { type: 'retryNow' }, { waitForRound: false });
        if (outcome.kind === 'ok') succeedCount += 1;
      }
      if (examined >= limit) break;
    }
    return { has_remaining: hasRemaining, succeed_count: succeedCount };
  }
}

/** A submit, with the delay a DTM client gives a message only when it submits (Msg.SetDelay). */
function submitEvent(existing: Tx, body: DtmTransBody): TxEvent {
  if (existing.mode !== 'msg') return { type: 'submit' };
  const errors: FieldError[] = [];
  const delayMs = msgDelayMs(body.custom_data, errors);
  if (errors.length > 0) throw invalid(errors);
  return delayMs ? { type: 'submit', delayMs } : { type: 'submit' };
}

/**
 * DTM's createTimeStart/createTimeEnd filters: epoch milliseconds compared, as DTM does, at
 * whole seconds and inclusive at both ends. Returns the first millisecond kept and the first
 * one past the end (null: no end).
 */
function createTimeRange(start: string | undefined, end: string | undefined): { startMs: number; endBeforeMs: number | null } {
  const seconds = (value: string | undefined, field: string): number | null => {
    if (value === undefined || value === '') return null;
    if (!/^[0-9]{1,15}$/.test(value)) throw invalid([{ field, message: 'must be a time in epoch milliseconds' }]);
    return Math.floor(Number(value) / 1000);
  };
  const startSeconds = seconds(start, 'createTimeStart');
  const endSeconds = seconds(end, 'createTimeEnd');
  return { startMs: startSeconds === null ? 0 : startSeconds * 1000, endBeforeMs: endSeconds === null ? null : (endSeconds + 1) * 1000 };
}

/** The transaction an engine call left, or why it was refused. */
function settled(outcome: ApplyOutcome): Tx | string {
  if (outcome.kind === 'not-found') return 'no such transaction';
  if (outcome.kind === 'refused') return outcome.error.message;
  return outcome.tx;
}

/** DTM copies the headers named in passthrough_headers from the API request into branch calls. */
function forwardedHeaders(request: FastifyRequest, body: DtmTransBody): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const name of body.passthrough_headers ?? []) {
    const value = request.headers[name.toLowerCase()];
    if (typeof value === 'string') headers[name] = value;
  }
  return headers;
}
