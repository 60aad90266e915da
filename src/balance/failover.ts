// HTTP requests over a balanced set of instances, with failover: a connection error or a 5xx
// answer sends the request to another instance not tried yet, while the retry budget allows.
// Every outcome is reported to the balancer (onResult) and to the outlier detector, so failing
// instances get ejected and stop being picked.
//
// A retried request is sent again in full, so the body must be a string or bytes, and the
// endpoint should be idempotent (Tandem's branch endpoints are, through barriers). Pass
// `retry: false` for a request that must never be sent twice.
//
// The last attempt's answer is returned even when it is a 5xx (the caller sees what the
// service said); if the last attempt failed without an answer, FailoverError is thrown with
// every attempt.

import { request, type Dispatcher } from 'undici';
import type { Balancer, Instance } from './balancers.js';
import type { OutlierDetector } from './outlier.js';
import type { RetryBudget } from './retry-budget.js';
import { describeError } from './health.js';

export interface FailoverOptions<T extends Instance = Instance> {
  readonly balancer: Balancer<T>;
  readonly outlier?: OutlierDetector;
  readonly retryBudget?: RetryBudget;
  /** Attempts per request, the first included (default 3). */
  readonly maxAttempts?: number;
  /** Limit for each attempt's headers and for each gap in its body (default 10 s). */
  readonly attemptTimeoutMs?: number;
  readonly dispatcher?: Dispatcher;
  /** Whether an answer counts as a failure (default: status ≥ 500). */
  readonly isFailureStatus?: (statusCode: number) => boolean;
}

export interface FailoverRequest {
  readonly path: string;
  readonly method?: Dispatcher.HttpMethod;
  readonly headers?: Record<string, string>;
  readonly body?: string | Uint8Array;
  /** Routing key for key-affinity balancers. */
  readonly key?: string;
  /** False: one attempt only, whatever happens. */
  readonly retry?: boolean;
  readonly signal?: AbortSignal;
}

export interface AttemptRecord {
  readonly instanceId: string;
  readonly latencyMs: number;
  readonly statusCode?: number;
  readonly error?: string;
}

export interface FailoverResponse<T extends Instance = Instance> {
  readonly statusCode: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
  readonly instance: T;
  readonly attempts: readonly AttemptRecord[];
}

export class NoInstanceAvailableError extends Error {
  constructor(readonly attempts: readonly AttemptRecord[]) {
    super(attempts.length === 0 ? 'no instance available' : `no instance left to fail over to after ${attempts.length} attempt(s)`);
    this.name = 'NoInstanceAvailableError';
  }
}

export class FailoverError extends Error {
  constructor(
    message: string,
    readonly attempts: readonly AttemptRecord[],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'FailoverError';
  }
}

type AttemptOutcome<T extends Instance> =
  | { readonly kind: 'answer'; readonly response: FailoverResponse<T>; readonly failed: boolean }
  | { readonly kind: 'error'; readonly error: unknown };

export class FailoverClient<T extends Instance = Instance> {
  private readonly options: FailoverOptions<T>;
  private readonly maxAttempts: number;
  private readonly attemptTimeoutMs: number;
  private readonly isFailureStatus: (statusCode: number) => boolean;

  constructor(options: FailoverOptions<T>) {
    this.options = options;
    this.maxAttempts = options.maxAttempts ?? 3;
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? 10_000;
    this.isFailureStatus = options.isFailureStatus ?? ((statusCode) => statusCode >= 500);
    if (!(this.maxAttempts >= 1)) throw new RangeError('failover: maxAttempts must be ≥ 1');
  }

  async request(input: FailoverRequest): Promise<FailoverResponse<T>> {
    const budget = this.options.retryBudget;
    budget?.requestStarted();
    try {
      return await this.attemptInTurn(input);
    } finally {
      budget?.requestFinished();
    }
  }

  private async attemptInTurn(input: FailoverRequest): Promise<FailoverResponse<T>> {
    const attempts: AttemptRecord[] = [];
    const tried = new Set<string>();
    const attemptLimit = input.retry === false ? 1 : this.maxAttempts;
    let lastAnswer: FailoverResponse<T> | undefined;
    let lastError: unknown;
    for (let attempt = 1; attempt <= attemptLimit; attempt += 1) {
      const isRetry = attempt > 1;
      if (isRetry && this.options.retryBudget !== undefined && !this.options.retryBudget.tryAcquireRetry()) break;
      try {
        const instance = this.options.balancer.pick(input.key, tried);
        if (instance === undefined) break;
        tried.add(instance.id);
        const outcome = await this.attempt(instance, input, attempts);
        if (outcome.kind === 'answer' && !outcome.failed) return outcome.response;
        if (outcome.kind === 'answer') {
          lastAnswer = outcome.response;
        } else {
          lastError = outcome.error;
          if (input.signal?.aborted) break;
        }
      } finally {
        if (isRetry) this.options.retryBudget?.retryFinished();
      }
    }
    // A failed answer (5xx) says more than a later connection error, so it wins.
    if (lastAnswer !== undefined) return lastAnswer;
    if (lastError !== undefined) {
      throw new FailoverError(`request failed after ${attempts.length} attempt(s): ${describeError(lastError)}`, attempts, { cause: lastError });
    }
    throw new NoInstanceAvailableError(attempts);
  }

  private async attempt(instance: T, input: FailoverRequest, attempts: AttemptRecord[]): Promise<AttemptOutcome<T>> {
    const startedAt = performance.now();
    try {
      const response = await request(`${instance.url}${input.path}`, {
        method: input.method ?? (input.body === undefined ? 'GET' : 'POST'),
        headers: input.headers,
        body: input.body,
        headersTimeout: this.attemptTimeoutMs,
        bodyTimeout: this.attemptTimeoutMs,
        ...(input.signal === undefined ? {} : { signal: input.signal }),
        ...(this.options.dispatcher === undefined ? {} : { dispatcher: this.options.dispatcher }),
      });
      const body = Buffer.from(await response.body.arrayBuffer());
      const latencyMs = performance.now() - startedAt;
      const failed = this.isFailureStatus(response.statusCode);
      this.report(instance, !failed, latencyMs);
      const record = { instanceId: instance.id, latencyMs, statusCode: response.statusCode };
      attempts.push(record);
      return {
        kind: 'answer',
        failed,
        response: { statusCode: response.statusCode, headers: response.headers, body, instance, attempts },
      };
    } catch (error) {
      const latencyMs = performance.now() - startedAt;
      // A caller's abort says nothing about the instance: close the pick without blaming it.
      if (input.signal?.aborted) this.options.balancer.onResult(instance, true, latencyMs);
      else this.report(instance, false, latencyMs);
      attempts.push({ instanceId: instance.id, latencyMs, error: describeError(error) });
      return { kind: 'error', error };
    }
  }

  private report(instance: T, ok: boolean, latencyMs: number): void {
    this.options.balancer.onResult(instance, ok, latencyMs);
    this.options.outlier?.onResult(instance.id, ok);
  }
}
