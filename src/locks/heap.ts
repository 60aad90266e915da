// A binary min-heap of timers keyed by due time. Entries are never updated in place: a renewed
// lease pushes a new entry and the old one is skipped when it comes due (its owner checks that
// the deadline still matches), which keeps renew at O(log n) with no index to maintain.

export interface TimerEntry {
  atMs: number;
  kind: 'lease' | 'session' | 'wait';
  /** leaseId, sessionId or requestId, depending on `kind`. */
  id: string;
}

export class TimerHeap {
  private readonly entries: TimerEntry[] = [];

  get size(): number {
    return this.entries.length;
  }

  peek(): TimerEntry | undefined {
    return this.entries[0];
  }

  push(entry: TimerEntry): void {
    const entries = this.entries;
    entries.push(entry);
    let index = entries.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (entries[parent].atMs <= entry.atMs) break;
      entries[index] = entries[parent];
      index = parent;
    }
    entries[index] = entry;
  }

  pop(): TimerEntry | undefined {
    const entries = this.entries;
    const top = entries[0];
    const last = entries.pop();
    if (top === undefined || last === undefined || entries.length === 0) return top;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= entries.length) break;
      const right = left + 1;
      const child = right < entries.length && entries[right].atMs < entries[left].atMs ? right : left;
      if (entries[child].atMs >= last.atMs) break;
      entries[index] = entries[child];
      index = child;
    }
    entries[index] = last;
    return top;
  }
}
