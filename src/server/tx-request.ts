// Turns a validated request (from the native or the DTM-compatible API) into a new
// transaction, checking what a schema cannot: unique branch ids, dependencies that exist and
// form no cycle, and the byte limits. Every problem is reported with the field it concerns.
import type { Limits } from '../config.js';
import { txDefaults } from '../config.js';
import { branchIdAt, newOp, type NewTx } from '../tx/machine.js';
import type { Branch, Mode } from '../tx/types.js';
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
}

/** The ops each mode's branches must name, in the order the API documents them. */
export const opsOfMode: Readonly<Record<Mode, readonly string[]>> = {
  saga: ['action', 'compensate'],
  tcc: ['confirm', 'cancel'],
  '2pc': ['prepare', 'commit', 'rollback'],
  '3pc': ['canCommit', 'preCommit', 'doCommit', 'abort'],
};

export function toNewTx(request: TxRequest, limits: Limits, branchesField = 'branches'): NewTx {
  const errors: FieldError[] = [];
  if (request.branches.length > limits.branchCountMax) {
    errors.push({ field: branchesField, message: `at most ${limits.branchCountMax} branches (branchCountMax), got ${request.branches.length}` });
  }
  if (request.mode !== 'tcc' && request.branches.length === 0) {
    errors.push({ field: branchesField, message: 'at least one branch is required' });
  }
  if (request.mode !== 'saga' && request.mode !== 'tcc' && (request.timeoutToFailMs === 0)) {
    errors.push({ field: 'timeoutToFailMs', message: `${request.mode} needs a deadline: give a positive number of milliseconds` });
  }
  if (request.mode === 'tcc' && request.timeoutToFailMs === 0) {
    errors.push({ field: 'timeoutToFailMs', message: 'tcc needs a deadline so an abandoned transaction is cancelled: give a positive number of milliseconds' });
  }
  const headersBytes = Object.entries(request.branchHeaders ?? {}).reduce((sum, [name, value]) => sum + Buffer.byteLength(name) + Buffer.byteLength(value), 0);
  if (headersBytes > limits.branchHeadersBytesMax) {
    errors.push({ field: 'branchHeaders', message: `${headersBytes} bytes exceed branchHeadersBytesMax (${limits.branchHeadersBytesMax})` });
  }
  const branches = request.branches.map((branch, index) => toBranch(branch, index, request, limits, `${branchesField}[${index}]`, errors));
  checkBranchIds(branches, branchesField, errors);
  if (request.mode === 'saga') checkDependencies(branches, request.concurrent, branchesField, errors);
  if (errors.length > 0) throw invalid(errors);
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
    },
    ...(request.extra ? { extra: request.extra } : {}),
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
