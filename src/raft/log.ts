// The Raft log as the core sees it: a snapshot point, the entries after it, how far the shell
// has persisted (stable), committed and handed out to apply. Everything is in memory; the shell
// owns the copy on disk and rebuilds this from it on restart.
import { entryBytes, type Entry, type Snapshot } from './types.js';

export class RaftLog {
  /** Index and term of the last entry covered by the snapshot (0/0 when none). */
  snapshotIndex = 0;
  snapshotTerm = 0;
  snapshot: Snapshot | null = null;
  /** A snapshot received from a leader and not yet persisted by the shell. */
  unstableSnapshot: Snapshot | null = null;
  entries: Entry[] = [];
  /** Last index the shell has persisted. Entries after it go out in the next Ready. */
  stable = 0;
  committed = 0;
  /** Last index handed to the shell to apply. */
  applied = 0;

  constructor(snapshot: Snapshot | null, entries: Entry[], committed: number, applied: number) {
    if (snapshot) {
      this.snapshot = snapshot;
      this.snapshotIndex = snapshot.index;
      this.snapshotTerm = snapshot.term;
    }
    this.entries = entries.filter((entry) => entry.index > this.snapshotIndex);
    for (let i = 0; i < this.entries.length; i++) {
      if (this.entries[i].index !== this.snapshotIndex + 1 + i) throw new Error(`raft log: entries not contiguous at ${this.entries[i].index}`);
    }
    this.stable = this.lastIndex();
    this.committed = Math.min(Math.max(committed, this.snapshotIndex), this.lastIndex());
    this.applied = Math.min(Math.max(applied, this.snapshotIndex), this.committed);
  }

  firstIndex(): number {
    return this.snapshotIndex + 1;
  }

  lastIndex(): number {
    return this.snapshotIndex + this.entries.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  /** The term of the entry at `index`; undefined when compacted away or past the end. */
  term(index: number): number | undefined {
    if (index === this.snapshotIndex) return this.snapshotTerm;
    if (index < this.snapshotIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapshotIndex - 1].term;
  }

  entry(index: number): Entry | undefined {
    if (index <= this.snapshotIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.snapshotIndex - 1];
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** Raft's election restriction: a candidate's log at least as up to date as ours. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /** Appends after truncating whatever from the first new index on. */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = entries[0].index;
    if (first <= this.committed) throw new Error(`raft log: truncating committed entry ${first} (committed ${this.committed})`);
    if (first > this.lastIndex() + 1) throw new Error(`raft log: gap before ${first} (last ${this.lastIndex()})`);
    this.entries.length = first - this.snapshotIndex - 1;
    for (const entry of entries) this.entries.push(entry);
    this.stable = Math.min(this.stable, first - 1);
  }

  /**
   * A follower's append: when our log holds (prevIndex, prevTerm), drop what conflicts, append
   * what is new and commit up to min(leaderCommit, last new index). Null when it does not match.
   */
  maybeAppend(prevIndex: number, prevTerm: number, leaderCommit: number, entries: Entry[]): number | null {
    if (!this.matchTerm(prevIndex, prevTerm)) return null;
    const lastNew = prevIndex + entries.length;
    const conflict = this.findConflict(entries);
    if (conflict > 0) this.append(entries.slice(conflict - entries[0].index));
    this.commitTo(Math.min(leaderCommit, lastNew));
    return lastNew;
  }

  /** The first index whose term differs from ours, or 0 when every entry is already here. */
  private findConflict(entries: Entry[]): number {
    for (const entry of entries) {
      if (entry.index <= this.snapshotIndex) continue;
      if (!this.matchTerm(entry.index, entry.term)) return entry.index;
    }
    return 0;
  }

  /**
   * The largest index <= `index` whose term is <= `term` (or the snapshot point). Lets a leader
   * and a follower skip a whole term of conflicting entries per round trip.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    let at = Math.min(index, this.lastIndex());
    for (; at > this.snapshotIndex; at--) {
      const atTerm = this.term(at)!;
      if (atTerm <= term) return { index: at, term: atTerm };
    }
    return { index: this.snapshotIndex, term: this.snapshotTerm };
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    if (index > this.lastIndex()) throw new Error(`raft log: commit ${index} beyond last ${this.lastIndex()}`);
    this.committed = index;
  }

  /** Entries [lo, hi] within a byte budget, at least one. */
  slice(lo: number, hi: number, countMax: number, bytesMax: number): Entry[] {
    const out: Entry[] = [];
    let bytes = 0;
    for (let index = lo; index <= hi && out.length < countMax; index++) {
      const entry = this.entry(index);
      if (!entry) break;
      bytes += entryBytes(entry);
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(entry);
    }
    return out;
  }

  unstableEntries(): Entry[] {
    return this.entries.slice(Math.max(0, this.stable - this.snapshotIndex));
  }

  /** Committed entries not yet handed out. */
  nextCommitted(): Entry[] {
    // After a restored snapshot the shell applies the snapshot first, then what follows it.
    const lo = Math.max(this.applied, this.snapshotIndex);
    if (this.committed <= lo) return [];
    return this.entries.slice(lo - this.snapshotIndex, this.committed - this.snapshotIndex);
  }

  /** Replaces the whole log by a snapshot from the leader. */
  restore(snapshot: Snapshot): void {
    this.snapshot = snapshot;
    this.unstableSnapshot = snapshot;
    this.snapshotIndex = snapshot.index;
    this.snapshotTerm = snapshot.term;
    this.entries = [];
    this.committed = snapshot.index;
    this.stable = Math.min(this.stable, snapshot.index - 1);
  }

  /** Drops entries up to the snapshot's index, which the shell has persisted and applied. */
  compact(snapshot: Snapshot): void {
    if (snapshot.index <= this.snapshotIndex) return;
    if (snapshot.index > this.applied) throw new Error(`raft log: compacting ${snapshot.index} beyond applied ${this.applied}`);
    this.entries = this.entries.slice(snapshot.index - this.snapshotIndex);
    this.snapshot = snapshot;
    this.snapshotIndex = snapshot.index;
    this.snapshotTerm = snapshot.term;
  }
}
