// Load balancers over a set of instances. Every balancer offers the same two calls:
// - pick(key?, exclude?): an instance to send a request to, or undefined when none is
//   available (all unavailable or excluded). `exclude` lets a caller fail over to an instance it
//   has not tried yet; `key` matters only to HashBalancer.
// - onResult(instance, ok, latencyMs): the outcome of a request sent to a picked instance. Every
//   pick must be followed by exactly one onResult: LeastRequestBalancer counts in-flight
//   requests from the pair.
// Availability (outlier ejection, health checks) is a predicate given at construction, e.g.
//   isAvailable: (instance) => !outlier.isEjected(instance.id) && health.isHealthy(instance.id)

import { Maglev, WeightedRing, type ConsistentHash } from '../hashing/index.js';

export interface Instance {
  readonly id: string;
  /** Base URL, e.g. http://127.0.0.1:8080 (no trailing slash). */
  readonly url: string;
  /** Relative capacity for weighted balancers; 1 when omitted. */
  readonly weight?: number;
}

export interface Balancer<T extends Instance = Instance> {
  pick(key?: string, exclude?: ReadonlySet<string>): T | undefined;
  onResult(instance: T, ok: boolean, latencyMs: number): void;
  /** Replaces the instance set; per-instance state of instances that stay is kept. */
  setInstances(instances: readonly T[]): void;
  instances(): readonly T[];
}

export interface BalancerOptions<T extends Instance = Instance> {
  /** False for instances that must not be picked now (ejected, unhealthy). */
  readonly isAvailable?: (instance: T) => boolean;
  /** Uniform in [0, 1); Math.random by default (inject a seeded one for reproducible tests). */
  readonly random?: () => number;
}

abstract class BaseBalancer<T extends Instance> implements Balancer<T> {
  protected members: readonly T[] = [];
  protected readonly isAvailable: (instance: T) => boolean;
  protected readonly random: () => number;

  // Subclasses call setInstances() at the end of their constructors, once their own fields
  // exist (a call from here would run before them, and their initialisers would undo it).
  constructor(options: BalancerOptions<T>) {
    this.isAvailable = options.isAvailable ?? (() => true);
    this.random = options.random ?? Math.random;
  }

  abstract pick(key?: string, exclude?: ReadonlySet<string>): T | undefined;

  onResult(_instance: T, _ok: boolean, _latencyMs: number): void {}

  setInstances(instances: readonly T[]): void {
    const ids = new Set<string>();
    for (const instance of instances) {
      if (ids.has(instance.id)) throw new Error(`balancer: instance ${instance.id} listed twice`);
      ids.add(instance.id);
    }
    this.members = [...instances];
  }

  instances(): readonly T[] {
    return this.members;
  }

  protected eligible(instance: T, exclude: ReadonlySet<string> | undefined): boolean {
    return (exclude === undefined || !exclude.has(instance.id)) && this.isAvailable(instance);
  }

  /** Indices of eligible instances; allocation-light (reuses one array). */
  private readonly scratch: number[] = [];
  protected eligibleIndices(exclude: ReadonlySet<string> | undefined): number[] {
    this.scratch.length = 0;
    for (let index = 0; index < this.members.length; index += 1) {
      if (this.eligible(this.members[index], exclude)) this.scratch.push(index);
    }
    return this.scratch;
  }
}

export class RoundRobinBalancer<T extends Instance = Instance> extends BaseBalancer<T> {
  private cursor = 0;

  constructor(instances: readonly T[], options: BalancerOptions<T> = {}) {
    super(options);
    this.setInstances(instances);
  }

  pick(_key?: string, exclude?: ReadonlySet<string>): T | undefined {
    const count = this.members.length;
    for (let step = 0; step < count; step += 1) {
      const index = (this.cursor + step) % count;
      const candidate = this.members[index];
      if (this.eligible(candidate, exclude)) {
        this.cursor = (index + 1) % count;
        return candidate;
      }
    }
    return undefined;
  }
}

export class RandomBalancer<T extends Instance = Instance> extends BaseBalancer<T> {
  constructor(instances: readonly T[], options: BalancerOptions<T> = {}) {
    super(options);
    this.setInstances(instances);
  }

  pick(_key?: string, exclude?: ReadonlySet<string>): T | undefined {
    const candidates = this.eligibleIndices(exclude);
    if (candidates.length === 0) return undefined;
    return this.members[candidates[Math.floor(this.random() * candidates.length)]];
  }
}

/**
 * Smooth weighted round robin, as nginx does it: each pick adds every available instance's
 * weight to its running score, takes the highest score and subtracts the total from it. Over
 * any window of (sum of weights) picks each instance is chosen exactly weight times, spread
 * out rather than in bursts (weights 5,1,1 give a a b a c a a).
 */
export class SmoothWeightedRoundRobinBalancer<T extends Instance = Instance> extends BaseBalancer<T> {
  private scores = new Map<string, number>();

  constructor(instances: readonly T[], options: BalancerOptions<T> = {}) {
    super(options);
    this.setInstances(instances);
  }

  override setInstances(instances: readonly T[]): void {
    super.setInstances(instances);
    for (const instance of instances) assertWeight(instance);
    const kept = new Map<string, number>();
    for (const instance of instances) kept.set(instance.id, this.scores.get(instance.id) ?? 0);
    this.scores = kept;
  }

  pick(_key?: string, exclude?: ReadonlySet<string>): T | undefined {
    let total = 0;
    let best: T | undefined;
    let bestScore = -Infinity;
    for (const instance of this.members) {
      const weight = instance.weight ?? 1;
      if (weight <= 0 || !this.eligible(instance, exclude)) continue;
      const score = (this.scores.get(instance.id) as number) + weight;
      this.scores.set(instance.id, score);
      total += weight;
      if (score > bestScore) {
        bestScore = score;
        best = instance;
      }
    }
    if (best !== undefined) this.scores.set(best.id, bestScore - total);
    return best;
  }
}

/**
 * Least request with the power of two choices: sample two distinct available instances and
 * take the one with fewer requests in flight per unit of weight. Far better than random under
 * uneven request costs, without the herding of "always the least loaded".
 */
export class LeastRequestBalancer<T extends Instance = Instance> extends BaseBalancer<T> {
  private inFlight = new Map<string, number>();

  constructor(instances: readonly T[], options: BalancerOptions<T> = {}) {
    super(options);
    this.setInstances(instances);
  }

  override setInstances(instances: readonly T[]): void {
    super.setInstances(instances);
    for (const instance of instances) assertWeight(instance);
    const kept = new Map<string, number>();
    for (const instance of instances) kept.set(instance.id, this.inFlight.get(instance.id) ?? 0);
    this.inFlight = kept;
  }

  inFlightOf(id: string): number {
    return this.inFlight.get(id) ?? 0;
  }

  pick(_key?: string, exclude?: ReadonlySet<string>): T | undefined {
    const candidates = this.eligibleIndices(exclude);
    if (candidates.length === 0) return undefined;
    let chosen: T;
    if (candidates.length === 1) {
      chosen = this.members[candidates[0]];
    } else {
      const first = Math.floor(this.random() * candidates.length);
      // A second index drawn from the other n-1 makes the pair distinct.
      let second = Math.floor(this.random() * (candidates.length - 1));
      if (second >= first) second += 1;
      const left = this.members[candidates[first]];
      const right = this.members[candidates[second]];
      chosen = this.loadOf(right) < this.loadOf(left) ? right : left;
    }
    this.inFlight.set(chosen.id, this.inFlightOf(chosen.id) + 1);
    return chosen;
  }

  override onResult(instance: T, _ok: boolean, _latencyMs: number): void {
    const current = this.inFlight.get(instance.id);
    if (current !== undefined && current > 0) this.inFlight.set(instance.id, current - 1);
  }

  private loadOf(instance: T): number {
    const weight = instance.weight ?? 1;
    return weight > 0 ? this.inFlightOf(instance.id) / weight : Infinity;
  }
}

export type HashAlgorithm = 'ring' | 'maglev';

export interface HashBalancerOptions<T extends Instance = Instance> extends BalancerOptions<T> {
  /** 'ring' (default): WeightedRing; 'maglev': Maglev with `maglevTableSize`. */
  readonly algorithm?: HashAlgorithm;
  readonly maglevTableSize?: number;
}

/**
 * Key affinity: a key goes to the instance consistent hashing gives it, so caches and
 * per-key state stay warm. If that instance is unavailable or excluded, the key goes to the
 * next one in the key's replica order (for a ring: the next distinct instance clockwise), and
 * returns once the instance is back. Requests without a key go to a random instance.
 */
export class HashBalancer<T extends Instance = Instance> extends BaseBalancer<T> {
  private hash!: ConsistentHash;
  private byId = new Map<string, T>();
  private readonly algorithm: HashAlgorithm;
  private readonly maglevTableSize: number | undefined;

  constructor(instances: readonly T[], options: HashBalancerOptions<T> = {}) {
    super(options);
    this.algorithm = options.algorithm ?? 'ring';
    this.maglevTableSize = options.maglevTableSize;
    this.setInstances(instances);
  }

  override setInstances(instances: readonly T[]): void {
    super.setInstances(instances);
    for (const instance of instances) assertWeight(instance);
    const nodes = instances.map((instance) => ({ id: instance.id, weight: instance.weight ?? 1 }));
    this.hash =
      this.algorithm === 'maglev'
        ? new Maglev(nodes, this.maglevTableSize === undefined ? {} : { tableSize: this.maglevTableSize })
        : new WeightedRing(nodes);
    this.byId = new Map(instances.map((instance) => [instance.id, instance]));
  }

  pick(key?: string, exclude?: ReadonlySet<string>): T | undefined {
    if (key === undefined) {
      const candidates = this.eligibleIndices(exclude);
      if (candidates.length === 0) return undefined;
      return this.members[candidates[Math.floor(this.random() * candidates.length)]];
    }
    const primaryId = this.hash.lookup(key);
    if (primaryId === undefined) return undefined;
    const primary = this.byId.get(primaryId) as T;
    if (this.eligible(primary, exclude)) return primary;
    for (const id of this.hash.replicas(key, this.members.length)) {
      const candidate = this.byId.get(id) as T;
      if (this.eligible(candidate, exclude)) return candidate;
    }
    return undefined;
  }
}

function assertWeight(instance: Instance): void {
  const weight = instance.weight ?? 1;
  if (!(weight >= 0) || !Number.isFinite(weight)) throw new RangeError(`balancer: instance ${instance.id} needs a finite weight ≥ 0`);
}
