// Passive outlier ejection, following Envoy's consecutive-5xx detector:
// - `consecutiveFailures` failures in a row (5xx or connection errors; default 5) eject an
//   instance;
// - it stays out for baseEjectionTimeMs × (times ejected), at most maxEjectionTimeMs (defaults
//   30 s and 300 s), then returns with a clean failure count;
// - the multiplier drops by one for every `decayIntervalMs` (default 10 s) the instance spends in
//   service, so an instance that recovered for good gets short ejections again;
// - at most maxEjectionPercent (default 10%) of the instances are out at once, except that one
//   instance may always be ejected when none is (so small pools still shed a dead instance).
// Results reported while an instance is ejected (requests already in flight) are ignored.
//
// Events: 'ejected' (OutlierEjection) and 'returned' (id). A timer returns instances on time
// even when nobody asks; isEjected() also returns an instance whose time is up, so a late
// timer never keeps one out longer than its ejection.

import { EventEmitter } from 'node:events';
import { systemClock, type Clock, type TimerHandle } from './clock.js';

export interface OutlierDetectorOptions {
  readonly consecutiveFailures?: number;
  readonly baseEjectionTimeMs?: number;
  readonly maxEjectionTimeMs?: number;
  readonly maxEjectionPercent?: number;
  readonly decayIntervalMs?: number;
  readonly clock?: Clock;
}

export interface OutlierEjection {
  readonly id: string;
  readonly durationMs: number;
  /** The multiplier applied to the base time for this ejection. */
  readonly multiplier: number;
}

interface InstanceState {
  consecutiveFailures: number;
  multiplier: number;
  ejectedUntil: number | undefined;
  /** When the instance last came back into service (or was first seen). */
  inServiceSince: number;
  timer: TimerHandle | undefined;
}

export interface OutlierDetectorEvents {
  ejected: [OutlierEjection];
  returned: [string];
}

export class OutlierDetector extends EventEmitter<OutlierDetectorEvents> {
  readonly consecutiveFailureLimit: number;
  readonly baseEjectionTimeMs: number;
  readonly maxEjectionTimeMs: number;
  readonly maxEjectionPercent: number;
  readonly decayIntervalMs: number;
  private readonly clock: Clock;
  private readonly states = new Map<string, InstanceState>();

  constructor(instanceIds: Iterable<string> = [], options: OutlierDetectorOptions = {}) {
    super();
    this.consecutiveFailureLimit = options.consecutiveFailures ?? 5;
    this.baseEjectionTimeMs = options.baseEjectionTimeMs ?? 30_000;
    this.maxEjectionTimeMs = Math.max(options.maxEjectionTimeMs ?? 300_000, this.baseEjectionTimeMs);
    this.maxEjectionPercent = options.maxEjectionPercent ?? 10;
    this.decayIntervalMs = options.decayIntervalMs ?? 10_000;
    this.clock = options.clock ?? systemClock;
    if (!(this.consecutiveFailureLimit >= 1)) throw new RangeError('outlier: consecutiveFailures must be ≥ 1');
    if (!(this.baseEjectionTimeMs > 0)) throw new RangeError('outlier: baseEjectionTimeMs must be positive');
    this.setInstances(instanceIds);
  }

  /** The instance set the ejection percentage is counted against; unknown ids are added on use. */
  setInstances(instanceIds: Iterable<string>): void {
    const wanted = new Set(instanceIds);
    for (const [id, state] of this.states) {
      if (!wanted.has(id)) {
        state.timer?.cancel();
        this.states.delete(id);
      }
    }
    for (const id of wanted) this.stateOf(id);
  }

  onResult(id: string, ok: boolean): void {
    const state = this.stateOf(id);
    if (this.isEjected(id)) return;
    if (ok) {
      state.consecutiveFailures = 0;
      return;
    }
    state.consecutiveFailures += 1;
    if (state.consecutiveFailures >= this.consecutiveFailureLimit) this.tryEject(id, state);
  }

  isEjected(id: string): boolean {
    const state = this.states.get(id);
    if (state === undefined || state.ejectedUntil === undefined) return false;
    if (this.clock.now() >= state.ejectedUntil) {
      this.returnToService(id, state);
      return false;
    }
    return true;
  }

  ejectedIds(): string[] {
    return [...this.states.keys()].filter((id) => this.isEjected(id));
  }

  /** Cancels pending return timers (instances stay as they are). */
  close(): void {
    for (const state of this.states.values()) {
      state.timer?.cancel();
      state.timer = undefined;
    }
  }

  private stateOf(id: string): InstanceState {
    let state = this.states.get(id);
    if (state === undefined) {
      state = { consecutiveFailures: 0, multiplier: 0, ejectedUntil: undefined, inServiceSince: this.clock.now(), timer: undefined };
      this.states.set(id, state);
    }
    return state;
  }

  private tryEject(id: string, state: InstanceState): void {
    const ejected = this.ejectedIds().length;
    const total = this.states.size;
    // Envoy: eject if nothing is ejected yet, or if the ejected share is below the cap.
    if (ejected > 0 && ejected * 100 >= this.maxEjectionPercent * total) return;
    const now = this.clock.now();
    const healthyIntervals = Math.floor((now - state.inServiceSince) / this.decayIntervalMs);
    const multiplierCap = Math.ceil(this.maxEjectionTimeMs / this.baseEjectionTimeMs);
    state.multiplier = Math.min(Math.max(0, state.multiplier - healthyIntervals) + 1, multiplierCap);
    const durationMs = Math.min(this.baseEjectionTimeMs * state.multiplier, this.maxEjectionTimeMs);
    state.ejectedUntil = now + durationMs;
    state.timer = this.clock.setTimer(() => {
      state.timer = undefined;
      // isEjected() returns the instance if its time is up; if the timer fired a little early
      // by the clock's reckoning, check again when it should be.
      if (this.isEjected(id) && state.ejectedUntil !== undefined) {
        state.timer = this.clock.setTimer(() => this.isEjected(id), state.ejectedUntil - this.clock.now());
      }
    }, durationMs);
    this.emit('ejected', { id, durationMs, multiplier: state.multiplier });
  }

  private returnToService(id: string, state: InstanceState): void {
    state.timer?.cancel();
    state.timer = undefined;
    state.ejectedUntil = undefined;
    state.consecutiveFailures = 0;
    state.inServiceSince = this.clock.now();
    this.emit('returned', id);
  }
}
