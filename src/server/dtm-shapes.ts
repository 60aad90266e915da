// The DTM wire format: request schemas for /api/dtmsvr, the translation of a DTM request into
// a Tandem transaction request, and the DTM-shaped views of stored transactions. Everything
// here is pure; dtm-api.ts does the I/O.
//
// Facts of the protocol this follows (from DTM's published server and SDK sources):
// - times are whole seconds; 0 or absent means "the server's default";
// - a saga is `steps` [{action, compensate}] plus `payloads` (one raw string per step), or
//   older SDKs' `steps[i].data`; branch ids are 01, 02, …;
// - `custom_data` of a concurrent saga is the JSON text {"concurrent":true,"orders":{"1":[0]}}
//   meaning step 1 runs after step 0 succeeded;
// - an empty URL is an op with nothing to call: it counts as done;
// - SDKs send nulls and zeros for unset options (Java, C#), and extra keys (subType, status,
//   try, query_prepared), so unknown keys are ignored and nulls mean absent.
import { z } from 'zod';
import type { Limits } from '../config.js';
import type { NewTx } from '../tx/machine.js';
import { branchIdAt } from '../tx/machine.js';
import type { Branch, GlobalStatus, Mode, OpStatus, Tx } from '../tx/types.js';
import { isFinal, modes } from '../tx/types.js';
import type { TxSummary } from '../store/store.js';
import { invalid, ProblemError, type FieldError } from './problem.js';
import type { TxRequest } from './tx-request.js';
import { toNewTx } from './tx-request.js';
import { branchHeaderNameSchema, gidPattern, httpUrlSchema, optionSchemas, parseOrThrow } from './validation.js';
import { isBrokerTarget, type BrokerName } from '../messaging/types.js';

export const dtmResult = { success: 'SUCCESS', failure: 'FAILURE', ongoing: 'ONGOING' } as const;

/** DTM's transaction types: the ones Tandem runs, and the ones it answers "not yet" to. */
export const supportedTransTypes = ['saga', 'tcc', 'msg', 'xa'] as const;
export const unsupportedTransTypes = ['workflow'] as const;
export type SupportedTransType = (typeof supportedTransTypes)[number];

export type DtmStatus = 'prepared' | 'submitted' | 'aborting' | 'succeed' | 'failed';
export type DtmBranchStatus = 'prepared' | 'succeed' | 'failed';

export function dtmStatusOf(status: GlobalStatus): DtmStatus {
  return status === 'succeeded' ? 'succeed' : status;
}

export function globalStatusOf(status: string): GlobalStatus | null {
  if (status === 'succeed') return 'succeeded';
  return (['prepared', 'submitted', 'aborting', 'failed'] as const).find((known) => known === status) ?? null;
}

function dtmBranchStatusOf(status: OpStatus): DtmBranchStatus {
  if (status === 'pending') return 'prepared';
  return status === 'succeeded' ? 'succeed' : 'failed';
}

// ---------------------------------------------------------------------------------------------
// Request schemas

const required = { error: (issue: { input: unknown }) => (issue.input === undefined || issue.input === null ? 'is required' : 'must be a string') };

export function dtmSchemas(limits: Limits) {
  const options = optionSchemas(limits);
  const seconds = (maxMs: number, name: string) =>
    z
      .number({ error: 'must be a number of seconds' })
      .int('must be a whole number of seconds')
      .min(0, 'must not be negative')
      .max(Math.floor(maxMs / 1000), `at most ${Math.floor(maxMs / 1000)} seconds (${name})`)
      .nullish();
  const gid = z
    .string(required)
    .min(1, 'is required')
    .max(limits.gidLengthMax, `at most ${limits.gidLengthMax} characters (gidLengthMax)`)
    .regex(gidPattern, 'only letters, digits and _ . : - are allowed');
  const transType = z.string(required).min(1, 'is required');
  const trans = z.object({
    gid,
    trans_type: transType,
    steps: z.array(z.record(z.string(), z.string({ error: 'must be a string' })), { error: 'must be an array of {action, compensate}' }).nullish(),
    payloads: z.array(z.string({ error: 'must be a string (the raw body of the call)' }), { error: 'must be an array of strings' }).nullish(),
    custom_data: z.string({ error: 'must be a string' }).nullish(),
    wait_result: z.boolean({ error: 'must be true or false' }).nullish(),
    // DTM reads it for msg; Tandem also for tcc and xa (their second phase at once). A saga's is in custom_data.
    concurrent: z.boolean({ error: 'must be true or false' }).nullish(),
    timeout_to_fail: seconds(limits.timeoutToFailMsMax, 'timeoutToFailMsMax'),
    request_timeout: seconds(limits.requestTimeoutMsMax, 'requestTimeoutMsMax'),
    retry_interval: seconds(limits.retryIntervalMsMax, 'retryIntervalMsMax'),
    retry_limit: options.retryLimit.nullish(),
    branch_headers: options.branchHeaders.nullish(),
    passthrough_headers: z.array(branchHeaderNameSchema, { error: 'must be an array of header names' }).max(64, 'at most 64 header names').nullish(),
    protocol: z.string({ error: 'must be a string' }).nullish(),
    rollback_reason: z.string({ error: 'must be a string' }).nullish(),
    query_prepared: z.string({ error: 'must be a string (the URL of the queryPrepared endpoint)' }).nullish(),
  });
  const branch = z.object({
    gid,
    trans_type: transType,
    branch_id: z
      .string(required)
      .min(1, 'is required')
      .max(limits.branchIdLengthMax, `at most ${limits.branchIdLengthMax} characters (branchIdLengthMax)`)
      .regex(gidPattern, 'only letters, digits and _ . : - are allowed'),
    data: z.string({ error: 'must be a string (the raw body of the branch\'s second-phase calls)' }).nullish(),
    // TCC registers confirm and cancel; XA registers one url called with op=commit or rollback.
    confirm: z.string({ error: 'must be a string' }).nullish(),
    cancel: z.string({ error: 'must be a string' }).nullish(),
    url: z.string({ error: 'must be a string' }).nullish(),
  });
  const list = z.object({
    position: z.string().max(512, 'at most 512 characters').optional(),
    limit: z.string().regex(/^[0-9]+$/, 'must be a positive whole number').optional(),
    gid: z.string().max(limits.gidLengthMax).optional(),
    status: z.string().optional(),
    transType: z.string().optional(),
    createTimeStart: z.string().optional(),
    createTimeEnd: z.string().optional(),
  });
  const query = z.object({ gid: z.string(required).min(1, 'is required') });
  // forceStop and resetNextCronTime: DTM's admin console posts only the gid.
  const gidOnly = z.object({ gid });
  const resetCron = z.object({
    timeout: z.string().regex(/^[0-9]+$/, 'must be a whole number of seconds').optional(),
    limit: z.string().regex(/^[0-9]+$/, 'must be a positive whole number').optional(),
  });
  return { trans, branch, list, query, gidOnly, resetCron, url: httpUrlSchema(limits) };
}

export type DtmSchemas = ReturnType<typeof dtmSchemas>;
export type DtmTransBody = z.infer<DtmSchemas['trans']>;
export type DtmBranchBody = z.infer<DtmSchemas['branch']>;

/** Validates trans_type: the supported ones pass; msg/xa get "not supported yet". */
export function checkTransType(transType: string, field = 'trans_type'): SupportedTransType {
  const supported = supportedTransTypes.find((known) => known === transType);
  if (supported) return supported;
  if (transType === 'workflow') {
    throw invalid([{ field, message: 'a workflow is opened with prepareWorkflow, reports with registerBranch and ends with submit (req_extra.status); it is not used here' }]);
  }
  if ((unsupportedTransTypes as readonly string[]).includes(transType)) {
    throw invalid([{ field, message: `trans_type ${transType} is not supported yet (supported: ${supportedTransTypes.join(', ')})` }]);
  }
  throw invalid([{ field, message: `must be one of ${supportedTransTypes.join(', ')}, got ${JSON.stringify(transType)}` }]);
}

// ---------------------------------------------------------------------------------------------
// DTM request → Tandem transaction

/** Stands in for an empty URL while the request is checked; the op is then marked done. */
const nothingToCall = 'tandem:nothing-to-call';

export interface Translated {
  spec: NewTx;
  waitResult: boolean;
}

/**
 * Turns a submit/prepare body into a new transaction, or throws a 400 naming the DTM field.
 * `forwardedHeaders` are the values of the request's passthrough_headers.
 */
export function toDtmNewTx(
  body: DtmTransBody,
  transType: SupportedTransType,
  forwardedHeaders: Record<string, string>,
  schemas: DtmSchemas,
  limits: Limits,
  brokers?: ReadonlySet<BrokerName>,
): Translated {
  const errors: FieldError[] = [];
  if (body.protocol && body.protocol !== 'http') {
    errors.push({ field: 'protocol', message: `only http is supported, got ${JSON.stringify(body.protocol)}` });
  }
  const steps = transType === 'saga' ? sagaSteps(body, schemas, errors) : transType === 'msg' ? msgSteps(body, schemas, errors) : [];
  if ((transType === 'tcc' || transType === 'xa') && (body.steps ?? []).length > 0) {
    errors.push({ field: 'steps', message: `${transType} branches are added with registerBranch, not steps` });
  }
  if (body.query_prepared) {
    if (transType !== 'msg') errors.push({ field: 'query_prepared', message: 'only msg transactions have a query_prepared URL' });
    else checkUrl(body.query_prepared, 'query_prepared', schemas, errors);
  }
  const saga = transType === 'saga' ? sagaCustomData(body.custom_data, steps.length, errors) : { concurrent: body.concurrent === true, orders: new Map<number, number[]>() };
  const delayMs = transType === 'msg' ? msgDelayMs(body.custom_data, errors) : undefined;
  if (errors.length > 0) throw invalid(errors);

  const request: TxRequest = {
    gid: body.gid,
    mode: transType,
    branches: steps.map((step, index) => ({
      urls: (transType === 'msg' ? { action: step.action || nothingToCall } : { action: step.action || nothingToCall, compensate: step.compensate || nothingToCall }) as Record<string, string>,
      payload: step.payload,
      ...(saga.concurrent && saga.orders.has(index) ? { dependsOn: (saga.orders.get(index) ?? []).map(branchIdAt) } : {}),
    })),
    concurrent: saga.concurrent,
    timeoutToFailMs: millisOrDefault(body.timeout_to_fail),
    requestTimeoutMs: millisOrDefault(body.request_timeout),
    retryIntervalMs: millisOrDefault(body.retry_interval),
    retryLimit: body.retry_limit ? body.retry_limit : null,
    branchHeaders: { ...forwardedHeaders, ...(body.branch_headers ?? {}) },
    ...(body.custom_data ? { extra: { custom_data: body.custom_data } } : {}),
    ...(transType === 'msg' && body.query_prepared ? { queryPreparedUrl: body.query_prepared } : {}),
    ...(delayMs ? { delayMs } : {}),
    ...(brokers ? { brokers } : {}),
  };
  const spec = translateProblems(() => toNewTx(request, limits, 'steps'));
  return { spec: { ...spec, branches: spec.branches.map(markNothingToCall) }, waitResult: body.wait_result === true };
}

interface SagaStep {
  action: string;
  compensate: string;
  payload: string;
}

function sagaSteps(body: DtmTransBody, schemas: DtmSchemas, errors: FieldError[]): SagaStep[] {
  const steps = body.steps ?? [];
  if (steps.length === 0) {
    errors.push({ field: 'steps', message: 'a saga needs at least one step' });
    return [];
  }
  const payloads = body.payloads ?? null;
  if (payloads !== null && payloads.length !== steps.length) {
    errors.push({ field: 'payloads', message: `one payload per step is required: ${steps.length} steps, ${payloads.length} payloads` });
  }
  return steps.map((step, index) => {
    for (const op of ['action', 'compensate'] as const) checkUrl(step[op], `steps[${index}].${op}`, schemas, errors);
    const payload = payloads?.[index] ?? step.data;
    if (payload === undefined && payloads === null) {
      errors.push({ field: 'payloads', message: `step ${index} has no payload: give payloads (one string per step) or steps[${index}].data` });
    }
    return { action: step.action ?? '', compensate: step.compensate ?? '', payload: payload ?? '' };
  });
}

/** A message's steps: only an action each, which may also be a broker target. */
function msgSteps(body: DtmTransBody, schemas: DtmSchemas, errors: FieldError[]): SagaStep[] {
  const steps = body.steps ?? [];
  if (steps.length === 0) {
    errors.push({ field: 'steps', message: 'a msg needs at least one step' });
    return [];
  }
  const payloads = body.payloads ?? null;
  if (payloads !== null && payloads.length !== steps.length) {
    errors.push({ field: 'payloads', message: `one payload per step is required: ${steps.length} steps, ${payloads.length} payloads` });
  }
  return steps.map((step, index) => {
    const action = step.action;
    if (action === undefined || action === '') errors.push({ field: `steps[${index}].action`, message: 'is required' });
    else if (action.startsWith('topic://')) {
      errors.push({ field: `steps[${index}].action`, message: 'Tandem keeps no topic subscriptions: give the subscriber\'s URL, or a broker target (rabbitmq:<exchange>/<routingKey>, jetstream:<subject>)' });
    } else if (!isBrokerTarget(action)) checkUrl(action, `steps[${index}].action`, schemas, errors);
    return { action: action ?? '', compensate: '', payload: payloads?.[index] ?? step.data ?? '' };
  });
}

/** A URL must be present; an empty one is DTM's "nothing to call", anything else must be http(s). */
function checkUrl(url: string | undefined, field: string, schemas: DtmSchemas, errors: FieldError[]): void {
  if (url === undefined) {
    errors.push({ field, message: 'is required (an empty string means there is nothing to call)' });
    return;
  }
  if (url === '') return;
  const parsed = schemas.url.safeParse(url);
  if (!parsed.success) errors.push({ field, message: parsed.error.issues[0]?.message ?? 'must be an http(s) URL' });
}

interface SagaOptions {
  concurrent: boolean;
  /** Step index → indexes of the steps it runs after. */
  orders: Map<number, number[]>;
}

function sagaCustomData(customData: string | null | undefined, stepCount: number, errors: FieldError[]): SagaOptions {
  const none: SagaOptions = { concurrent: false, orders: new Map() };
  if (!customData) return none;
  let parsed: unknown;
  try {
    parsed = JSON.parse(customData);
  } catch {
    errors.push({ field: 'custom_data', message: 'a saga\'s custom_data must be JSON such as {"concurrent":true,"orders":{"1":[0]}}' });
    return none;
  }
  if (!isRecord(parsed)) {
    errors.push({ field: 'custom_data', message: 'must be a JSON object' });
    return none;
  }
  if (parsed.concurrent !== undefined && typeof parsed.concurrent !== 'boolean') {
    errors.push({ field: 'custom_data.concurrent', message: 'must be true or false' });
  }
  const concurrent = parsed.concurrent === true;
  const orders = new Map<number, number[]>();
  if (parsed.orders === undefined || parsed.orders === null) return { concurrent, orders };
  if (!isRecord(parsed.orders)) {
    errors.push({ field: 'custom_data.orders', message: 'must be an object: step index → indexes of the steps it runs after' });
    return { concurrent, orders };
  }
  const isStepIndex = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 0 && (value as number) < stepCount;
  for (const [key, before] of Object.entries(parsed.orders)) {
    const field = `custom_data.orders.${key}`;
    const index = /^[0-9]+$/.test(key) ? Number(key) : NaN;
    if (!isStepIndex(index)) errors.push({ field, message: `${key} is not a step index (0 to ${stepCount - 1})` });
    else if (!Array.isArray(before) || !before.every(isStepIndex)) errors.push({ field, message: `must be an array of step indexes (0 to ${stepCount - 1})` });
    else if (before.includes(index)) errors.push({ field, message: 'a step cannot run after itself' });
    else orders.set(index, [...new Set(before)]);
  }
  return { concurrent, orders };
}

/**
 * A message's custom_data as DTM's clients write it (Msg.SetDelay): {"delay":N}, N whole
 * seconds the steps are held after the submit. Returns the hold in ms (undefined for none).
 */
export function msgDelayMs(customData: string | null | undefined, errors: FieldError[]): number | undefined {
  if (!customData) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(customData);
  } catch {
    errors.push({ field: 'custom_data', message: 'a msg\'s custom_data must be JSON such as {"delay":10} (seconds)' });
    return undefined;
  }
  if (!isRecord(parsed)) {
    errors.push({ field: 'custom_data', message: 'must be a JSON object' });
    return undefined;
  }
  if (parsed.delay === undefined || parsed.delay === null) return undefined;
  if (typeof parsed.delay !== 'number' || !Number.isInteger(parsed.delay) || parsed.delay < 0) {
    errors.push({ field: 'custom_data.delay', message: 'must be a whole number of seconds, not negative' });
    return undefined;
  }
  return parsed.delay * 1000;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function millisOrDefault(seconds: number | null | undefined): number | undefined {
  return seconds ? seconds * 1000 : undefined;
}

/** An XA branch from a registerBranch body: one URL, called with op=commit or op=rollback. */
export function toDtmXaBranch(body: DtmBranchBody, schemas: DtmSchemas): Branch {
  const errors: FieldError[] = [];
  if (!body.url) errors.push({ field: 'url', message: 'is required: the URL the coordinator calls with op=commit or op=rollback' });
  else checkUrl(body.url, 'url', schemas, errors);
  if (errors.length > 0) throw invalid(errors);
  const url = body.url as string;
  return {
    branchId: body.branch_id,
    payload: body.data ?? '',
    ops: { commit: { url, status: 'pending', attempts: 0 }, rollback: { url, status: 'pending', attempts: 0 } },
  };
}

/** A TCC branch from a registerBranch body, with DTM's empty-URL rule applied. */
export function toDtmTccBranch(body: DtmBranchBody, schemas: DtmSchemas): Branch {
  const errors: FieldError[] = [];
  checkUrl(body.confirm ?? undefined, 'confirm', schemas, errors);
  checkUrl(body.cancel ?? undefined, 'cancel', schemas, errors);
  if (errors.length > 0) throw invalid(errors);
  const branch: Branch = {
    branchId: body.branch_id,
    // Called with the registered data as a POST body; with none (or ''), DTM and Tandem call GET.
    payload: body.data ?? '',
    ops: {
      confirm: { url: body.confirm || nothingToCall, status: 'pending', attempts: 0 },
      cancel: { url: body.cancel || nothingToCall, status: 'pending', attempts: 0 },
    },
  };
  return markNothingToCall(branch);
}

function markNothingToCall(branch: Branch): Branch {
  const ops: Branch['ops'] = {};
  for (const [op, state] of Object.entries(branch.ops)) {
    ops[op] = state.url === nothingToCall ? { url: '', status: 'succeeded', attempts: 0 } : state;
  }
  return { ...branch, ops };
}

/** Renames the fields of problems raised by the shared request checks to DTM's names. */
export function translateProblems<T>(work: () => T): T {
  try {
    return work();
  } catch (error) {
    if (!(error instanceof ProblemError) || !error.problem.errors) throw error;
    throw invalid(error.problem.errors.map((fieldError) => ({ ...fieldError, field: dtmFieldOf(fieldError) })));
  }
}

function dtmFieldOf({ field, message }: FieldError): string {
  const payload = /^steps\[(\d+)\]\.payload$/.exec(field);
  if (payload) return `payloads[${payload[1]}]`;
  if (/^steps\[\d+\]\.dependsOn$/.test(field) || (field === 'steps' && message.includes('cycle'))) return 'custom_data.orders';
  const renamed: Record<string, string> = {
    branchHeaders: 'branch_headers',
    timeoutToFailMs: 'timeout_to_fail',
    requestTimeoutMs: 'request_timeout',
    retryIntervalMs: 'retry_interval',
    delayMs: 'custom_data.delay',
    'body.payload': 'data',
    'body.confirm': 'confirm',
    'body.cancel': 'cancel',
    'body.branchId': 'branch_id',
  };
  return renamed[field] ?? field;
}

export function parseDtm<T>(schema: z.ZodType<T>, input: unknown): T {
  return parseOrThrow(schema, input ?? {});
}

// ---------------------------------------------------------------------------------------------
// Views

/** DTM's trans_global row as its query and all endpoints answer it. Absent values are left out (never null). */
export interface DtmTransactionView {
  gid: string;
  trans_type: string;
  status: DtmStatus;
  protocol: 'http';
  create_time: string;
  update_time: string;
  finish_time?: string;
  rollback_time?: string;
  rollback_reason?: string;
  custom_data?: string;
  query_prepared?: string;
  next_cron_time?: string;
  options?: string;
  timeout_to_fail?: number;
  request_timeout?: number;
  retry_interval?: number;
  retry_limit?: number;
  branch_headers?: Record<string, string>;
  concurrent: boolean;
}

/** One row of DTM's trans_branch_op: a branch has one row per op. */
export interface DtmBranchView {
  gid: string;
  branch_id: string;
  op: string;
  url: string;
  status: DtmBranchStatus;
  /** The payload as Go marshals a []byte: base64. */
  bin_data?: string;
}

export interface DtmQueryView {
  transaction: DtmTransactionView | null;
  branches: DtmBranchView[];
}

/** DTM lists a branch's undo op first (it writes compensate/cancel rows before action/confirm). */
const dtmOpOrder: Readonly<Record<string, readonly string[]>> = {
  saga: ['compensate', 'action'],
  tcc: ['cancel', 'confirm'],
  xa: ['rollback', 'commit'],
};

export function dtmQueryView(tx: Tx | null): DtmQueryView {
  if (!tx) return { transaction: null, branches: [] };
  return { transaction: dtmTransactionView(tx), branches: tx.branches.flatMap((branch) => dtmBranchRows(tx, branch)) };
}

function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}

function wholeSeconds(ms: number): number {
  return Math.ceil(ms / 1000);
}

function endTimes(item: Pick<Tx, 'status' | 'updatedAtMs'>): Pick<DtmTransactionView, 'finish_time' | 'rollback_time'> {
  if (item.status === 'succeeded') return { finish_time: isoTime(item.updatedAtMs) };
  if (item.status === 'failed') return { rollback_time: isoTime(item.updatedAtMs) };
  return {};
}

export function dtmTransactionView(tx: Tx): DtmTransactionView {
  const options = dtmOptions(tx);
  return {
    gid: tx.gid,
    trans_type: tx.mode,
    status: dtmStatusOf(tx.status),
    protocol: 'http',
    create_time: isoTime(tx.createdAtMs),
    update_time: isoTime(tx.updatedAtMs),
    ...endTimes(tx),
    ...(tx.reason ? { rollback_reason: tx.reason } : {}),
    ...(tx.extra?.custom_data ? { custom_data: tx.extra.custom_data } : {}),
    ...(tx.queryPreparedUrl ? { query_prepared: tx.queryPreparedUrl } : {}),
    ...(tx.nextAttemptAtMs !== null && !isFinal(tx) ? { next_cron_time: isoTime(tx.nextAttemptAtMs) } : {}),
    options: JSON.stringify(options),
    ...options,
  };
}

/** The options as DTM keeps them: whole seconds, unset ones left out, `concurrent` always there. */
function dtmOptions(tx: Tx): Pick<DtmTransactionView, 'timeout_to_fail' | 'request_timeout' | 'retry_interval' | 'retry_limit' | 'branch_headers' | 'concurrent'> {
  const { options } = tx;
  return {
    ...(options.timeoutToFailMs > 0 ? { timeout_to_fail: wholeSeconds(options.timeoutToFailMs) } : {}),
    request_timeout: wholeSeconds(options.requestTimeoutMs),
    retry_interval: wholeSeconds(options.retryIntervalMs),
    ...(options.retryLimit !== null ? { retry_limit: options.retryLimit } : {}),
    ...(Object.keys(options.branchHeaders).length > 0 ? { branch_headers: hiddenValues(options.branchHeaders) } : {}),
    concurrent: options.concurrent,
  };
}

/** Stands in for every header value in DTM views. */
export const hiddenHeaderValue = '<hidden>';

/**
 * DTM's clients read branch_headers as a name → value map, so the names stay and the values,
 * often credentials, are never shown.
 */
function hiddenValues(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.keys(headers).map((name) => [name, hiddenHeaderValue]));
}

function dtmBranchRows(tx: Tx, branch: Branch): DtmBranchView[] {
  const preferred = dtmOpOrder[tx.mode] ?? [];
  const ops = [...preferred.filter((op) => op in branch.ops), ...Object.keys(branch.ops).filter((op) => !preferred.includes(op))];
  return ops.map((op) => ({
    gid: tx.gid,
    branch_id: branch.branchId,
    op,
    url: branch.ops[op].url,
    status: dtmBranchStatusOf(branch.ops[op].status),
    ...(branch.payload !== undefined ? { bin_data: Buffer.from(branch.payload).toString('base64') } : {}),
  }));
}

/** A row of the `all` listing, from the store's summary. */
export function dtmSummaryView(item: TxSummary): Pick<DtmTransactionView, 'gid' | 'trans_type' | 'status' | 'protocol' | 'create_time' | 'update_time' | 'finish_time' | 'rollback_time' | 'next_cron_time'> {
  return {
    gid: item.gid,
    trans_type: item.mode,
    status: dtmStatusOf(item.status),
    protocol: 'http',
    create_time: isoTime(item.createdAtMs),
    update_time: isoTime(item.updatedAtMs),
    ...endTimes(item),
    ...(item.nextAttemptAtMs !== null && !isFinal(item) ? { next_cron_time: isoTime(item.nextAttemptAtMs) } : {}),
  };
}

/** Tandem's mode for a DTM trans_type filter; null when no Tandem transaction can have it. */
export function modeOfTransType(transType: string): Mode | null {
  return modes.find((mode) => mode === transType) ?? null;
}
