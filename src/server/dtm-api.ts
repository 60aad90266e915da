// DTM-compatible HTTP API under /api/dtmsvr, so services written against DTM's SDKs (Go, Java,
// Python, Node, PHP, C#) drive Tandem unchanged. It follows DTM's answers: 200
// {"dtm_result":"SUCCESS"} when done, 409 {"dtm_result":"FAILURE","message":…} when refused
// (a duplicate gid in another status, a submit of a finished transaction, an abort that is not
// allowed), and, Tandem's own rule, 400 application/problem+json naming the DTM field for a
// malformed request (with dtm_result and message added so every SDK can show the reason).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { GidTakenError, type ApplyOutcome } from '../tx/engine.js';
import type { Tx, TxEvent } from '../tx/types.js';
import { decodeCursor } from '../store/store.js';
import type { ApiDeps } from './native-api.js';
import { newGid } from './native-api.js';
import { DtmWorkflowRoutes, isDtmWorkflowRequest, registerDtmWorkflowApi } from './dtm-workflow-api.js';
import { invalid, problemOfError, ProblemError } from './problem.js';
import {
  checkTransType,
  dtmQueryView,
  dtmResult,
  dtmSchemas,
  dtmStatusOf,
  dtmSummaryView,
  globalStatusOf,
  modeOfTransType,
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
  // DTM's liveness probe.
  app.all('/api/ping', async () => ({ msg: 'pong' }));
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
   * Opens a TCC or XA transaction, or prepares a message (which needs query_prepared).
   * Repeating it while the transaction is still prepared is fine.
   */
  async prepare(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const body = parseDtm(this.schemas.trans, request.body);
    const transType = checkTransType(body.trans_type);
    if (transType === 'saga') {
      throw invalid([{ field: 'trans_type', message: 'prepare opens tcc, xa and msg transactions; a saga is sent with submit' }]);
    }
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
    const outcome = await this.deps.engine.apply(body.gid, { type: 'submit' }, { waitForRound: waitResult });
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
      return answer.refuse(reply, `trans type '${existing.mode}' current status '${dtmStatusOf(existing.status)}', cannot abort`);
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
    // A larger limit is served in pages of listLimitMax: next_position leads on.
    const page = await this.deps.store.list({
      ...(status ? { status } : {}),
      ...(mode ? { mode } : {}),
      ...(query.position ? { cursor: query.position } : {}),
      limit: Math.min(requested, this.deps.limits.listLimitMax),
    });
    return { transactions: page.items.map(dtmSummaryView), next_position: page.nextCursor ?? '' };
  }
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
