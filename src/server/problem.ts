// RFC 9457 problem details: every refusal the API makes has this shape.
import type { FastifyReply } from 'fastify';
import { BusyError, GidTakenError, OverloadedError, VersionConflictError } from '../tx/engine.js';
import { StoreUnavailableError } from '../store/store.js';

export interface FieldError {
  field: string;
  message: string;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: FieldError[];
  [extra: string]: unknown;
}

export class ProblemError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
    this.name = 'ProblemError';
  }
}

export const problemContentType = 'application/problem+json';

export function invalid(errors: FieldError[]): ProblemError {
  const detail = errors.map((error) => `${error.field}: ${error.message}`).join('; ');
  return new ProblemError({ type: 'urn:tandem:problem:invalid-request', title: 'Invalid request', status: 400, detail, errors });
}

export function notFound(detail: string): ProblemError {
  return new ProblemError({ type: 'urn:tandem:problem:not-found', title: 'Not found', status: 404, detail });
}

export function conflict(detail: string, code: string): ProblemError {
  return new ProblemError({ type: `urn:tandem:problem:${code}`, title: 'Conflict', status: 409, detail });
}

export function unavailable(detail: string): ProblemError {
  return new ProblemError({ type: 'urn:tandem:problem:unavailable', title: 'Service unavailable', status: 503, detail });
}

export function tooLarge(detail: string, field = 'body'): ProblemError {
  return new ProblemError({ type: 'urn:tandem:problem:too-large', title: 'Payload too large', status: 413, detail, errors: [{ field, message: detail }] });
}

/**
 * The problem an operating error of the engine or the store stands for (a gid taken, a
 * concurrent change, overload, the store down), or null for an error nobody expected.
 */
export function problemOfError(error: unknown): ProblemError | null {
  if (error instanceof ProblemError) return error;
  if (error instanceof GidTakenError) return conflict(error.message, 'gid-taken');
  if (error instanceof VersionConflictError) return conflict(error.message, 'concurrent-change');
  if (error instanceof OverloadedError || error instanceof BusyError) return unavailable(error.message);
  if (error instanceof StoreUnavailableError) return unavailable(`the store is unavailable: ${error.message}`);
  return null;
}

export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  if (problem.status === 503) reply.header('retry-after', '1');
  return reply.code(problem.status).type(problemContentType).send(JSON.stringify(problem));
}

/** `['branches', 1, 'action']` → `branches[1].action` */
export function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out.length === 0 ? String(part) : `.${String(part)}`;
  }
  return out.length > 0 ? out : 'body';
}
