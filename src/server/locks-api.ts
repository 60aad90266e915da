// Distributed locks over HTTP: /v1/locks/:name/{acquire,renew,release}, GET /v1/locks/:name,
// and sessions under /v1/sessions. An acquire that has to wait stays open until the lock
// manager grants it or its waitMs passes (the server answers the moment either happens; the
// client never polls). Lease and session ids travel in bodies, never in URLs: they are the
// holder's proof and should not end up in access logs.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Limits } from '../config.js';
import { lockModes } from '../locks/manager.js';
import type { Locks, Outcome } from '../locks/service.js';
import { conflict, invalid, ProblemError, unavailable } from './problem.js';
import { parseOrThrow } from './validation.js';

export interface LocksApiDeps {
  locks: Locks;
  limits: Limits;
}

const idPattern = /^[A-Za-z0-9_-]{16,64}$/;
const noControlCharacters = /^[^\x00-\x1f\x7f]*$/;

export function lockSchemas(limits: Limits) {
  const ttlMs = z
    .number({ message: 'must be a number' })
    .int('must be a whole number')
    .min(limits.lockTtlMsMin, `at least ${limits.lockTtlMsMin} (lockTtlMsMin)`)
    .max(limits.lockTtlMsMax, `at most ${limits.lockTtlMsMax} (lockTtlMsMax)`);
  const id = z.string().regex(idPattern, 'must be 16 to 64 letters, digits, _ or -');
  const owner = z
    .string()
    .max(limits.lockNameLengthMax, `at most ${limits.lockNameLengthMax} characters (lockNameLengthMax)`)
    .regex(noControlCharacters, 'must not contain control characters');
  const name = z
    .string()
    .min(1, 'must not be empty')
    .max(limits.lockNameLengthMax, `at most ${limits.lockNameLengthMax} characters (lockNameLengthMax)`)
    .regex(noControlCharacters, 'must not contain control characters');
  const acquire = z
    .object({
      mode: z.enum(lockModes, { message: `must be one of ${lockModes.join(', ')}` }).optional(),
      permits: z
        .number({ message: 'must be a number' })
        .int('must be a whole number')
        .min(1, 'must be at least 1')
        .max(limits.lockPermitsMax, `at most ${limits.lockPermitsMax} (lockPermitsMax)`)
        .optional(),
      ttlMs: ttlMs.optional(),
      sessionId: id.optional(),
      waitMs: z
        .number({ message: 'must be a number' })
        .int('must be a whole number')
        .min(0, 'must not be negative')
        .max(limits.lockWaitMsMax, `at most ${limits.lockWaitMsMax} (lockWaitMsMax)`)
        .optional(),
      fair: z.boolean({ message: 'must be true or false' }).optional(),
      owner: owner.optional(),
      leaseId: id.optional(),
    })
    .strict()
    .superRefine((body, context) => {
      if (body.ttlMs === undefined && body.sessionId === undefined) {
        context.addIssue({ code: 'custom', path: ['ttlMs'], message: 'is required unless the lease is bound to a sessionId' });
      }
      if (body.ttlMs !== undefined && body.sessionId !== undefined) {
        context.addIssue({ code: 'custom', path: ['ttlMs'], message: 'must not be given with sessionId: a session-bound lease lives as long as its session' });
      }
      if (body.mode === 'semaphore' && body.permits === undefined) {
        context.addIssue({ code: 'custom', path: ['permits'], message: 'is required for a semaphore' });
      }
      if (body.mode !== 'semaphore' && body.permits !== undefined) {
        context.addIssue({ code: 'custom', path: ['permits'], message: 'only a semaphore has permits' });
      }
    });
  const renew = z.object({ leaseId: id, ttlMs: ttlMs.optional() }).strict();
  const release = z.object({ leaseId: id }).strict();
  const openSession = z.object({ ttlMs, owner: owner.optional(), sessionId: id.optional() }).strict();
  return { name, id, acquire, renew, release, openSession };
}

export function registerLocksApi(app: FastifyInstance, deps: LocksApiDeps): void {
  const { locks, limits } = deps;
  const s = lockSchemas(limits);
  const nameOf = (request: FastifyRequest<{ Params: { name: string } }>) => parseOrThrow(s.name, request.params.name, ['name']);

  app.post<{ Params: { name: string } }>('/v1/locks/:name/acquire', async (request, reply) => {
    const name = nameOf(request);
    const body = parseOrThrow(s.acquire, request.body ?? {});
    const mode = body.mode ?? 'exclusive';
    const gone = clientGone(reply);
    const outcome = await locks.acquire(
      {
        name,
        mode,
        permits: body.permits ?? 1,
        ttlMs: body.ttlMs ?? null,
        sessionId: body.sessionId ?? null,
        owner: body.owner ?? '',
        fair: body.fair ?? true,
        waitMs: body.waitMs ?? 0,
        ...(body.leaseId ? { leaseId: body.leaseId } : {}),
      },
      gone.signal,
    );
    gone.dispose();
    if (outcome.kind === 'granted' && gone.signal.aborted) {
      // Nobody is left to hear of the grant: give the lock to the next waiter now rather than
      // when the lease runs out.
      await locks.release(name, outcome.lease.leaseId);
    }
    if (outcome.kind !== 'granted') throw problemOf(outcome, name);
    const { lease } = outcome;
    return {
      name,
      leaseId: lease.leaseId,
      token: lease.token,
      mode: lease.mode,
      ...(lease.mode === 'semaphore' ? { permits: lease.permits } : {}),
      owner: lease.owner,
      ...(lease.sessionId !== null ? { sessionId: lease.sessionId } : { ttlMs: lease.ttlMs }),
      ttlRemainingMs: outcome.ttlRemainingMs,
      waitedMs: outcome.waitedMs,
      elapsedMs: round(outcome.elapsedMs),
    };
  });

  app.post<{ Params: { name: string } }>('/v1/locks/:name/renew', async (request) => {
    const name = nameOf(request);
    const body = parseOrThrow(s.renew, request.body ?? {});
    const outcome = await locks.renew(name, body.leaseId, body.ttlMs ?? null);
    if (outcome.kind !== 'renewed') throw problemOf(outcome, name);
    return { name, token: outcome.lease.token, ttlRemainingMs: outcome.ttlRemainingMs, elapsedMs: round(outcome.elapsedMs) };
  });

  app.post<{ Params: { name: string } }>('/v1/locks/:name/release', async (request) => {
    const name = nameOf(request);
    const body = parseOrThrow(s.release, request.body ?? {});
    const outcome = await locks.release(name, body.leaseId);
    if (outcome.kind !== 'released') throw problemOf(outcome, name);
    return { name, released: true };
  });

  app.get<{ Params: { name: string } }>('/v1/locks/:name', async (request) => {
    const name = nameOf(request);
    let view: Awaited<ReturnType<Locks['inspect']>>;
    try {
      view = await locks.inspect(name);
    } catch {
      // Only a shared store's read can fail here.
      throw unavailable('the lock store is unavailable');
    }
    return {
      name,
      kind: view.kind,
      permits: view.permits,
      holders: view.holders.map((holder) => ({
        owner: holder.owner,
        mode: holder.mode,
        token: holder.token,
        sessionBound: holder.sessionBound,
        grantedAt: new Date(holder.grantedAtMs).toISOString(),
        expiresAt: new Date(holder.expiresAtMs).toISOString(),
        ttlRemainingMs: Math.max(0, holder.expiresAtMs - view.nowMs),
      })),
      waiters: view.waiters.map((waiter) => ({
        owner: waiter.owner,
        mode: waiter.mode,
        fair: waiter.fair,
        waitedMs: view.nowMs - waiter.arrivedAtMs,
        waitRemainingMs: Math.max(0, waiter.deadlineMs - view.nowMs),
      })),
    };
  });

  app.post('/v1/sessions', async (request, reply) => {
    const body = parseOrThrow(s.openSession, request.body ?? {});
    const outcome = await locks.openSession(body.ttlMs, body.owner ?? '', body.sessionId);
    if (outcome.kind !== 'session') throw problemOf(outcome, '');
    return reply.code(201).send(sessionView(outcome));
  });

  app.post<{ Params: { sessionId: string } }>('/v1/sessions/:sessionId/keepalive', async (request) => {
    const sessionId = parseOrThrow(s.id, request.params.sessionId, ['sessionId']);
    const outcome = await locks.keepalive(sessionId);
    if (outcome.kind !== 'session') throw problemOf(outcome, '');
    return sessionView(outcome);
  });

  app.delete<{ Params: { sessionId: string } }>('/v1/sessions/:sessionId', async (request) => {
    const sessionId = parseOrThrow(s.id, request.params.sessionId, ['sessionId']);
    const outcome = await locks.closeSession(sessionId);
    if (outcome.kind !== 'session-closed') throw problemOf(outcome, '');
    return { closed: true, releasedLeases: outcome.releasedCount };
  });
}

function sessionView(outcome: Extract<Outcome, { kind: 'session' }>) {
  const { session } = outcome;
  return { sessionId: session.sessionId, owner: session.owner, ttlMs: session.ttlMs, ttlRemainingMs: outcome.ttlRemainingMs, elapsedMs: round(outcome.elapsedMs) };
}

/** Aborts when the client goes away before its answer was written (a waiter that died). */
function clientGone(reply: FastifyReply): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const onClose = () => {
    if (!reply.raw.writableFinished) controller.abort();
  };
  reply.raw.on('close', onClose);
  return { signal: controller.signal, dispose: () => reply.raw.off('close', onClose) };
}

function problemOf(outcome: Outcome, name: string): ProblemError {
  switch (outcome.kind) {
    case 'busy':
      return conflict(
        outcome.reason === 'held' ? `lock "${name}" is held and waitMs was 0` : `lock "${name}" was not granted within waitMs`,
        'lock-busy',
      );
    case 'mismatch':
      return conflict(outcome.detail, 'lock-kind-mismatch');
    case 'lease-id-taken':
      return conflict('this leaseId belongs to another lock or mode; use a fresh random id per lease', 'lease-id-taken');
    case 'not-holder':
      return conflict(`no live lease with this leaseId holds lock "${name}": it expired, was released, or never existed`, 'not-holder');
    case 'no-session':
      return new ProblemError({ type: 'urn:tandem:problem:session-not-found', title: 'Not found', status: 404, detail: 'no live session has this id: it expired, was closed, or never existed' });
    case 'too-many':
      return unavailable(tooManyDetail(outcome.what));
    case 'superseded':
      return conflict('a newer acquire with the same leaseId took this request\'s place in the queue', 'superseded');
    case 'cancelled':
      return conflict('the acquire was cancelled because its client went away', 'cancelled');
    case 'expired-before-answer':
      return unavailable('the lease was granted but ran out before the answer could be sent; acquire again');
    case 'unavailable':
      return unavailable(outcome.detail);
    default:
      return invalid([{ field: 'body', message: `unexpected outcome ${outcome.kind}` }]);
  }
}

function tooManyDetail(what: 'waiters' | 'leases' | 'sessions'): string {
  if (what === 'waiters') return 'the lock has lockWaitersPerLockMax waiters already';
  if (what === 'leases') return 'the coordinator holds lockLeasesMax leases already';
  return 'the coordinator has lockSessionsMax sessions already';
}

function round(valueMs: number): number {
  return Math.round(valueMs * 1000) / 1000;
}
