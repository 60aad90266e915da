// What a leader knows about one follower's log, and how it paces appends to it:
// - probe: one append at a time until one matches (after a rejection or a restart);
// - replicate: appends pipelined optimistically, at most inflightMessagesMax unacknowledged;
// - snapshot: a snapshot is on its way; no appends until it is acknowledged or timed out.

export type ProgressState = 'probe' | 'replicate' | 'snapshot';

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = 'probe';
  /** In probe state: an append is out and unanswered. */
  probeSent = false;
  pendingSnapshot = 0;
  /** Leader ticks since the snapshot was sent; a lost snapshot is resent after a timeout. */
  snapshotTicks = 0;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  /** The leader tick of the latest heartbeat this follower acknowledged (for the lease). */
  ackedTick = -Infinity;
  /** Heartbeat answers seen while appends were in flight and none was acknowledged. */
  stalledHeartbeats = 0;
  /** Last index of each append in flight, oldest first. */
  readonly inflights: number[] = [];

  constructor(next: number, private readonly inflightMax: number) {
    this.next = next;
  }

  becomeProbe(): void {
    // After a snapshot, resume right after it; otherwise right after what is known to match.
    const floor = this.state === 'snapshot' ? Math.max(this.match, this.pendingSnapshot) : this.match;
    this.state = 'probe';
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.next = floor + 1;
    this.inflights.length = 0;
  }

  becomeReplicate(): void {
    this.state = 'replicate';
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.next = this.match + 1;
    this.inflights.length = 0;
  }

  becomeSnapshot(index: number): void {
    this.state = 'snapshot';
    this.probeSent = false;
    this.pendingSnapshot = index;
    this.snapshotTicks = 0;
    this.inflights.length = 0;
  }

  /** An acknowledgement up to `index`; false when it tells nothing new (stale or duplicate). */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (index > this.match) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /**
   * A rejection of the append whose previous entry was `rejected`. Returns false when it is
   * stale (answers an append older than what is known). `probeAt` is where to try next.
   */
  maybeDecrease(rejected: number, probeAt: number): boolean {
    if (this.state === 'replicate') {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, probeAt + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  optimisticUpdate(last: number): void {
    this.next = last + 1;
  }

  addInflight(last: number): void {
    this.inflights.push(last);
  }

  freeInflightsTo(index: number): void {
    let drop = 0;
    while (drop < this.inflights.length && this.inflights[drop] <= index) drop++;
    this.inflights.splice(0, drop);
  }

  inflightsFull(): boolean {
    return this.inflights.length >= this.inflightMax;
  }

  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.probeSent;
      case 'replicate':
        return this.inflightsFull();
      case 'snapshot':
        return true;
    }
  }
}
