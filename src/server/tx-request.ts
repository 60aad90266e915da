// Turns a validated request (from the native or the DTM-compatible API) into a new
// transaction, checking what a schema cannot: unique branch ids, dependencies that exist and
// form no cycle, and the byte limits. Every problem is reported with the field it concerns.
import type { Limits } from '../config.js';
import { txDefaults } from '../config.js';
import { branchIdAt, newOp, type NewTx } from '../tx/machine.js';
import type { Branch, Mode } from '../tx/types.js';
import { isBrokerTarget, parseBrokerTarget, type BrokerName } from '../messaging/types.js';
import { invalid, type FieldError } from './problem.js';

export interface BranchRequest {
  branchId?: string;
  /** Op name → URL (action/compensate, prepare/commit/rollback, …). */
  urls: Record<string, string>;
  /** Raw body sent to the branch; absent sends GET. */
  payload?: string;
  dependsOn?: string[];
}

export interface TxRequest {
  gid: string;
  mode: Mode;
  branches: BranchRequest[];
  concurrent: boolean;
  timeoutToFailMs?: number;
  requestTimeoutMs?: number;
  retryIntervalMs?: number;
  retryLimit?: number | null;
  branchHeaders?: Record<string, string>;
  extra?: Record<string, string>;
  /** Messages only; see Tx.queryPreparedUrl. */
  queryPreparedUrl?: string;
  /** Messages only; see TxOptions.delayMs. */
  delayMs?: number;
  /** Brokers this coordinator can publish to; message steps naming another are refused. */
  brokers?: ReadonlySet<BrokerName>;
}

/** The ops each mode's branches must name, in the order the API documents them. */
export const opsOfMode: Readonly<Record<Mode, readonly string[]>> = {
  saga: ['action', 'compensate'],
  tcc: ['confirm', 'cancel'],
  '2pc': ['prepare', 'commit', 'rollback'],
  '3pc': ['canCommit', 'preCommit', 'doCommit', 'abort'],
  xa: ['commit', 'rollback'],
  msg: ['action'],
  // Workflows are never created through the transaction APIs; listed for completeness.
  workflow: ['action', 'compensate'],
};

/** Modes whose branches the application registers while the transaction is prepared. */
export function registersBranches(mode: Mode): boolean {
  return mode === 'tcc' || mode === 'xa';
}

/**
 * Whether a new transaction starts at once. TCC and XA wait for the app's submit; so does a
 * message prepared with a queryPrepared URL (the app submits after its local commit).
 */
export function startsAtOnce(request: Pick<TxRequest, 'mode' | 'queryPreparedUrl'>): boolean {
  if (registersBranches(request.mode)) return false;
  return !(request.mode === 'msg' && request.queryPreparedUrl !== undefined);
}

export function toNewTx(request: TxRequest, limits: Limits, branchesField = 'branches'): NewTx {
  const errors: FieldError[] = [];
  if (request.branches.length > limits.branchCountMax) {
    errors.push({ field: branchesField, message: `at most ${limits.branchCountMax} branches (branchCountMax), got ${request.branches.length}` });
  }
  if (!registersBranches(request.mode) && request.branches.length === 0) {
    errors.push({ field: branchesField, message: 'at least one branch is required' });
  }
  if (request.timeoutToFailMs === 0) checkDeadlineNeeded(request, errors);
  if (request.mode === 'msg') checkMessage(request, branchesField, errors);
  if (request.delayMs !== undefined && request.delayMs > 0 && request.mode !== 'msg') {
    errors.push({ field: 'delayMs', message: 'only messages (mode msg) hold their steps for a delay' });
  }
  if (request.delayMs !== undefined && request.delayMs > limits.messageDelayMsMax) {
    errors.push({ field: 'delayMs', message: `at most ${limits.messageDelayMsMax} (messageDelayMsMax)` });
  }
  const headersBytes = Object.entries(request.branchHeaders ?? {}).reduce((sum, [name, value]) => sum + Buffer.byteLength(name) + Buffer.byteLength(value), 0);
  if (headersBytes > limits.branchHeadersBytesMax) {
    errors.push({ field: 'branchHeaders', message: `${headersBytes} bytes exceed branchHeadersBytesMax (${limits.branchHeadersBytesMax})` });
  }
  const branches = request.branches.map((branch, index) => toBranch(branch, index, request, limits, `${branchesField}[${index}]`, errors));
  checkBranchIds(branches, branchesField, errors);
  if (request.mode === 'saga') checkDependencies(branches, request.concurrent, branchesField, errors);
  if (errors.length > 0) throw invalid(errors);
  // Sequential messages deliver in branch order without dependencies; only sagas chain them.
  const sequential = request.mode === 'saga' && !request.concurrent;
  return {
    gid: request.gid,
    mode: request.mode,
    branches: sequential ? chain(branches) : branches,
    options: {
      timeoutToFailMs: request.timeoutToFailMs ?? (request.mode === 'saga' ? txDefaults.sagaTimeoutToFailMs : txDefaults.timeoutToFailMs),
      requestTimeoutMs: request.requestTimeoutMs ?? txDefaults.requestTimeoutMs,
      retryIntervalMs: request.retryIntervalMs ?? txDefaults.retryIntervalMs,
      retryIntervalMsMax: Math.max(limits.retryIntervalMsMax, request.retryIntervalMs ?? 0),
      retryLimit: request.retryLimit ?? null,
      branchHeaders: request.branchHeaders ?? {},
      concurrent: request.concurrent,
      ...(request.delayMs ? { delayMs: request.delayMs } : {}),
    },
    ...(request.extra ? { extra: request.extra } : {}),
    ...(request.queryPreparedUrl !== undefined ? { queryPreparedUrl: request.queryPreparedUrl } : {}),
  };
}

export function toBranch(branch: BranchRequest, index: number, request: Pick<TxRequest, 'mode'>, limits: Limits, field: string, errors: FieldError[]): Branch {
  for (const op of opsOfMode[request.mode]) {
    if (!branch.urls[op]) errors.push({ field: `${field}.${op}`, message: `a URL is required for ${op}` });
  }
  if (branch.payload !== undefined && Buffer.byteLength(branch.payload) > limits.payloadBytesMax) {
    errors.push({ field: `${field}.payload`, message: `${Buffer.byteLength(branch.payload)} bytes exceed payloadBytesMax (${limits.payloadBytesMax})` });
  }
  const ops: Branch['ops'] = {};
  for (const [op, url] of Object.entries(branch.urls)) ops[op] = newOp(url);
  return {
    branchId: branch.branchId ?? branchIdAt(index),
    ops,
    ...(branch.payload !== undefined ? { payload: branch.payload } : {}),
    ...(branch.dependsOn ? { dependsOn: branch.dependsOn } : {}),
  };
}

function checkDeadlineNeeded(request: TxRequest, errors: FieldError[]): void {
  if (request.mode === 'saga' || (request.mode === 'msg' && request.queryPreparedUrl === undefined)) return;
  const why: Partial<Record<Mode, string>> = {
    tcc: 'so an abandoned transaction is cancelled',
    xa: 'so an abandoned transaction is rolled back',
    msg: 'after which an unsubmitted message is checked with queryPrepared',
  };
  errors.push({ field: 'timeoutToFailMs', message: `${request.mode} needs a deadline${why[request.mode] ? ` ${why[request.mode]}` : ''}: give a positive number of milliseconds` });
}

function checkMessage(request: TxRequest, field: string, errors: FieldError[]): void {
  if (request.retryLimit !== undefined && request.retryLimit !== null) {
    errors.push({ field: 'retryLimit', message: 'a submitted message cannot be taken back, so its steps are retried without limit; leave retryLimit out' });
  }
  request.branches.forEach((branch, index) => {
    const target = branch.urls.action;
    if (target === undefined || !isBrokerTarget(target)) return;
    const parsed = parseBrokerTarget(target);
    if ('error' in parsed) errors.push({ field: `${field}[${index}].action`, message: parsed.error });
    else if (!request.brokers?.has(parsed.broker)) {
      errors.push({ field: `${field}[${index}].action`, message: `this coordinator has no ${parsed.broker} connection configured (see TANDEM_${parsed.broker.toUpperCase()}_URL)` });
    }
  });
}

function checkBranchIds(branches: Branch[], field: string, errors: FieldError[]): void {
  const seen = new Set<string>();
  branches.forEach((branch, index) => {
    if (seen.has(branch.branchId)) errors.push({ field: `${field}[${index}].branchId`, message: `branch id ${branch.branchId} is used twice` });
    seen.add(branch.branchId);
  });
}

function checkDependencies(branches: Branch[], concurrent: boolean, field: string, errors: FieldError[]): void {
  const ids = new Set(branches.map((branch) => branch.branchId));
  branches.forEach((branch, index) => {
    if (!branch.dependsOn || branch.dependsOn.length === 0) return;
    if (!concurrent) errors.push({ field: `${field}[${index}].dependsOn`, message: 'dependencies need concurrent: true (a sequential saga runs in order already)' });
    for (const id of branch.dependsOn) {
      if (!ids.has(id)) errors.push({ field: `${field}[${index}].dependsOn`, message: `no branch has id ${id}` });
      if (id === branch.branchId) errors.push({ field: `${field}[${index}].dependsOn`, message: 'a branch cannot depend on itself' });
    }
  });
  const cycle = findCycle(branches);
  if (cycle) errors.push({ field: `${field}`, message: `dependencies form a cycle: ${cycle.join(' → ')}` });
}

function findCycle(branches: Branch[]): string[] | null {
  const byId = new Map(branches.map((branch) => [branch.branchId, branch]));
  const state = new Map<string, 'visiting' | 'done'>();
  const path: string[] = [];
  const visit = (id: string): string[] | null => {
    if (state.get(id) === 'done') return null;
    if (state.get(id) === 'visiting') return [...path.slice(path.indexOf(id)), id];
    state.set(id, 'visiting');
    path.push(id);
    for (const dependency of byId.get(id)?.dependsOn ?? []) {
      if (!byId.has(dependency)) continue;
      const cycle = visit(dependency);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(id, 'done');
    return null;
  };
  for (const branch of branches) {
    const cycle = visit(branch.branchId);
    if (cycle) return cycle;
  }
  return null;
}

/** A sequential saga is the chain in which each branch depends on the one before it. */
function chain(branches: Branch[]): Branch[] {
  return branches.map((branch, index) => (index === 0 ? branch : { ...branch, dependsOn: [branches[index - 1].branchId] }));
}
