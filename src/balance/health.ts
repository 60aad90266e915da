// Active HTTP health checks: every `intervalMs` each instance gets GET <url><path>; a 2xx answer
// within `timeoutMs` is a pass, anything else (other status, timeout, refused connection) a
// failure. `unhealthyThreshold` failures in a row mark a healthy instance unhealthy,
// `healthyThreshold` passes in a row bring it back (Envoy's defaults for these are small
// integers too; ours: 3 and 2).
//
// A round starts only after the previous one finished, so a slow instance never piles up
// checks. Events: 'healthy' and 'unhealthy' (on a change of state, with the instance), and
// 'checked' after every round (handy for tests and metrics).

import { EventEmitter } from 'node:events';
import { request, type Dispatcher } from 'undici';
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import type { Instance } from './balancers.js';

export interface HealthCheckerOptions {
  /** Path requested on each instance (default /health). */
  readonly path?: string;
  readonly intervalMs?: number;
  readonly timeoutMs?: number;
  readonly unhealthyThreshold?: number;
  readonly healthyThreshold?: number;
  /** State of an instance before its first checks (default healthy). */
  readonly initiallyHealthy?: boolean;
  /** undici dispatcher (connection pool) to send checks through; undici's global one by default. */
  readonly dispatcher?: Dispatcher;
  readonly clock?: Clock;
}

export interface HealthCheckerEvents<T extends Instance> {
  healthy: [T];
  unhealthy: [T, string];
  checked: [];
}

interface HealthState {
  healthy: boolean;
  passesInRow: number;
  failuresInRow: number;
  lastFailure: string | undefined;
}

export class HealthChecker<T extends Instance = Instance> extends EventEmitter<HealthCheckerEvents<T>> {
  private readonly path: string;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly unhealthyThreshold: number;
  private readonly healthyThreshold: number;
  private readonly initiallyHealthy: boolean;
  private readonly dispatcher: Dispatcher | undefined;
  private readonly clock: Clock;
  private members: readonly T[] = [];
  private readonly states = new Map<string, HealthState>();
  private timer: TimerHandle | undefined;
  private running = false;
  private currentRound: Promise<void> | undefined;

  constructor(instances: readonly T[], options: HealthCheckerOptions = {}) {
    super();
    this.path = options.path ?? '/health';
    this.intervalMs = options.intervalMs ?? 5_000;
    this.timeoutMs = options.timeoutMs ?? 1_000;
    this.unhealthyThreshold = options.unhealthyThreshold ?? 3;
    this.healthyThreshold = options.healthyThreshold ?? 2;
    this.initiallyHealthy = options.initiallyHealthy ?? true;
    this.dispatcher = options.dispatcher;
    this.clock = options.clock ?? systemClock;
    this.setInstances(instances);
  }

  setInstances(instances: readonly T[]): void {
    this.members = [...instances];
    const ids = new Set(instances.map((instance) => instance.id));
    for (const id of this.states.keys()) if (!ids.has(id)) this.states.delete(id);
    for (const instance of instances) {
      if (!this.states.has(instance.id)) {
        this.states.set(instance.id, { healthy: this.initiallyHealthy, passesInRow: 0, failuresInRow: 0, lastFailure: undefined });
      }
    }
  }

  isHealthy(id: string): boolean {
    return this.states.get(id)?.healthy ?? false;
  }

  /** Why the last check of an instance failed, if it did. */
  lastFailure(id: string): string | undefined {
    return this.states.get(id)?.lastFailure;
  }

  /** Starts periodic checks; the first round runs at once. */
  start(): void {
    if (this.running) return;
    this.running = true;
    void this.runRound();
  }

  /** Stops checking and waits for a round in progress to finish. */
  async stop(): Promise<void> {
    this.running = false;
    this.timer?.cancel();
    this.timer = undefined;
    await this.currentRound;
  }

  /** Checks every instance once, now. */
  async checkNow(): Promise<void> {
    await Promise.all(this.members.map((instance) => this.checkOne(instance)));
    this.emit('checked');
  }

  private async runRound(): Promise<void> {
    if (!this.running) return;
    this.currentRound = this.checkNow();
    try {
      await this.currentRound;
    } finally {
      this.currentRound = undefined;
      if (this.running) this.timer = this.clock.setTimer(() => void this.runRound(), this.intervalMs);
    }
  }

  private async checkOne(instance: T): Promise<void> {
    const failure = await this.probe(instance);
    const state = this.states.get(instance.id);
    if (state === undefined) return; // removed while the check ran
    if (failure === undefined) {
      state.passesInRow += 1;
      state.failuresInRow = 0;
      state.lastFailure = undefined;
      if (!state.healthy && state.passesInRow >= this.healthyThreshold) {
        state.healthy = true;
        this.emit('healthy', instance);
      }
      return;
    }
    state.failuresInRow += 1;
    state.passesInRow = 0;
    state.lastFailure = failure;
    if (state.healthy && state.failuresInRow >= this.unhealthyThreshold) {
      state.healthy = false;
      this.emit('unhealthy', instance, failure);
    }
  }

  /** undefined on a pass, else a short reason. */
  private async probe(instance: T): Promise<string | undefined> {
    try {
      const response = await request(`${instance.url}${this.path}`, {
        method: 'GET',
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
        signal: AbortSignal.timeout(this.timeoutMs),
        ...(this.dispatcher === undefined ? {} : { dispatcher: this.dispatcher }),
      });
      await response.body.dump();
      return response.statusCode >= 200 && response.statusCode < 300 ? undefined : `status ${response.statusCode}`;
    } catch (error) {
      return describeError(error);
    }
  }
}

export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  const cause = (error as { cause?: unknown }).cause;
  const causeCode = cause instanceof Error ? (cause as { code?: unknown }).code : undefined;
  const label = typeof code === 'string' ? code : typeof causeCode === 'string' ? causeCode : error.name;
  return `${label}: ${error.message}`;
}
