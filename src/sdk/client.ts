// The typed client: builders for saga, TCC, 2PC, 3PC, XA and two-phase messages, plus reading
// transactions.
import { context, propagation } from '@opentelemetry/api';
import { request, type Dispatcher } from 'undici';
import { branchQuery, classifyAnswer } from '../shared/protocol.js';
import type { TxListView, TxMode, TxStatus, TxView } from '../shared/views.js';
import { msgBranchRef, type Barrier, type BarrierResult } from './barrier.js';
import { BusinessFailure } from './participant.js';

export interface TxOptionsInput {
  gid?: string;
  timeoutToFailMs?: number;
  requestTimeoutMs?: number;
  retryIntervalMs?: number;
  retryLimit?: number;
  branchHeaders?: Record<string, string>;
}

/** TCC and XA: `concurrent` calls the second phase on every branch at once (default: one at a time, as DTM). */
export interface RegisteredTxOptionsInput extends TxOptionsInput {
  concurrent?: boolean;
}

export interface ClientOptions {
  /** The coordinator, e.g. http://127.0.0.1:8636 */
  url: string;
  dispatcher?: Dispatcher;
  /** Time allowed for one API request. */
  requestTimeoutMs?: number;
  /** API token, sent as `Authorization: Bearer <token>` (a coordinator off loopback needs one). */
  token?: string;
  /**
   * Coalesces creates issued in the same tick (saga, msg… submits without waitResult) into
   * POST /v1/transactions/batch requests of up to `sizeMax` (default 100, at most the server's
   * batchTransactionsMax). Each call still gets its own answer or error.
   */
  batching?: { sizeMax?: number };
}

/** The coordinator refused a request; `problem` is its application/problem+json body. */
export class TandemApiError extends Error {
  constructor(
    readonly status: number,
    readonly problem: { type?: string; title?: string; detail?: string; errors?: Array<{ field: string; message: string }> } | string,
  ) {
    super(`coordinator answered ${status}: ${typeof problem === 'string' ? problem : (problem.detail ?? problem.title)}`);
    this.name = 'TandemApiError';
  }
}

/** A coordinator's answer: its JSON when 2xx, else a TandemApiError carrying the problem. */
export function answerOf<T>(statusCode: number, text: string): T {
  if (statusCode >= 300) {
    let problem: TandemApiError['problem'] = text;
    try {
      problem = JSON.parse(text) as TandemApiError['problem'];
    } catch {
      // not JSON: keep the text
    }
    throw new TandemApiError(statusCode, problem);
  }
  return (text.length > 0 ? JSON.parse(text) : undefined) as T;
}

/** A branch answered with a business refusal (409 or FAILURE). */
export class BranchRefusedError extends Error {
  constructor(readonly status: number, readonly body: string) {
    super(`branch refused (HTTP ${status}): ${body.slice(0, 200)}`);
    this.name = 'BranchRefusedError';
  }
}

export class TandemClient {
  readonly url: string;
  private readonly dispatcher?: Dispatcher;
  private readonly requestTimeoutMs: number;
  private readonly authHeaders: Record<string, string>;

  private readonly batcher: CreateBatcher | null;

  constructor(options: ClientOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.dispatcher = options.dispatcher;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 35_000;
    this.authHeaders = options.token ? { authorization: `Bearer ${options.token}` } : {};
    this.batcher = options.batching ? new CreateBatcher(this, options.batching.sizeMax ?? 100) : null;
  }

  async newGid(): Promise<string> {
    return (await this.call<{ gid: string }>('POST', '/v1/gids')).gid;
  }

  saga(options: TxOptionsInput = {}): SagaBuilder {
    return new SagaBuilder(this, options);
  }

  twoPhase(options: TxOptionsInput = {}): PhasedBuilder<'prepare' | 'commit' | 'rollback'> {
    return new PhasedBuilder(this, '2pc', options);
  }

  threePhase(options: TxOptionsInput = {}): PhasedBuilder<'canCommit' | 'preCommit' | 'doCommit' | 'abort'> {
    return new PhasedBuilder(this, '3pc', options);
  }

  /**
   * Runs a TCC transaction: opens it, runs `body` (which calls Try on each branch through
   * `tcc.callBranch`), then submits; if `body` throws, aborts and rethrows.
   */
  async tcc<T>(options: RegisteredTxOptionsInput, body: (tcc: TccTransaction) => Promise<T>): Promise<{ gid: string; value: T }> {
    return this.decide(await this.beginTcc(options), body);
  }

  /** Opens a TCC transaction without running it; use `TccTransaction` to drive it by hand. */
  async beginTcc(options: RegisteredTxOptionsInput = {}): Promise<TccTransaction> {
    const created = await this.create({ mode: 'tcc', branches: [], ...options });
    return new TccTransaction(this, created.gid);
  }

  /**
   * Runs an XA transaction: opens it, runs `body` (which calls each branch through
   * `xa.callBranch`: the branch runs its local work in a database XA transaction and prepares
   * it), then submits so the coordinator commits every branch; if `body` throws, aborts (the
   * coordinator rolls every registered branch back) and rethrows.
   */
  async xa<T>(options: RegisteredTxOptionsInput, body: (xa: XaTransaction) => Promise<T>): Promise<{ gid: string; value: T }> {
    return this.decide(await this.beginXa(options), body);
  }

  /** Runs `body` on an opened TCC or XA transaction, then submits it, or aborts it if `body` throws. */
  private async decide<Opened extends { gid: string }, T>(opened: Opened, body: (opened: Opened) => Promise<T>): Promise<{ gid: string; value: T }> {
    let value: T;
    try {
      value = await body(opened);
    } catch (error) {
      await this.abort(opened.gid);
      throw error;
    }
    await this.submit(opened.gid);
    return { gid: opened.gid, value };
  }

  /** Opens an XA transaction without running it; use `XaTransaction` to drive it by hand. */
  async beginXa(options: RegisteredTxOptionsInput = {}): Promise<XaTransaction> {
    const created = await this.create({ mode: 'xa', branches: [], ...options });
    return new XaTransaction(this, created.gid);
  }

  /**
   * A two-phase message: steps delivered at least once, in order (HTTP endpoints, or
   * `rabbitmq:<exchange>/<routingKey>` and `jetstream:<subject>` targets).
   */
  msg(options: Omit<TxOptionsInput, 'retryLimit'> = {}): MsgBuilder {
    return new MsgBuilder(this, options);
  }

  create(body: Record<string, unknown>): Promise<TxView> {
    if (this.batcher && body.waitResult !== true) return this.batcher.add(body);
    return this.call<TxView>('POST', '/v1/transactions', body);
  }

  /** Creates many transactions in one request; each item is the transaction or its problem. */
  createBatch(bodies: Array<Record<string, unknown>>): Promise<{ items: BatchItem[] }> {
    return this.call<{ items: BatchItem[] }>('POST', '/v1/transactions/batch', { transactions: bodies });
  }

  get(gid: string): Promise<TxView> {
    return this.call<TxView>('GET', `/v1/transactions/${encodeURIComponent(gid)}`);
  }

  list(query: { status?: TxStatus; mode?: TxMode; limit?: number; cursor?: string } = {}): Promise<TxListView> {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
    const suffix = params.size > 0 ? `?${params}` : '';
    return this.call<TxListView>('GET', `/v1/transactions${suffix}`);
  }

  submit(gid: string, options: { wait?: boolean } = {}): Promise<TxView> {
    return this.call<TxView>('POST', `/v1/transactions/${encodeURIComponent(gid)}/submit${options.wait ? '?wait=true' : ''}`);
  }

  abort(gid: string): Promise<TxView> {
    return this.call<TxView>('POST', `/v1/transactions/${encodeURIComponent(gid)}/abort`);
  }

  /**
   * Ends an unfinished transaction as failed at once, calling no branch again (no
   * compensation, cancel or rollback): for an operator who will settle the branches by hand.
   * With `compensate`, rolls it back the way its mode does instead, where it still can. The
   * reason goes into the transaction and the audit log; needs the admin role when auth is on.
   */
  async forceStop(gid: string, reason: string, options: { compensate?: boolean } = {}): Promise<TxView> {
    const body = { reason, ...(options.compensate !== undefined ? { compensate: options.compensate } : {}) };
    return (await this.call<{ transaction: TxView }>('POST', `/v1/transactions/${encodeURIComponent(gid)}/force-stop`, body)).transaction;
  }

  /** Retries an unfinished transaction's pending calls now, with its backoff reset (audited). */
  async retryNow(gid: string, reason?: string): Promise<TxView> {
    return (await this.call<{ transaction: TxView }>('POST', `/v1/transactions/${encodeURIComponent(gid)}/retry-now`, reason === undefined ? {} : { reason })).transaction;
  }

  /**
   * Waits until the transaction has ended (succeeded or failed) and returns it. The
   * coordinator holds each request open until the end or `pollTimeoutMs`; this loops until
   * `timeoutMs` (default: wait as long as it takes).
   */
  async waitResult(gid: string, options: { timeoutMs?: number } = {}): Promise<TxView> {
    const deadlineMs = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    for (;;) {
      const remainingMs = Math.min(30_000, Math.max(0, deadlineMs - Date.now()));
      const tx = await this.call<TxView>('GET', `/v1/transactions/${encodeURIComponent(gid)}/result?timeoutMs=${Math.round(remainingMs)}`);
      if (tx.status === 'succeeded' || tx.status === 'failed' || Date.now() >= deadlineMs) return tx;
    }
  }

  /** One API request; a non-2xx answer becomes a TandemApiError carrying the problem. */
  call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
    return this.callWithJson<T>(method, path, body === undefined ? undefined : JSON.stringify(body));
  }

  /** `call` with the body already serialized (the batcher measures each item's JSON once). */
  async callWithJson<T>(method: 'GET' | 'POST' | 'DELETE', path: string, json: string | undefined): Promise<T> {
    const headers: Record<string, string> = json === undefined ? { ...this.authHeaders } : { ...this.authHeaders, 'content-type': 'application/json' };
    // The caller's active trace (when the application set up OpenTelemetry) goes with the
    // request, so the transaction's spans and its branch calls join the caller's trace.
    propagation.inject(context.active(), headers);
    const response = await request(`${this.url}${path}`, {
      method,
      headers,
      body: json,
      dispatcher: this.dispatcher,
      headersTimeout: this.requestTimeoutMs,
      bodyTimeout: this.requestTimeoutMs,
    });
    return answerOf<T>(response.statusCode, await response.body.text());
  }
}

export type BatchItem = TxView | { gid: string; problem: { status: number; type: string; title: string; detail: string } };

/** Collects the creates of one tick and sends them as batches. */
/** Bytes of JSON one batch request carries at most, well under the server's requestBodyBytesMax (1 MiB). */
export const batchBytesMax = 512 * 1024;

class CreateBatcher {
  private queue: Array<{ json: string; resolve: (view: TxView) => void; reject: (error: unknown) => void }> = [];

  constructor(private readonly client: TandemClient, private readonly sizeMax: number) {}

  add(body: Record<string, unknown>): Promise<TxView> {
    return new Promise((resolve, reject) => {
      if (this.queue.length === 0) setImmediate(() => this.flush());
      this.queue.push({ json: JSON.stringify(body), resolve, reject });
    });
  }

  /** Cuts the tick's creates into batches bounded by count and by bytes. */
  private flush(): void {
    const queued = this.queue;
    this.queue = [];
    let batch: CreateBatcher['queue'] = [];
    let bytes = 0;
    for (const entry of queued) {
      if (batch.length > 0 && (batch.length >= this.sizeMax || bytes + entry.json.length > batchBytesMax)) {
        void this.send(batch);
        batch = [];
        bytes = 0;
      }
      batch.push(entry);
      bytes += entry.json.length;
    }
    if (batch.length > 0) void this.send(batch);
  }

  private async send(entries: CreateBatcher['queue']): Promise<void> {
    let answer: { items: BatchItem[] };
    try {
      const json = `{"transactions":[${entries.map((entry) => entry.json).join(',')}]}`;
      answer = await this.client.callWithJson<{ items: BatchItem[] }>('POST', '/v1/transactions/batch', json);
    } catch (error) {
      // A bad item fails the whole batch with 400 (413 for a body too large): send each alone,
      // so that only the culprit gets the error.
      if (error instanceof TandemApiError && (error.status === 400 || error.status === 413) && entries.length > 1) {
        for (const entry of entries) this.client.callWithJson<TxView>('POST', '/v1/transactions', entry.json).then(entry.resolve, entry.reject);
        return;
      }
      for (const entry of entries) entry.reject(error);
      return;
    }
    entries.forEach((entry, index) => {
      const item = answer.items[index];
      if (item && 'problem' in item) entry.reject(new TandemApiError(item.problem.status, item.problem));
      else if (item) entry.resolve(item);
      else entry.reject(new Error(`the coordinator answered ${answer.items.length} items for a batch of ${entries.length}`));
    });
  }
}

export interface SagaStep {
  action: string;
  compensate: string;
  payload?: unknown;
  branchId?: string;
  /** Branch ids that must succeed first; only with `concurrent()`. */
  dependsOn?: string[];
}

export class SagaBuilder {
  private readonly steps: SagaStep[] = [];
  private runConcurrently = false;

  constructor(private readonly client: TandemClient, private readonly options: TxOptionsInput) {}

  /** Adds a step; returns its branch id (01, 02, … unless given). */
  add(action: string, compensate: string, payload?: unknown): this {
    this.steps.push({ action, compensate, payload });
    return this;
  }

  addStep(step: SagaStep): this {
    this.steps.push(step);
    return this;
  }

  /** Runs branches concurrently, ordered only by each step's `dependsOn`. */
  concurrent(): this {
    this.runConcurrently = true;
    return this;
  }

  /** Submits the saga; with `waitResult`, answers after its first round of calls. */
  submit(options: { waitResult?: boolean } = {}): Promise<TxView> {
    return this.client.create({
      mode: 'saga',
      ...this.options,
      ...(this.runConcurrently ? { concurrent: true } : {}),
      branches: this.steps.map((step) => ({ ...step })),
      ...(options.waitResult ? { waitResult: true } : {}),
    });
  }
}

export class PhasedBuilder<Op extends string> {
  private readonly branches: Array<Record<string, unknown>> = [];

  constructor(private readonly client: TandemClient, private readonly mode: '2pc' | '3pc', private readonly options: TxOptionsInput) {}

  add(urls: Record<Op, string>, payload?: unknown, branchId?: string): this {
    this.branches.push({ ...urls, ...(payload !== undefined ? { payload } : {}), ...(branchId ? { branchId } : {}) });
    return this;
  }

  submit(options: { waitResult?: boolean } = {}): Promise<TxView> {
    return this.client.create({ mode: this.mode, ...this.options, branches: this.branches, ...(options.waitResult ? { waitResult: true } : {}) });
  }
}

export class MsgBuilder {
  private readonly steps: Array<{ action: string; payload?: unknown }> = [];
  private runConcurrently = false;
  private delayMs = 0;

  constructor(private readonly client: TandemClient, private readonly options: Omit<TxOptionsInput, 'retryLimit'>) {}

  add(action: string, payload?: unknown): this {
    this.steps.push({ action, ...(payload !== undefined ? { payload } : {}) });
    return this;
  }

  /** Delivers every step at once instead of one after the other. */
  concurrent(): this {
    this.runConcurrently = true;
    return this;
  }

  /** Holds the steps at least `delayMs` after the submit (DTM's Msg.SetDelay, in ms). */
  delay(delayMs: number): this {
    this.delayMs = delayMs;
    return this;
  }

  /** Delivers the message now, with no local transaction to wait for. */
  submit(): Promise<TxView> {
    return this.client.create(this.body());
  }

  /** Records the message as prepared; the app must then run its local transaction and submit. */
  prepare(queryPreparedUrl: string): Promise<TxView> {
    return this.client.create({ ...this.body(), queryPrepared: queryPreparedUrl });
  }

  /**
   * Prepare → the local transaction (which writes the message's barrier row, so that
   * queryPrepared can tell what happened to it) → submit. A `local` that throws
   * BusinessFailure, or finds the message already rolled back by a queryPrepared that came
   * first, aborts the message. Any other error leaves it prepared: the commit may have landed
   * before the error, so the coordinator asks queryPrepared after timeoutToFailMs.
   */
  async doAndSubmit<Tx, T>(queryPreparedUrl: string, barrier: Barrier<Tx>, local: (tx: Tx) => Promise<T>): Promise<{ gid: string; value: T }> {
    const prepared = await this.prepare(queryPreparedUrl);
    let result: BarrierResult<T>;
    try {
      result = await barrier.call(msgBranchRef(prepared.gid), local);
    } catch (error) {
      if (error instanceof BusinessFailure) await this.client.abort(prepared.gid);
      throw error;
    }
    if (!result.applied) {
      await this.client.abort(prepared.gid);
      throw new BusinessFailure(`message ${prepared.gid} was rolled back by queryPrepared before its local transaction ran`);
    }
    await submitCommitted(this.client, prepared.gid);
    return { gid: prepared.gid, value: result.value };
  }

  private body(): Record<string, unknown> {
    return {
      mode: 'msg',
      ...this.options,
      ...(this.runConcurrently ? { concurrent: true } : {}),
      ...(this.delayMs > 0 ? { delayMs: this.delayMs } : {}),
      branches: this.steps.map((step) => ({ ...step })),
    };
  }
}

/** Attempts at submitting a message whose local transaction committed, and the first pause. */
export const committedSubmitAttemptsMax = 5;
export const committedSubmitRetryDelayMs = 100;

/**
 * The local transaction committed but the submit could not be confirmed. The message will
 * still be delivered (the coordinator learns of the commit from queryPrepared): do not redo
 * the business operation.
 */
export class MessageSubmitPending extends Error {
  constructor(readonly gid: string, cause: unknown) {
    super(`message ${gid}: the local transaction committed, but submit failed (${cause instanceof Error ? cause.message : String(cause)}); queryPrepared will deliver it`, { cause });
    this.name = 'MessageSubmitPending';
  }
}

/** Retries a submit that failed for want of the coordinator (503, no connection), with backoff. */
async function submitCommitted(client: TandemClient, gid: string): Promise<void> {
  let delayMs = committedSubmitRetryDelayMs;
  for (let attempt = 1; ; attempt++) {
    try {
      await client.submit(gid);
      return;
    } catch (error) {
      const retriable = !(error instanceof TandemApiError) || error.status >= 500;
      if (!retriable || attempt >= committedSubmitAttemptsMax) throw new MessageSubmitPending(gid, error);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      delayMs *= 2;
    }
  }
}

/** What TCC and XA transactions share: branches registered one by one, then submit or abort. */
abstract class RegisteredTransaction {
  private branchCount = 0;

  constructor(protected readonly client: TandemClient, readonly gid: string) {}

  submit(): Promise<TxView> {
    return this.client.submit(this.gid);
  }

  abort(): Promise<TxView> {
    return this.client.abort(this.gid);
  }

  /** Registers the next branch (01, 02, …) with `urls`, then makes its first-phase call. */
  protected async registerAndCall(urls: Record<string, string>, payload: unknown, firstPhase: { url: string; transType: string; op: string }): Promise<unknown> {
    this.branchCount += 1;
    const branchId = String(this.branchCount).padStart(2, '0');
    await this.client.call('POST', `/v1/transactions/${encodeURIComponent(this.gid)}/branches`, {
      branchId,
      ...urls,
      ...(payload !== undefined ? { payload } : {}),
    });
    return callFirstPhase({ gid: this.gid, branchId, payload, ...firstPhase });
  }
}

export class XaTransaction extends RegisteredTransaction {
  /**
   * Registers the branch (its URL, called later with op=commit or op=rollback), then calls it
   * with op=action so that it runs and prepares its local work. A refusal throws
   * BranchRefusedError; any other failure throws too.
   */
  callBranch(payload: unknown, url: string): Promise<unknown> {
    return this.registerAndCall({ url }, payload, { url, transType: 'xa', op: 'action' });
  }
}

export class TccTransaction extends RegisteredTransaction {
  /**
   * Registers the branch (confirm and cancel) with the coordinator, then calls its Try. A
   * refusal throws BranchRefusedError; any other failure throws too (the caller decides).
   */
  callBranch(payload: unknown, tryUrl: string, confirmUrl: string, cancelUrl: string): Promise<unknown> {
    return this.registerAndCall({ confirm: confirmUrl, cancel: cancelUrl }, payload, { url: tryUrl, transType: 'tcc', op: 'try' });
  }
}

/** The first phase the app calls itself: TCC's try, XA's action. */
async function callFirstPhase(call: { gid: string; branchId: string; payload: unknown; url: string; transType: string; op: string }): Promise<unknown> {
  const { gid, branchId, transType, op } = call;
  const url = new URL(call.url);
  url.searchParams.set(branchQuery.gid, gid);
  url.searchParams.set(branchQuery.transType, transType);
  url.searchParams.set(branchQuery.branchId, branchId);
  url.searchParams.set(branchQuery.op, op);
  const response = await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'tandem-gid': gid, 'tandem-branch-id': branchId, 'tandem-op': op, 'tandem-trans-type': transType },
    body: JSON.stringify(call.payload ?? null),
  });
  const text = await response.body.text();
  const outcome = classifyAnswer(response.statusCode, text);
  if (outcome === 'failure') throw new BranchRefusedError(response.statusCode, text);
  if (outcome !== 'success') throw new Error(`${op} of branch ${branchId} did not succeed (HTTP ${response.statusCode}): ${text.slice(0, 200)}`);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
