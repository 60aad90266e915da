// Durable workflows in TypeScript (`tandem/workflow`): ordinary async functions whose every
// step's outcome is recorded in the coordinator before the next step starts, so a worker that
// dies is resumed on another one: recorded steps replay from their records, the first
// unrecorded step runs (at least once: give it the idempotency key or the barrier ref), and a
// BusinessFailure compensates the completed steps in reverse. See docs/workflows.md.
import { request, type Dispatcher } from 'undici';
import type { BranchRef } from './barrier.js';
import { BusinessFailure } from './participant.js';
import { answerOf, TandemApiError } from './client.js';

export { BusinessFailure };

export interface WorkflowClientOptions {
  /** The coordinator, e.g. http://127.0.0.1:8636 */
  url: string;
  token?: string;
  dispatcher?: Dispatcher;
  /** Time allowed for one API request that is not a long poll. */
  requestTimeoutMs?: number;
}

/** What a step function is told about the attempt it runs. */
export interface StepContext {
  workflowId: string;
  stepName: string;
  /** 1 for the first attempt; counts attempts recorded by earlier workers too. */
  attempt: number;
  /** `${workflowId}:${stepName}`: the same on every attempt and every worker; pass it to the service the step calls. */
  idempotencyKey: string;
  /** For a barrier in the service the step calls: gid = workflow id, branchId = step name, op action or compensate. */
  branch: BranchRef;
  /** Aborted when this worker has lost the workflow (its lease passed to another). */
  signal: AbortSignal;
}

export interface RetryPolicy {
  /** Attempts of a step (the first included) before its error fails the workflow. Default 5. */
  attemptsMax?: number;
  /** First backoff, doubled per attempt up to maxMs. Defaults 100 ms and 10 s. */
  initialMs?: number;
  maxMs?: number;
}

export interface StepOptions<T> {
  /** Undoes the step when the workflow fails later; retried until it succeeds. */
  compensate?: (value: T, context: StepContext) => unknown;
  retry?: RetryPolicy;
}

export interface WorkflowContext {
  readonly workflowId: string;
  readonly name: string;
  /** Runs `fn` once (its recorded value is replayed on resume); names must be unique in a run. */
  step<T>(name: string, fn: (context: StepContext) => T | Promise<T>, options?: StepOptions<T>): Promise<T>;
  /** A durable sleep: the worker lets the workflow go, and it is resumed (anywhere) when the time is up. */
  sleep(name: string, ms: number): Promise<void>;
  /**
   * Waits for `signal(workflowId, name, value)` (sent before or after this point); throws
   * SignalTimeoutError when `timeoutMs` passes first. The worker lets go while it waits.
   */
  signal<T>(name: string, options?: { timeoutMs?: number }): Promise<T>;
}

export type WorkflowFunction<I, O> = (wf: WorkflowContext, input: I) => Promise<O>;

/** A step's retries ran out: it fails the workflow like a BusinessFailure. */
export class StepFailedError extends BusinessFailure {
  constructor(readonly stepName: string, message: string) {
    super(message);
    this.name = 'StepFailedError';
  }
}

/** The code ran a different sequence of steps than the record: the workflow is blocked. */
export class NonDeterminismError extends Error {
  constructor(readonly workflowId: string, readonly recorded: string[], readonly replayed: string[]) {
    super(
      `workflow ${workflowId} replayed differently from its record: recorded steps [${recorded.join(', ')}], ` +
        `this code ran [${replayed.join(', ')}]; it is blocked until code that replays the record is deployed and it is resumed`,
    );
    this.name = 'NonDeterminismError';
  }
}

/** A signal did not arrive within its timeout. A BusinessFailure: uncaught, it compensates. */
export class SignalTimeoutError extends BusinessFailure {
  constructor(message: string) {
    super(message);
    this.name = 'SignalTimeoutError';
  }
}

/** The workflow was cancelled or passed its workflow-level timeout: what it did is compensated. */
export class WorkflowCancelledError extends BusinessFailure {
  constructor(message: string) {
    super(message);
    this.name = 'WorkflowCancelledError';
  }
}

/** The run let go of the workflow (a sleep, a signal wait); a later claim resumes it. Internal. */
class SuspendedError extends Error {
  constructor() {
    super('suspended');
    this.name = 'SuspendedError';
  }
}

export class WorkflowFailedError extends Error {
  constructor(readonly workflowId: string, readonly reason: string) {
    super(`workflow ${workflowId} failed: ${reason}`);
    this.name = 'WorkflowFailedError';
  }
}

/** This worker lost the workflow; whoever holds it now carries on. Internal to a run. */
class LeaseLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseLostError';
  }
}

export interface StepOpView {
  status: 'pending' | 'succeeded' | 'failed';
  attempts: number;
  result?: unknown;
  lastError?: string;
  startedAtMs?: number;
  settledAtMs?: number;
  durationMs?: number;
}

export interface WorkflowView {
  workflowId: string;
  name: string;
  status: 'prepared' | 'submitted' | 'aborting' | 'succeeded' | 'failed';
  phase: string;
  reason?: string;
  input: unknown;
  output?: unknown;
  createdAtMs: number;
  updatedAtMs: number;
  nextAttemptAtMs: number | null;
  lease: { worker: string; untilMs: number } | null;
  steps: Array<{ name: string; index: number; action: StepOpView; compensate?: StepOpView }>;
}

interface Task extends WorkflowView {
  leaseId: string;
  leaseMs: number;
  /** Set when the workflow must stop (cancelled, timed out). */
  stop?: string | null;
}

/** Longest one result long poll asks the coordinator to wait (its resultWaitMsMax is 60 s by default). */
const resultPollMs = 30_000;
/** Longest one claim waits (the coordinator's workflowClaimWaitMsMax is 60 s by default). */
const claimPollMsDefault = 30_000;
/** Attempts of one compensation within one run; beyond it the run gives the workflow back. */
const compensationAttemptsPerRunMax = 10_000;
/** Failed reports in a row before a run gives up (the coordinator unreachable). */
const reportAttemptsMax = 10;

export class WorkflowClient {
  readonly url: string;
  private readonly headers: Record<string, string>;
  private readonly dispatcher?: Dispatcher;
  private readonly requestTimeoutMs: number;

  constructor(options: WorkflowClientOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.headers = options.token ? { authorization: `Bearer ${options.token}` } : {};
    this.dispatcher = options.dispatcher;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 35_000;
  }

  /** A workflow bound to this client: `start` it here, run it with `worker`. */
  workflow<I, O>(name: string, fn: WorkflowFunction<I, O>): Workflow<I, O> {
    return new Workflow(this, workflow(name, fn));
  }

  worker(options: WorkerOptions): Worker {
    return new Worker(this, options);
  }

  async get(workflowId: string, waitMs = 0): Promise<WorkflowView> {
    return this.call<WorkflowView>('GET', `/v1/workflows/${encodeURIComponent(workflowId)}${waitMs > 0 ? `?waitMs=${waitMs}` : ''}`, undefined, waitMs);
  }

  /** Sends a signal; a run waiting for it resumes at once, one not yet waiting gets it when it does. */
  async signal(workflowId: string, name: string, value: unknown): Promise<{ delivered: 'received' | 'buffered' | 'dropped' }> {
    return this.call('POST', `/v1/workflows/${encodeURIComponent(workflowId)}/signals/${encodeURIComponent(name)}`, { value: value === undefined ? null : value });
  }

  /** Asks a run to stop: it fails, compensating what it did. */
  async cancel(workflowId: string, reason = 'cancelled'): Promise<WorkflowView> {
    return this.call('POST', `/v1/workflows/${encodeURIComponent(workflowId)}/cancel`, { reason });
  }

  /** Makes a blocked workflow (non-deterministic replay) ready again, after fixed code is deployed. */
  async resume(workflowId: string): Promise<WorkflowView> {
    return this.call<WorkflowView>('POST', `/v1/workflows/${encodeURIComponent(workflowId)}/resume`, {});
  }

  /** One API request; `extraWaitMs` lengthens the timeout for a long poll. Non-2xx: TandemApiError. */
  async call<T>(method: 'GET' | 'POST', path: string, body: unknown, extraWaitMs = 0, signal?: AbortSignal): Promise<T> {
    const timeoutMs = this.requestTimeoutMs + extraWaitMs;
    const response = await request(`${this.url}${path}`, {
      method,
      headers: body === undefined ? this.headers : { ...this.headers, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      dispatcher: this.dispatcher,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      ...(signal ? { signal } : {}),
    });
    return answerOf<T>(response.statusCode, await response.body.text());
  }
}

/** A workflow's name and code, not bound to a coordinator. */
export interface WorkflowDefinition<I, O> {
  readonly name: string;
  readonly fn: WorkflowFunction<I, O>;
}

export function workflow<I, O>(name: string, fn: WorkflowFunction<I, O>): WorkflowDefinition<I, O> {
  return { name, fn };
}

export class Workflow<I, O> implements WorkflowDefinition<I, O> {
  readonly name: string;
  readonly fn: WorkflowFunction<I, O>;

  constructor(private readonly client: WorkflowClient, definition: WorkflowDefinition<I, O>) {
    this.name = definition.name;
    this.fn = definition.fn;
  }

  /**
   * Starts a run. With the same `workflowId`, name and input, a second start is the same run
   * (a retried start after a lost answer, or a duplicate request); with different ones, 409.
   */
  async start(input: I, options: { workflowId?: string; timeoutMs?: number } = {}): Promise<WorkflowRun<O>> {
    const view = await this.client.call<WorkflowView>('POST', '/v1/workflows', {
      name: this.name,
      input: input === undefined ? null : input,
      ...(options.workflowId !== undefined ? { workflowId: options.workflowId } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    });
    return new WorkflowRun<O>(this.client, view.workflowId);
  }

  signal(workflowId: string, name: string, value: unknown): Promise<{ delivered: 'received' | 'buffered' | 'dropped' }> {
    return this.client.signal(workflowId, name, value);
  }

  /** A handle on an existing run. */
  run(workflowId: string): WorkflowRun<O> {
    return new WorkflowRun<O>(this.client, workflowId);
  }
}

export class WorkflowRun<O> {
  constructor(private readonly client: WorkflowClient, readonly workflowId: string) {}

  describe(): Promise<WorkflowView> {
    return this.client.get(this.workflowId);
  }

  /** Waits for the end: the output, or WorkflowFailedError with the reason. */
  async result(options: { timeoutMs?: number } = {}): Promise<O> {
    const deadlineMs = Date.now() + (options.timeoutMs ?? Number.POSITIVE_INFINITY);
    // Each pass is one long poll; the deadline bounds the passes.
    for (;;) {
      const remainingMs = Math.min(resultPollMs, deadlineMs - Date.now());
      const view = await this.client.get(this.workflowId, Math.max(1, Math.round(remainingMs)));
      if (view.status === 'succeeded') return view.output as O;
      if (view.status === 'failed') throw new WorkflowFailedError(this.workflowId, view.reason ?? 'failed');
      if (Date.now() >= deadlineMs) throw new Error(`workflow ${this.workflowId} has not ended within ${options.timeoutMs} ms (${view.status}/${view.phase})`);
    }
  }
}

export interface WorkerOptions {
  workflows: ReadonlyArray<WorkflowDefinition<never, unknown>>;
  /** Shown in leases; unique per worker process helps reading. Default: random. */
  workerId?: string;
  /** Workflows run at once. Default 4. */
  concurrency?: number;
  /** How long one claim long poll waits. */
  claimWaitMs?: number;
  /** Told about errors a run cannot hand to anyone (blocked workflows, lost leases, a coordinator down). */
  onError?: (error: unknown, workflowId: string | null) => void;
  /** Sleeps between retries; a simulation passes virtual time. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

function realSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}

/**
 * Long-polls the coordinator for workflows to run or resume and runs them, `concurrency` at
 * once. Several workers share the load; the coordinator's lease keeps one run per workflow.
 */
export class Worker {
  readonly workerId: string;
  private readonly definitions = new Map<string, WorkflowDefinition<unknown, unknown>>();
  private readonly concurrency: number;
  private readonly claimWaitMs: number;
  private readonly onError: (error: unknown, workflowId: string | null) => void;
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  private readonly stopping = new AbortController();
  private loops: Promise<void>[] = [];

  constructor(private readonly client: WorkflowClient, options: WorkerOptions) {
    for (const definition of options.workflows) this.definitions.set(definition.name, definition as unknown as WorkflowDefinition<unknown, unknown>);
    this.workerId = options.workerId ?? `worker-${Math.random().toString(36).slice(2, 10)}`;
    this.concurrency = Math.max(1, options.concurrency ?? 4);
    this.claimWaitMs = options.claimWaitMs ?? claimPollMsDefault;
    this.onError = options.onError ?? (() => undefined);
    this.sleep = options.sleep ?? realSleep;
  }

  /** Starts the claim loops; returns at once. */
  start(): this {
    if (this.loops.length === 0) this.loops = Array.from({ length: this.concurrency }, () => this.loop());
    return this;
  }

  /**
   * Stops claiming (after the claims in flight end, at most claimWaitMs); runs in flight stop
   * at their next step and give their workflows back.
   */
  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.allSettled(this.loops);
  }

  private async loop(): Promise<void> {
    const signal = this.stopping.signal;
    let failuresInARow = 0;
    while (!signal.aborted) {
      let task: Task | undefined;
      try {
        // Not aborted on stop: a claim answered to a hung-up socket could hand out a workflow
        // nobody runs, so stop waits for the poll (at most claimWaitMs) and gives back what it got.
        task = await this.client.call<Task | undefined>('POST', '/v1/workflow-tasks/claim', { workerId: this.workerId, workflows: [...this.definitions.keys()], waitMs: this.claimWaitMs }, this.claimWaitMs);
        failuresInARow = 0;
      } catch (error) {
        if (signal.aborted) return;
        this.onError(error, null);
        failuresInARow += 1;
        await this.sleep(Math.min(10_000, 100 * 2 ** Math.min(failuresInARow, 7)), signal);
        continue;
      }
      if (task && signal.aborted) {
        await this.client.call('POST', `/v1/workflows/${encodeURIComponent(task.workflowId)}/release`, { leaseId: task.leaseId }).catch((error: unknown) => this.onError(error, task?.workflowId ?? null));
        return;
      }
      if (task) await this.execute(task);
    }
  }

  /** Runs (or resumes) one claimed workflow to its end, a block, or the loss of its lease. */
  async execute(task: Task): Promise<void> {
    const definition = this.definitions.get(task.name);
    const run = new Run(this.client, task, this.sleep, this.stopping.signal);
    try {
      if (!definition) throw new Error(`this worker has no workflow named ${task.name}`);
      await run.execute(definition);
    } catch (error) {
      this.onError(error, task.workflowId);
    } finally {
      run.close();
    }
  }
}

interface Completed {
  name: string;
  value: unknown;
  compensate?: (value: never, context: StepContext) => unknown;
  compensated: boolean;
}

/** Error text as recorded: its kind first, so a replay throws the same kind. */
function errorText(error: unknown): string {
  if (error instanceof SignalTimeoutError) return `SignalTimeoutError: ${error.message}`;
  if (error instanceof WorkflowCancelledError) return `WorkflowCancelledError: ${error.message}`;
  if (error instanceof StepFailedError) return `StepFailedError: ${error.message}`;
  if (error instanceof BusinessFailure) return `BusinessFailure: ${error.message}`;
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function recordedError(stepName: string, text: string | undefined): BusinessFailure {
  const message = text ?? 'failed';
  if (message.startsWith('BusinessFailure: ')) return new BusinessFailure(message.slice('BusinessFailure: '.length));
  if (message.startsWith('SignalTimeoutError: ')) return new SignalTimeoutError(message.slice('SignalTimeoutError: '.length));
  if (message.startsWith('WorkflowCancelledError: ')) return new WorkflowCancelledError(message.slice('WorkflowCancelledError: '.length));
  if (message.startsWith('StepFailedError: ')) return new StepFailedError(stepName, message.slice('StepFailedError: '.length));
  return new StepFailedError(stepName, message);
}

/** One execution of one workflow on this worker, under one lease. */
class Run implements WorkflowContext {
  readonly workflowId: string;
  readonly name: string;
  private readonly recorded: WorkflowView['steps'];
  private readonly replayed: string[] = [];
  private readonly completed: Completed[] = [];
  private readonly lost = new AbortController();
  private readonly heartbeat: NodeJS.Timeout;
  private readonly path: string;
  private readonly stopping: AbortSignal;
  /** Why the workflow must stop, as the coordinator last said. */
  private stop: string | null;

  constructor(private readonly client: WorkflowClient, private readonly task: Task, private readonly pause: (ms: number, signal: AbortSignal) => Promise<void>, stopping: AbortSignal) {
    this.stopping = stopping;
    this.stop = task.stop ?? null;
    this.workflowId = task.workflowId;
    this.name = task.name;
    this.recorded = task.steps;
    this.path = `/v1/workflows/${encodeURIComponent(task.workflowId)}`;
    if (stopping.aborted) this.lost.abort();
    stopping.addEventListener('abort', () => this.lost.abort(), { once: true });
    // Recording a step renews the lease too; this covers steps that run longer than a third of it.
    this.heartbeat = setInterval(() => void this.renew(), Math.max(50, Math.floor(task.leaseMs / 3)));
    this.heartbeat.unref();
  }

  close(): void {
    clearInterval(this.heartbeat);
  }

  private async renew(): Promise<void> {
    try {
      await this.client.call('POST', `${this.path}/heartbeat`, { leaseId: this.task.leaseId });
    } catch (error) {
      if (error instanceof TandemApiError && error.status === 409) this.lost.abort();
    }
  }

  /** Sends a report, retrying a coordinator that is briefly unreachable; a 409 means the lease is gone. */
  private async report<T>(suffix: string, body: Record<string, unknown>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (this.lost.signal.aborted) throw new LeaseLostError(`workflow ${this.workflowId}: this worker stopped or lost its lease`);
      try {
        const answer = await this.client.call<T>('POST', `${this.path}/${suffix}`, { leaseId: this.task.leaseId, ...body });
        const stop = (answer as { stop?: string | null } | undefined)?.stop;
        if (typeof stop === 'string') this.stop = stop;
        return answer;
      } catch (error) {
        if (error instanceof TandemApiError && error.status === 409) {
          const problem = typeof error.problem === 'object' ? error.problem : null;
          if (problem?.type === 'urn:tandem:problem:workflow-step-conflict') {
            const recorded = (problem as { recorded?: string[] }).recorded ?? [];
            throw new NonDeterminismError(this.workflowId, recorded, [...this.replayed]);
          }
          this.lost.abort();
          throw new LeaseLostError(error.message);
        }
        if (error instanceof TandemApiError && error.status < 500) throw error;
        if (attempt >= reportAttemptsMax) throw error;
        await this.pause(Math.min(5_000, 50 * 2 ** attempt), this.lost.signal);
      }
    }
  }

  private stepContext(stepName: string, op: 'action' | 'compensate', attempt: number): StepContext {
    return {
      workflowId: this.workflowId,
      stepName,
      attempt,
      idempotencyKey: `${this.workflowId}:${stepName}`,
      branch: { gid: this.workflowId, branchId: stepName, op, transType: 'workflow' },
      signal: this.lost.signal,
    };
  }

  /** The record at this point of the sequence, checking that the code asks for the same step. */
  private next(name: string): { index: number; record: WorkflowView['steps'][number] | undefined } {
    const index = this.replayed.length;
    if (this.replayed.includes(name)) {
      throw new NonDeterminismError(this.workflowId, this.recorded.map((step) => step.name), [...this.replayed, name]);
    }
    this.replayed.push(name);
    const record = this.recorded[index];
    if (record && record.name !== name) {
      throw new NonDeterminismError(this.workflowId, this.recorded.map((step) => step.name), [...this.replayed]);
    }
    return { index, record };
  }

  /** Before anything new runs: a cancelled or timed-out workflow stops here and compensates. */
  private checkStop(): void {
    if (this.stop !== null) throw new WorkflowCancelledError(this.stop);
  }

  async sleep(name: string, ms: number): Promise<void> {
    const { index, record } = this.next(name);
    if (record?.action.status === 'succeeded') return;
    if (record?.action.status === 'failed') throw recordedError(name, record.action.lastError);
    this.checkStop();
    await this.report('sleep', { name, index, durationMs: Math.max(0, Math.round(ms)) });
    throw new SuspendedError();
  }

  async signal<T>(name: string, options: { timeoutMs?: number } = {}): Promise<T> {
    const { index, record } = this.next(name);
    if (record?.action.status === 'succeeded') return record.action.result as T;
    if (record?.action.status === 'failed') throw recordedError(name, record.action.lastError);
    this.checkStop();
    const answer = await this.report<{ received: boolean; value?: unknown }>('wait', { name, index, signal: name, ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}) });
    if (answer.received) return answer.value as T;
    throw new SuspendedError();
  }

  async step<T>(name: string, fn: (context: StepContext) => T | Promise<T>, options: StepOptions<T> = {}): Promise<T> {
    const { index, record } = this.next(name);
    const compensate = options.compensate as Completed['compensate'];
    if (record?.action.status === 'succeeded') {
      this.completed.push({ name, value: record.action.result, compensated: record.compensate?.status === 'succeeded', ...(compensate ? { compensate } : {}) });
      return record.action.result as T;
    }
    if (record?.action.status === 'failed') throw recordedError(name, record.action.lastError);
    this.checkStop();
    const attemptsMax = Math.max(1, options.retry?.attemptsMax ?? 5);
    const initialMs = options.retry?.initialMs ?? 100;
    const maxMs = options.retry?.maxMs ?? 10_000;
    let attempt = (record?.action.attempts ?? 0) + 1;
    // Attempts are counted across workers, so the bound holds through crashes.
    for (;;) {
      if (this.lost.signal.aborted) throw new LeaseLostError(`workflow ${this.workflowId}: this worker stopped or lost its lease`);
      const startedMs = performance.now();
      let value: T;
      try {
        value = await fn(this.stepContext(name, 'action', attempt));
      } catch (error) {
        const durationMs = performance.now() - startedMs;
        const final = error instanceof BusinessFailure || attempt >= attemptsMax;
        await this.report('steps', { name, op: 'action', index, status: final ? 'failed' : 'retrying', error: errorText(error), durationMs });
        if (final) throw error instanceof BusinessFailure ? error : new StepFailedError(name, `${errorText(error)} (after ${attempt} attempts)`);
        await this.pause(Math.min(maxMs, initialMs * 2 ** (attempt - 1)), this.lost.signal);
        attempt += 1;
        continue;
      }
      const durationMs = performance.now() - startedMs;
      // What is recorded is what a replay returns: the JSON round trip, never the live object.
      const result = value === undefined ? undefined : (JSON.parse(JSON.stringify(value)) as unknown);
      await this.report('steps', { name, op: 'action', index, status: 'succeeded', ...(result !== undefined ? { result } : {}), durationMs });
      this.completed.push({ name, value: result, compensated: false, ...(compensate ? { compensate } : {}) });
      return result as T;
    }
  }

  async execute(definition: WorkflowDefinition<unknown, unknown>): Promise<void> {
    let output: unknown;
    try {
      output = await definition.fn(this, this.task.input);
    } catch (error) {
      if (error instanceof LeaseLostError) return this.giveBackIfStopping();
      if (error instanceof SuspendedError) return;
      if (error instanceof NonDeterminismError) {
        await this.report('block', { reason: error.message }).catch(() => undefined);
        throw error;
      }
      await this.rollBack(error);
      return;
    }
    if (this.replayed.length < this.recorded.length) {
      const error = new NonDeterminismError(this.workflowId, this.recorded.map((step) => step.name), [...this.replayed]);
      await this.report('block', { reason: error.message }).catch(() => undefined);
      throw error;
    }
    try {
      await this.report('finish', { status: 'succeeded', ...(output !== undefined ? { output } : {}) });
    } catch (error) {
      if (!(error instanceof LeaseLostError)) throw error;
    }
  }

  /** The saga rule: compensate completed steps in reverse, each until it succeeds, then end failed. */
  private async rollBack(cause: unknown): Promise<void> {
    const reason = errorText(cause);
    try {
      await this.report('rollback', { reason });
      for (const step of [...this.completed].reverse()) {
        if (!step.compensate || step.compensated) continue;
        await this.compensate(step);
      }
      await this.report('finish', { status: 'failed', reason });
    } catch (error) {
      if (!(error instanceof LeaseLostError)) throw error;
      await this.giveBackIfStopping();
    }
  }

  /** The worker is stopping (not lost): the workflow goes to another worker at once, not at lease end. */
  private async giveBackIfStopping(): Promise<void> {
    if (!this.stopping.aborted) return;
    await this.client.call('POST', `${this.path}/release`, { leaseId: this.task.leaseId }).catch(() => undefined);
  }

  private async compensate(step: Completed): Promise<void> {
    const recordedAttempts = this.recorded.find((record) => record.name === step.name)?.compensate?.attempts ?? 0;
    for (let attempt = recordedAttempts + 1; attempt <= recordedAttempts + compensationAttemptsPerRunMax; attempt++) {
      if (this.lost.signal.aborted) throw new LeaseLostError(`workflow ${this.workflowId}: this worker stopped or lost its lease`);
      const startedMs = performance.now();
      try {
        await step.compensate!(step.value as never, this.stepContext(step.name, 'compensate', attempt));
      } catch (error) {
        await this.report('steps', { name: step.name, op: 'compensate', status: 'retrying', error: errorText(error), durationMs: performance.now() - startedMs });
        await this.pause(Math.min(10_000, 100 * 2 ** Math.min(attempt - 1, 10)), this.lost.signal);
        continue;
      }
      await this.report('steps', { name: step.name, op: 'compensate', status: 'succeeded', durationMs: performance.now() - startedMs });
      step.compensated = true;
      return;
    }
    // Give the workflow back: another run (here or on another worker) goes on compensating.
    await this.report('release', {});
    throw new LeaseLostError(`workflow ${this.workflowId}: compensation of ${step.name} still failing after ${compensationAttemptsPerRunMax} attempts in this run`);
  }
}
