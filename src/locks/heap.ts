// A binary min-heap of timers keyed by due time, indexed by (kind, id) so that each lease,
// session and queued request has at most one entry. Renewing moves the entry in place and
// ending removes it, so the heap holds exactly the live deadlines: its size is bounded by the
// leases, sessions and waiters that exist, whatever the rate of renewals and keepalives.

export interface TimerEntry {
  atMs: number;
  kind: 'lease' | 'session' | 'wait';
  /** leaseId, sessionId or requestId, depending on `kind`. */
  id: string;
}

type TimerKind = TimerEntry['kind'];

function keyOf(kind: TimerKind, id: string): string {
  return `${kind}\u0000${id}`;
}

export class TimerHeap {
  private readonly entries: TimerEntry[] = [];
  private readonly indexOfKey = new Map<string, number>();

  get size(): number {
    return this.entries.length;
  }

  peek(): TimerEntry | undefined {
    return this.entries[0];
  }

  /** Schedules the entry, replacing the one of the same kind and id if there is one. */
  set(entry: TimerEntry): void {
    const key = keyOf(entry.kind, entry.id);
    const index = this.indexOfKey.get(key);
    if (index === undefined) {
      this.entries.push(entry);
      this.place(this.entries.length - 1, entry);
      this.siftUp(this.entries.length - 1);
      return;
    }
    const previousAtMs = this.entries[index].atMs;
    this.place(index, entry);
    if (entry.atMs < previousAtMs) this.siftUp(index);
    else this.siftDown(index);
  }

  /** Removes the entry of that kind and id; nothing happens when there is none. */
  delete(kind: TimerKind, id: string): void {
    const index = this.indexOfKey.get(keyOf(kind, id));
    if (index !== undefined) this.removeAt(index);
  }

  pop(): TimerEntry | undefined {
    const top = this.entries[0];
    if (top !== undefined) this.removeAt(0);
    return top;
  }

  private removeAt(index: number): void {
    const entries = this.entries;
    const removed = entries[index];
    this.indexOfKey.delete(keyOf(removed.kind, removed.id));
    const last = entries.pop()!;
    if (index === entries.length) return;
    this.place(index, last);
    if (last.atMs < removed.atMs) this.siftUp(index);
    else this.siftDown(index);
  }

  private place(index: number, entry: TimerEntry): void {
    this.entries[index] = entry;
    this.indexOfKey.set(keyOf(entry.kind, entry.id), index);
  }

  private siftUp(start: number): void {
    const entries = this.entries;
    const entry = entries[start];
    let index = start;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (entries[parent].atMs <= entry.atMs) break;
      this.place(index, entries[parent]);
      index = parent;
    }
    this.place(index, entry);
  }

  private siftDown(start: number): void {
    const entries = this.entries;
    const entry = entries[start];
    let index = start;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= entries.length) break;
      const right = left + 1;
      const child = right < entries.length && entries[right].atMs < entries[left].atMs ? right : left;
      if (entries[child].atMs >= entry.atMs) break;
      this.place(index, entries[child]);
      index = child;
    }
    this.place(index, entry);
  }
}
