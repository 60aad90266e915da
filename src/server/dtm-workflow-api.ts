// DTM's workflow protocol on the DTM-compatible API: prepareWorkflow, and registerBranch and
// submit when their trans_type is "workflow" (dtm-api.ts hands those here). Shapes follow what
// DTM's Go client (client/workflow) sends; see docs/workflows.md#dtms-workflow-protocol.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Limits } from '../config.js';
import type { Tx } from '../tx/types.js';
import { WorkflowNotFoundError, WorkflowRefusedError, type WorkflowService } from '../tx/workflow-service.js';
import { dtmResult, dtmStatusOf } from './dtm-shapes.js';
import { invalid } from './problem.js';
import { gidSchema, httpUrlSchema, parseOrThrow } from './validation.js';

const prefix = '/api/dtmsvr';

/** The request is DTM workflow traffic (registerBranch, submit). */
export function isDtmWorkflowRequest(request: FastifyRequest): boolean {
  const body = request.body as { trans_type?: unknown } | undefined;
  return typeof body === 'object' && body !== null && body.trans_type === 'workflow';
}

function schemas(limits: Limits) {
  const gid = gidSchema(limits);
  const text = z.string().max(limits.workflowValueBytesMax, `at most ${limits.workflowValueBytesMax} characters (workflowValueBytesMax)`);
  return {
    // The client sends its whole TransBase; the fields Tandem uses are checked, the rest pass.
    prepare: z.object({ gid, trans_type: z.literal('workflow'), custom_data: text, query_prepared: httpUrlSchema(limits) }).passthrough(),
    customData: z.object({ name: z.string().min(1, 'must not be empty').max(limits.branchIdLengthMax), data: z.string().nullable().optional() }).passthrough(),
    register: z.object({
      gid,
      trans_type: z.literal('workflow'),
      branch_id: z.string().min(1, 'must not be empty').max(limits.branchIdLengthMax),
      op: z.string().min(1, 'must not be empty').max(32),
      status: z.enum(['succeed', 'failed']),
      data: text.optional(),
    }).passthrough(),
    submit: z.object({
      gid,
      trans_type: z.literal('workflow'),
      req_extra: z.object({ status: z.enum(['succeed', 'failed']), rollback_reason: text.optional(), result: text.optional() }).passthrough(),
    }).passthrough(),
  };
}

/** What prepareWorkflow answers: the transaction and every recorded branch op ("progresses"). */
export function dtmProgressesView(tx: Tx) {
  return {
    transaction: { gid: tx.gid, status: dtmStatusOf(tx.status), rollback_reason: tx.reason ?? '', result: tx.extra?.output ?? '' },
    progresses: tx.branches.flatMap((branch) =>
      Object.entries(branch.ops).map(([op, state]) => ({
        branch_id: branch.branchId,
        op,
        status: state.status === 'succeeded' ? 'succeed' : state.status,
        // bytes in DTM's JSON: base64 of what registerBranch sent as data.
        bin_data: Buffer.from(state.result ?? '', 'utf8').toString('base64'),
      })),
    ),
  };
}

export class DtmWorkflowRoutes {
  private readonly s: ReturnType<typeof schemas>;

  constructor(private readonly workflows: WorkflowService, limits: Limits) {
    this.s = schemas(limits);
  }

  async prepare(request: FastifyRequest): Promise<unknown> {
    const body = parseOrThrow(this.s.prepare, request.body ?? {});
    let custom: unknown;
    try {
      custom = JSON.parse(body.custom_data);
    } catch {
      throw invalid([{ field: 'custom_data', message: 'is not JSON' }]);
    }
    const { name, data } = parseOrThrow(this.s.customData, custom, ['custom_data']);
    const tx = await this.workflows.prepareDtm({ gid: body.gid, name, dataBase64: data ?? '', callbackUrl: body.query_prepared });
    return dtmProgressesView(tx);
  }

  async registerBranch(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const body = parseOrThrow(this.s.register, request.body ?? {});
    return this.answering(reply, () => this.workflows.dtmRegister(body.gid, body.branch_id, body.op, body.status === 'succeed' ? 'succeeded' : 'failed', body.data ?? ''));
  }

  async submit(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const body = parseOrThrow(this.s.submit, request.body ?? {});
    const extra = body.req_extra;
    const end = extra.status === 'succeed'
      ? { status: 'succeeded' as const, resultBase64: extra.result ?? '' }
      : { status: 'failed' as const, reason: extra.rollback_reason ?? 'failed' };
    return this.answering(reply, () => this.workflows.dtmSubmit(body.gid, end));
  }

  /** DTM's answers: SUCCESS, or 409 FAILURE with the reason. */
  private async answering(reply: FastifyReply, work: () => Promise<Tx>): Promise<unknown> {
    try {
      await work();
      return { dtm_result: dtmResult.success };
    } catch (error) {
      if (error instanceof WorkflowNotFoundError || error instanceof WorkflowRefusedError) {
        return reply.code(409).send({ dtm_result: dtmResult.failure, message: error.message });
      }
      throw error;
    }
  }
}

export function registerDtmWorkflowApi(app: FastifyInstance, routes: DtmWorkflowRoutes): void {
  app.post(`${prefix}/prepareWorkflow`, (request) => routes.prepare(request));
}
