// The contract every store backend keeps. The engine depends on this file only.
import type { GlobalStatus, HistoryEntry, Mode, Tx } from '../tx/types.js';

export interface ListQuery {
  status?: GlobalStatus;
  mode?: Mode;
  /** Opaque cursor from a previous page. */
  cursor?: string;
  limit: number;
}

export interface TxSummary {
  gid: string;
  mode: Mode;
  status: GlobalStatus;
  phase: string;
  createdAtMs: number;
  updatedAtMs: number;
  nextAttemptAtMs: number | null;
  branchCount: number;
}

export interface ListPage {
  items: TxSummary[];
  nextCursor: string | null;
}

export interface CommitObservation {
  batchSize: number;
  durationMs: number;
}

export interface Store {
  /** Writes a new transaction; false if the gid exists already. Durable when it resolves. */
  insert(tx: Tx, history: HistoryEntry[]): Promise<boolean>;
  /**
   * Replaces a transaction if its stored version is `expectedVersion` (the caller's tx carries
   * the next version); false otherwise. Durable when it resolves.
   */
  update(tx: Tx, expectedVersion: number, history: HistoryEntry[]): Promise<boolean>;
  get(gid: string): Promise<Tx | null>;
  history(gid: string): Promise<HistoryEntry[]>;
  list(query: ListQuery): Promise<ListPage>;
  /**
   * Takes the lease on a transaction for `owner` until `untilMs`, if nobody else holds an
   * unexpired one; bumps its version so a former holder's writes fail. Returns the transaction
   * as claimed, or null if it does not exist or another instance holds it.
   */
  claim(gid: string, owner: string, nowMs: number, untilMs: number): Promise<Tx | null>;
  /**
   * Gids of unfinished transactions whose next attempt is due and whose lease (if any) has
   * expired or is held by `owner` (a restarted instance takes its own work back at once),
   * oldest due first.
   */
  due(nowMs: number, limit: number, owner: string): Promise<string[]>;
  /** Records that a coordinator instance is alive at `nowMs`. */
  heartbeat(instanceId: string, nowMs: number): Promise<void>;
  /** Instances that heartbeat at or after `sinceMs`. */
  liveInstances(sinceMs: number): Promise<string[]>;
  /** Forgets an instance (on clean shutdown), so its share moves at once. */
  removeInstance(instanceId: string): Promise<void>;
  /**
   * The store's own time in ms since the epoch (PostgreSQL's clock_timestamp(), Redis TIME; an
   * embedded store answers the host's clock). Coordinators sharing a store agree on it whatever
   * their own clocks say, so times that decide who may act can be taken from it.
   */
  clockMs(): Promise<number>;
  /** Called after each group commit, for metrics. */
  onCommit(observer: (observation: CommitObservation) => void): void;
  close(): Promise<void>;
}

export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

export class BadStoreUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BadStoreUrlError';
  }
}

export function summarize(tx: Tx): TxSummary {
  return {
    gid: tx.gid,
    mode: tx.mode,
    status: tx.status,
    phase: tx.phase,
    createdAtMs: tx.createdAtMs,
    updatedAtMs: tx.updatedAtMs,
    nextAttemptAtMs: tx.nextAttemptAtMs,
    branchCount: tx.branches.length,
  };
}

export function encodeCursor(createdAtMs: number, gid: string): string {
  return Buffer.from(JSON.stringify([createdAtMs, gid])).toString('base64url');
}

export function decodeCursor(cursor: string): [number, string] | null {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(parsed) && parsed.length === 2 && typeof parsed[0] === 'number' && typeof parsed[1] === 'string') {
      return [parsed[0], parsed[1]];
    }
  } catch {
    return null;
  }
  return null;
}
