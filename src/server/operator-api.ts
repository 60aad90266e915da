// The operator's routes: force-stop and retry-now on one transaction (each written to the
// audit log: who, what, when, why, and how it ended), the audit log itself, and the stuck
// transactions grouped by branch URL.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Limits } from '../config.js';
import type { ApplyOutcome, Engine } from '../tx/engine.js';
import type { Store } from '../store/store.js';
import { forceStop, retryNow } from '../tx/operator.js';
import { groupByUrl, phaseSinceMs, stuckOps, type StuckOp } from '../tx/stuck.js';
import { bearerTokenOf, type TokenBook } from './auth.js';
import type { AuditAction, AuditEntry, AuditLog } from './audit.js';
import { txView } from './native-api.js';
import { conflict, notFound, ProblemError } from './problem.js';
import { gidSchema, parseOrThrow } from './validation.js';

export interface OperatorApiDeps {
  engine: Engine;
  store: Store;
  limits: Limits;
  audit: AuditLog;
  auth?: TokenBook;
}

/** Ops listed per URL group in a stuck answer; the count says how many there are in all. */
const stuckOpsPerGroupMax = 50;
/** Characters of an op's last error shown in a stuck answer (the transaction view has all of it). */
const lastErrorExcerptMax = 300;

export function operatorSchemas(limits: Limits) {
  const reason = z
    .string({ message: 'must be a string' })
    .trim()
    .min(1, 'must say why (it goes into the audit log)')
    .max(limits.operatorReasonLengthMax, `at most ${limits.operatorReasonLengthMax} characters (operatorReasonLengthMax)`);
  const forceStop = z.object({ reason, compensate: z.boolean({ message: 'must be true or false' }).optional() }).strict();
  const retryNow = z.object({ reason: reason.optional() }).strict();
  const count = (max: number, name: string) =>
    z.coerce.number({ message: 'must be a number' }).int('must be a whole number').min(1, 'must be at least 1').max(max, `at most ${max} (${name})`);
  const ms = z.coerce.number({ message: 'must be a number' }).int('must be a whole number').min(0, 'must not be negative');
  const audit = z.object({ limit: count(limits.listLimitMax, 'listLimitMax').optional(), before: count(Number.MAX_SAFE_INTEGER, 'seq').optional() }).strict();
  const stuck = z
    .object({
      retryingForMs: ms.optional(),
      abortingForMs: ms.optional(),
      attemptsMin: count(limits.retryLimitMax, 'retryLimitMax').optional(),
    })
    .strict();
  return { forceStop, retryNow, audit, stuck, gid: gidSchema(limits) };
}

export function registerOperatorApi(app: FastifyInstance, deps: OperatorApiDeps): void {
  const { engine, store, limits, audit } = deps;
  const s = operatorSchemas(limits);

  const actorOf = (request: FastifyRequest): string | null => {
    if (!deps.auth) return null;
    const header = request.headers.authorization;
    const token = bearerTokenOf(typeof header === 'string' ? header : undefined);
    return token === null ? null : (deps.auth.entryOf(token)?.name ?? null);
  };

  /** Runs an action, records it whatever came of it, and answers the transaction with its audit entry. */
  const act = async (request: FastifyRequest, gid: string, action: AuditAction, reason: string, compensate: boolean | undefined, outcome: Promise<ApplyOutcome>) => {
    const done = await outcome;
    const base = { actor: actorOf(request), remoteAddress: request.ip, action, gid, reason, ...(compensate !== undefined ? { compensate } : {}) };
    if (done.kind === 'not-found') {
      await audit.record({ ...base, outcome: 'not-found', detail: `no transaction has gid ${gid}` });
      throw notFound(`no transaction has gid ${gid}`);
    }
    if (done.kind === 'refused') {
      const entry = await audit.record({ ...base, outcome: 'refused', detail: done.error.message });
      const refusal = conflict(done.error.message, done.error.code);
      throw new ProblemError({ ...refusal.problem, auditSeq: entry.seq });
    }
    const entry: AuditEntry = await audit.record({ ...base, outcome: 'applied', detail: `${done.tx.status}/${done.tx.phase}` });
    return { transaction: txView(done.tx, limits.jsonDepthMax), audit: entry };
  };

  app.post<{ Params: { gid: string } }>('/v1/transactions/:gid/force-stop', async (request) => {
    const gid = parseOrThrow(s.gid, request.params.gid, ['gid']);
    const body = parseOrThrow(s.forceStop, request.body ?? {});
    const compensate = body.compensate ?? false;
    return act(request, gid, 'force-stop', body.reason, compensate, engine.operate(gid, (tx, ctx) => forceStop(tx, { reason: body.reason, compensate }, ctx), { waitForRound: false }));
  });

  app.post<{ Params: { gid: string } }>('/v1/transactions/:gid/retry-now', async (request) => {
    const gid = parseOrThrow(s.gid, request.params.gid, ['gid']);
    const body = parseOrThrow(s.retryNow, request.body ?? {});
    return act(request, gid, 'retry-now', body.reason ?? '', undefined, engine.operate(gid, retryNow, { waitForRound: false }));
  });

  // Not under /v1/transactions/: "counts" is a valid gid.
  app.get('/v1/transaction-counts', async () => ({
    unfinished: store.countUnfinished ? await store.countUnfinished() : null,
    activeInThisCoordinator: engine.activeCount,
  }));

  app.get('/v1/audit', async (request) => {
    const query = parseOrThrow(s.audit, request.query);
    return { ...audit.page(query.limit ?? 50, query.before), file: audit.path !== null };
  });

  app.get('/v1/stuck', async (request) => {
    const query = parseOrThrow(s.stuck, request.query);
    const thresholds = { retryingForMs: query.retryingForMs ?? 60_000, abortingForMs: query.abortingForMs ?? 60_000, attemptsMin: query.attemptsMin ?? 5 };
    const nowMs = Date.now();
    const ops: StuckOp[] = [];
    let scanned = 0;
    let complete = true;
    const stuckTransactions = new Set<string>();
    for (const status of ['submitted', 'aborting', 'prepared'] as const) {
      let cursor: string | undefined;
      let ended = false;
      // Bounded by stuckScanMax summaries over all statuses.
      while (scanned < limits.stuckScanMax) {
        const page = await store.list({ status, limit: Math.min(limits.listLimitMax, limits.stuckScanMax - scanned), ...(cursor ? { cursor } : {}) });
        scanned += page.items.length;
        for (const summary of page.items) {
          if (summary.nextAttemptAtMs === null) continue;
          const tx = await store.get(summary.gid);
          if (!tx) continue;
          const found = stuckOps(tx, phaseSinceMs(tx, await store.history(tx.gid)), nowMs, thresholds);
          if (found.length > 0) stuckTransactions.add(tx.gid);
          ops.push(...found.map((op) => (op.lastError !== undefined && op.lastError.length > lastErrorExcerptMax ? { ...op, lastError: `${op.lastError.slice(0, lastErrorExcerptMax)}…` } : op)));
        }
        if (page.nextCursor === null) {
          ended = true;
          break;
        }
        cursor = page.nextCursor;
      }
      if (!ended) complete = false;
    }
    return {
      thresholds,
      scanned,
      complete,
      transactions: stuckTransactions.size,
      groups: groupByUrl(ops, stuckOpsPerGroupMax).map((group) => ({
        url: group.url,
        count: group.count,
        ops: group.ops.map(({ sinceMs, nextAttemptAtMs, ...op }) => ({
          ...op,
          since: new Date(sinceMs).toISOString(),
          nextAttemptAt: nextAttemptAtMs === null ? null : new Date(nextAttemptAtMs).toISOString(),
        })),
      })),
    };
  });
}
