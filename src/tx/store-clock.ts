// One clock for every decision that says who may act or when something is due: the store's.
// Each coordinator estimates the store's time as its own monotonic clock plus an offset it
// measures now and then (half the round trip is the error), so host wall clocks that are
// skewed or jump cannot make one coordinator see another's live lease as expired.

export interface EngineClock {
  /** The current time on the shared clock, in ms since the epoch. */
  nowMs(): number;
  /** Re-measures the offset; resolves when done (errors are the caller's to report). */
  sync(): Promise<void>;
}

export interface ClockDrift {
  /** Host wall clock minus the store's clock, in ms (positive: the host is ahead). */
  driftMs: number;
  /** Round trip of the measurement, the bound on its error. */
  roundTripMs: number;
}

/** The host clock alone: right when one process is the only coordinator (embedded SQLite). */
export class HostClock implements EngineClock {
  constructor(private readonly wallMs: () => number = Date.now) {}
  nowMs(): number {
    return this.wallMs();
  }
  async sync(): Promise<void> {}
}

export class StoreClock implements EngineClock {
  private offsetMs: number | null = null;

  constructor(
    private readonly readStoreMs: () => Promise<number>,
    private readonly deps: {
      monotonicMs?: () => number;
      wallMs?: () => number;
      /** Told after each measurement, so drift can be logged and exported. */
      onMeasured?: (drift: ClockDrift) => void;
    } = {},
  ) {}

  private monotonicMs(): number {
    return (this.deps.monotonicMs ?? (() => performance.timeOrigin + performance.now()))();
  }

  nowMs(): number {
    // Before the first measurement the host clock is all there is; start() syncs first.
    if (this.offsetMs === null) return (this.deps.wallMs ?? Date.now)();
    return Math.round(this.monotonicMs() + this.offsetMs);
  }

  async sync(): Promise<void> {
    const sentMs = this.monotonicMs();
    const storeMs = await this.readStoreMs();
    const receivedMs = this.monotonicMs();
    const roundTripMs = receivedMs - sentMs;
    const offsetMs = storeMs - (sentMs + receivedMs) / 2;
    // A later estimate never moves the shared clock backwards by more than its own error.
    this.offsetMs = this.offsetMs === null ? offsetMs : Math.max(offsetMs, this.offsetMs - roundTripMs);
    const wallMs = (this.deps.wallMs ?? Date.now)();
    this.deps.onMeasured?.({ driftMs: wallMs - this.nowMs(), roundTripMs });
  }
}
