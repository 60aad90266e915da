// Which unfinished transactions look stuck, and on which branch URL: pure, so the rule can be
// tested without a store. A transaction is stuck when it has been retrying in its current
// phase for longer than a threshold, has been rolling back for longer than another, or has
// an op whose call failed at least attemptsMin times.
import type { HistoryEntry, Tx } from './types.js';

export interface StuckThresholds {
  retryingForMs: number;
  abortingForMs: number;
  attemptsMin: number;
}

export type StuckKind = 'retrying' | 'aborting' | 'failing-repeatedly';

export interface StuckOp {
  gid: string;
  mode: Tx['mode'];
  status: Tx['status'];
  phase: string;
  kinds: StuckKind[];
  /** When the transaction entered its current status and phase. */
  sinceMs: number;
  nextAttemptAtMs: number | null;
  branchId: string;
  op: string;
  url: string;
  attempts: number;
  lastError?: string;
}

/** When the transaction entered its current status/phase: the last history entry that says so. */
export function phaseSinceMs(tx: Tx, history: readonly HistoryEntry[]): number {
  for (let index = history.length - 1; index >= 0; index--) {
    const entry = history[index];
    if (entry.status === tx.status && entry.phase === tx.phase) return entry.atMs;
  }
  return tx.createdAtMs;
}

/** The pending ops of a stuck transaction (one row per op, to group by URL), or none. */
export function stuckOps(tx: Tx, sinceMs: number, nowMs: number, thresholds: StuckThresholds): StuckOp[] {
  if (tx.status === 'succeeded' || tx.status === 'failed' || tx.nextAttemptAtMs === null) return [];
  const pending = tx.branches.flatMap((branch) =>
    Object.entries(branch.ops)
      .filter(([, op]) => op.status === 'pending' && op.attempts > 0)
      .map(([name, op]) => ({ branch, name, op })),
  );
  if (pending.length === 0) return [];
  const ageMs = nowMs - sinceMs;
  const kinds: StuckKind[] = [];
  if (tx.status === 'aborting' && ageMs >= thresholds.abortingForMs) kinds.push('aborting');
  if (tx.status !== 'aborting' && ageMs >= thresholds.retryingForMs) kinds.push('retrying');
  const repeated = pending.some(({ op }) => op.attempts >= thresholds.attemptsMin);
  if (repeated) kinds.push('failing-repeatedly');
  if (kinds.length === 0) return [];
  return pending.map(({ branch, name, op }) => ({
    gid: tx.gid,
    mode: tx.mode,
    status: tx.status,
    phase: tx.phase,
    kinds,
    sinceMs,
    nextAttemptAtMs: tx.nextAttemptAtMs,
    branchId: branch.branchId,
    op: name,
    url: op.url,
    attempts: op.attempts,
    ...(op.lastError !== undefined ? { lastError: op.lastError } : {}),
  }));
}

export interface StuckGroup {
  url: string;
  /** Transactions with at least one stuck op on this URL (an op counted once). */
  ops: StuckOp[];
}

/** Groups by URL, the URL with most stuck ops first; each group keeps at most `perGroupMax` ops. */
export function groupByUrl(ops: readonly StuckOp[], perGroupMax: number): Array<StuckGroup & { count: number }> {
  const byUrl = new Map<string, StuckOp[]>();
  for (const op of ops) {
    const list = byUrl.get(op.url) ?? [];
    list.push(op);
    byUrl.set(op.url, list);
  }
  return [...byUrl.entries()]
    .map(([url, list]) => ({ url, count: list.length, ops: [...list].sort((a, b) => a.sinceMs - b.sinceMs).slice(0, perGroupMax) }))
    .sort((a, b) => b.count - a.count || a.url.localeCompare(b.url));
}
