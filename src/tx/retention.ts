// What the retention of finished transactions may delete: the pure rule every store applies
// in its own query language, and that the engine's purge shell and the simulation call.
// A transaction is purgeable when it has finished (succeeded or failed), finished longer ago
// than the retention, and nobody holds an unexpired lease on it (an instance answering a late
// request about it, which then gives the lease back). Its finish time is `updatedAtMs`: the
// machines stop changing it once the status is final (a lease released later leaves it).
import type { PurgeRequest } from '../store/store.js';
import type { Tx } from './types.js';
import { isFinal } from './types.js';

/**
 * The batch to ask for at `nowMs` (on the engine's clock, the store's for shared stores), or
 * null when nothing may ever be purged: a retention of 0 keeps everything.
 */
export function purgeRequestAt(nowMs: number, finishedRetentionMs: number, purgeBatchMax: number): PurgeRequest | null {
  if (finishedRetentionMs === 0 || purgeBatchMax === 0) return null;
  return { finishedBeforeMs: nowMs - finishedRetentionMs, nowMs, limit: purgeBatchMax };
}

/** The rule itself, for one transaction. */
export function isPurgeable(tx: Pick<Tx, 'status' | 'updatedAtMs' | 'lease'>, request: Pick<PurgeRequest, 'finishedBeforeMs' | 'nowMs'>): boolean {
  if (!isFinal(tx) || tx.updatedAtMs >= request.finishedBeforeMs) return false;
  return !tx.lease || tx.lease.untilMs <= request.nowMs;
}

/** Which of `txs` one batch deletes: the purgeable ones, earliest finished first, up to the limit. */
export function purgeBatchOf<T extends Pick<Tx, 'gid' | 'status' | 'updatedAtMs' | 'lease'>>(txs: Iterable<T>, request: PurgeRequest): T[] {
  return [...txs]
    .filter((tx) => isPurgeable(tx, request))
    .sort((a, b) => a.updatedAtMs - b.updatedAtMs || (a.gid < b.gid ? -1 : a.gid > b.gid ? 1 : 0))
    .slice(0, request.limit);
}
