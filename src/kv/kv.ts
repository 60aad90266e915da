// Optimistic concurrency for the versioned key-value store, as pure decisions. Every write takes
// the next revision of one counter over the whole store, and that revision becomes the key's
// version. Versions therefore never repeat, even for a key deleted and created again, so an
// expected version can never match a different incarnation of the key (no ABA).
// `expectedVersion` 0 means "the key must not exist"; null means "whatever is there".

export interface KvEntry {
  key: string;
  /** The value as JSON text. */
  valueJson: string;
  version: number;
}

export type KvWrite =
  | { type: 'put'; key: string; valueJson: string; expectedVersion: number | null }
  | { type: 'delete'; key: string; expectedVersion: number | null };

export type KvOutcome =
  | { ok: true; type: 'put'; key: string; version: number; created: boolean }
  | { ok: true; type: 'delete'; key: string; version: number }
  | { ok: false; reason: 'conflict'; key: string; currentVersion: number }
  | { ok: false; reason: 'not-found'; key: string }
  | { ok: false; reason: 'full'; key: string };

export type KvDecision =
  | { apply: 'upsert'; entry: KvEntry; outcome: KvOutcome }
  | { apply: 'remove'; key: string; outcome: KvOutcome }
  | { apply: 'nothing'; outcome: KvOutcome };

export interface KvContext {
  /** The revision this write takes if it writes. */
  nextRevision: number;
  keyCount: number;
  keysMax: number;
}

export function decide(currentVersion: number | null, write: KvWrite, context: KvContext): KvDecision {
  const { key } = write;
  if (write.expectedVersion !== null && (currentVersion ?? 0) !== write.expectedVersion) {
    return { apply: 'nothing', outcome: { ok: false, reason: 'conflict', key, currentVersion: currentVersion ?? 0 } };
  }
  if (write.type === 'delete') {
    if (currentVersion === null) return { apply: 'nothing', outcome: { ok: false, reason: 'not-found', key } };
    return { apply: 'remove', key, outcome: { ok: true, type: 'delete', key, version: currentVersion } };
  }
  if (currentVersion === null && context.keyCount >= context.keysMax) {
    return { apply: 'nothing', outcome: { ok: false, reason: 'full', key } };
  }
  const version = context.nextRevision;
  return {
    apply: 'upsert',
    entry: { key, valueJson: write.valueJson, version },
    outcome: { ok: true, type: 'put', key, version, created: currentVersion === null },
  };
}

/** The smallest string greater than every string starting with `prefix`, for range scans; null if none. */
export function prefixEnd(prefix: string): string | null {
  const codePoints = [...prefix];
  while (codePoints.length > 0) {
    const last = codePoints.pop()!.codePointAt(0)!;
    // SQLite compares UTF-8 bytes, which order like code points; skip the surrogate range,
    // which UTF-8 cannot encode.
    if (last < 0x10ffff) return codePoints.join('') + String.fromCodePoint(last + 1 === 0xd800 ? 0xe000 : last + 1);
  }
  return null;
}
