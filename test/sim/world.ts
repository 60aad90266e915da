// Virtual time for the engine simulation: one queue of events ordered by due time, run one at a
// time. The engine under test is real async code; every promise it waits on is resolved by an
// event of this queue, so after each event the microtasks it releases run to completion and
// the engine blocks again on the next event. The same seed therefore replays exactly.

interface Scheduled {
  atMs: number;
  seq: number;
  run: () => void;
  cancelled: boolean;
}

export class SimWorld {
  nowMs = 1_000_000;
  private seq = 0;
  private readonly queue: Scheduled[] = [];
  eventsRun = 0;

  schedule(delayMs: number, run: () => void): Scheduled {
    const event: Scheduled = { atMs: this.nowMs + Math.max(0, delayMs), seq: this.seq++, run, cancelled: false };
    this.push(event);
    return event;
  }

  cancel(handle: unknown): void {
    if (handle && typeof handle === 'object' && 'cancelled' in handle) (handle as Scheduled).cancelled = true;
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Runs the next event; false when none is left. */
  async step(): Promise<boolean> {
    const event = this.pop();
    if (!event) return false;
    if (event.cancelled) return true;
    this.nowMs = Math.max(this.nowMs, event.atMs);
    this.eventsRun += 1;
    event.run();
    // Lets every microtask the event released run before the next event.
    await new Promise<void>((resolve) => setImmediate(resolve));
    return true;
  }

  /** Runs events until `done()` holds, time passes `untilMs`, or `eventsMax` events ran. */
  async runUntil(done: () => boolean, untilMs: number, eventsMax: number): Promise<void> {
    let ran = 0;
    while (!done() && ran < eventsMax) {
      const next = this.peek();
      if (!next || next.atMs > untilMs) break;
      await this.step();
      ran += 1;
    }
  }

  private peek(): Scheduled | undefined {
    return this.queue[0];
  }

  // A binary heap on (atMs, seq).
  private push(event: Scheduled): void {
    const heap = this.queue;
    heap.push(event);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!before(heap[index], heap[parent])) break;
      [heap[index], heap[parent]] = [heap[parent], heap[index]];
      index = parent;
    }
  }

  private pop(): Scheduled | undefined {
    const heap = this.queue;
    if (heap.length === 0) return undefined;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let index = 0;
      for (;;) {
        const left = 2 * index + 1;
        const right = left + 1;
        let smallest = index;
        if (left < heap.length && before(heap[left], heap[smallest])) smallest = left;
        if (right < heap.length && before(heap[right], heap[smallest])) smallest = right;
        if (smallest === index) break;
        [heap[index], heap[smallest]] = [heap[smallest], heap[index]];
        index = smallest;
      }
    }
    return top;
  }
}

function before(a: Scheduled, b: Scheduled): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}
