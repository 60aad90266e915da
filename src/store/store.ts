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

/** Unfinished transactions in the store by status (ended ones are not counted: there may be millions). */
export interface UnfinishedCounts {
  prepared: number;
  submitted: number;
  aborting: number;
}

export interface CommitObservation {
  batchSize: number;
  durationMs: number;
}

/** One bounded batch of the retention of finished transactions (see tx/retention.ts). */
export interface PurgeRequest {
  /** Only transactions that finished (updatedAtMs) strictly before this may go. */
  finishedBeforeMs: number;
  /** A lease expiring after this protects a transaction. */
  nowMs: number;
  /** Transactions deleted at most by this batch. */
  limit: number;
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
  /**
   * Deletes up to `limit` transactions that finished (succeeded or failed) before
   * `finishedBeforeMs` and hold no lease unexpired at `nowMs`, earliest finished first; each
   * goes whole (its row, branches, history and index entries) or not at all, and nothing
   * unfinished is touched. Safe to run from several coordinators at once. Returns how many
   * transactions it deleted.
   */
  purgeFinished(request: PurgeRequest): Promise<number>;

  /**
   * How many unfinished transactions the store holds by status, for the console; only stores
   * that can answer from an index (SQLite's partial indexes, Redis's status sets) have it.
   */
  countUnfinished?(): Promise<UnfinishedCounts>;
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

/** NUL, and UTF-16 surrogates without their other half. */
const unstorable = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * Text that every store keeps as it is: NUL and lone surrogates become U+FFFD. PostgreSQL
 * refuses NUL in text outright, and a lone surrogate has no UTF-8 form, so a driver would
 * replace it anyway, differently for each store.
 */
export function storableText(text: string): string {
  unstorable.lastIndex = 0;
  return unstorable.test(text) ? text.replace(unstorable, '\ufffd') : text;
}

/**
 * A write as every store keeps it. The text that comes from outside and lands in columns or
 * diagnostics (a participant's answer as the reason or an op's lastError) is made storable
 * here, once for all stores; the caller's objects are left alone and copied only if needed.
 */
export function storableWrite(tx: Tx, history: HistoryEntry[]): { tx: Tx; history: HistoryEntry[] } {
  const text = (value: string | undefined) => (value === undefined ? value : storableText(value));
  let branches = tx.branches;
  branches.forEach((branch, index) => {
    let ops = branch.ops;
    for (const [name, op] of Object.entries(branch.ops)) {
      const lastError = text(op.lastError);
      if (lastError === op.lastError) continue;
      if (ops === branch.ops) ops = { ...branch.ops };
      ops[name] = { ...op, lastError };
    }
    if (ops === branch.ops) return;
    if (branches === tx.branches) branches = [...tx.branches];
    branches[index] = { ...branch, ops };
  });
  const reason = text(tx.reason);
  const storedTx = branches === tx.branches && reason === tx.reason ? tx : { ...tx, branches, reason };
  const storedHistory = history.some((item) => item.reason !== undefined && text(item.reason) !== item.reason)
    ? history.map((item) => (item.reason === undefined ? item : { ...item, reason: storableText(item.reason) }))
    : history;
  return { tx: storedTx, history: storedHistory };
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
