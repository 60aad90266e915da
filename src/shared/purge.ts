// The rule the SDK's purge helpers share (barrier, inbox, outbox): rows older than
// `olderThanMs` go, at most `batchMax` per call; an `olderThanMs` of 0 keeps everything, as
// the coordinator's finishedRetentionMs does. "Older" is judged on the database's own clock,
// the one that stamped the rows.

export interface PurgeOptions {
  /** Rows older than this go; 0 keeps everything. */
  olderThanMs: number;
  /** Rows one call deletes at most (one statement). */
  batchMax: number;
}

/** Largest batchMax: one purge is one statement, and its locks must stay short. */
export const purgeBatchMaxLimit = 10_000;

/** Thrown for a purge option that is not a usable number; `field` names it. */
export class InvalidPurgeOption extends RangeError {
  constructor(readonly field: keyof PurgeOptions, problem: string) {
    super(`purge: ${field} ${problem}`);
    this.name = 'InvalidPurgeOption';
  }
}

/** The options checked, or null when nothing may be deleted (olderThanMs 0). */
export function checkedPurgeOptions(options: PurgeOptions): PurgeOptions | null {
  const { olderThanMs, batchMax } = options;
  if (!Number.isSafeInteger(olderThanMs) || olderThanMs < 0) throw new InvalidPurgeOption('olderThanMs', `must be a non-negative integer (0 keeps everything), got ${String(olderThanMs)}`);
  if (!Number.isSafeInteger(batchMax) || batchMax < 1 || batchMax > purgeBatchMaxLimit) {
    throw new InvalidPurgeOption('batchMax', `must be an integer from 1 to purgeBatchMaxLimit (${purgeBatchMaxLimit}), got ${String(batchMax)}`);
  }
  return olderThanMs === 0 ? null : { olderThanMs, batchMax };
}

/** An instant `ms` before now in SQLite's stored text form, strftime('%Y-%m-%dT%H:%M:%fZ'). */
export function sqliteTimeBefore(ms: number, nowMs: number = Date.now()): string {
  return new Date(nowMs - ms).toISOString();
}
