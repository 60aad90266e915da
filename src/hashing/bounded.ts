// Consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam, 2016) on top of
// WeightedRing: no node holds more than ⌈(1+ε)·m·w/W⌉ keys, where m is the number of keys
// (counting the one being placed), w the node's weight and W the total weight (with equal
// weights: ⌈(1+ε)·mean⌉). A key whose ring node is full walks clockwise to the next node that
// is not. ε trades balance for movement: the paper bounds the extra movement by O(1/ε²).
//
// Placement depends on the load of every node, so unlike a plain ring it is stateful. Two ways
// to use it:
// - assign(key) / release(key): a live assignment table, e.g. sessions or shards that come and
//   go. A key keeps its node until released; adding a node moves nothing (new keys find it);
//   removing a node re-places only that node's keys.
// - assignAll(keys): places a whole batch from empty loads, in the order given, without
//   touching the live table: what a fresh client computes for a known key set.

import { type NodeSpec, type RingOptions, WeightedRing } from './ring.js';
import { xxh32 } from './hash.js';

export interface BoundedLoadOptions extends RingOptions {
  /** Allowed excess over the mean load (default 0.25: at most 125% of the mean). */
  readonly epsilon?: number;
}

export class BoundedLoadRing {
  readonly epsilon: number;
  private readonly ring: WeightedRing;
  private readonly assignedSlot = new Map<string, number>();
  private loads = new Float64Array(0);
  private totalWeight = 0;

  constructor(nodes: Iterable<NodeSpec | string> = [], options: BoundedLoadOptions = {}) {
    this.epsilon = options.epsilon ?? 0.25;
    if (!(this.epsilon >= 0) || !Number.isFinite(this.epsilon)) throw new RangeError('bounded: epsilon must be a finite number ≥ 0');
    this.ring = new WeightedRing(nodes, options);
    this.refreshWeights();
  }

  get size(): number {
    return this.ring.size;
  }

  /** Keys in the live assignment table. */
  get totalLoad(): number {
    return this.assignedSlot.size;
  }

  loadOf(id: string): number {
    const slot = this.ring.slotOf(id);
    return slot === undefined ? 0 : (this.loads[slot] ?? 0);
  }

  /** The most keys node `id` may hold when the table holds `totalKeys` keys. */
  capacityOf(id: string, totalKeys = this.totalLoad): number {
    const weight = this.ring.weightOf(id);
    if (weight === undefined || this.totalWeight === 0) return 0;
    return capacity((1 + this.epsilon) * totalKeys * (weight / this.totalWeight));
  }

  assignmentOf(key: string): string | undefined {
    const slot = this.assignedSlot.get(key);
    return slot === undefined ? undefined : this.ring.idOfSlot(slot);
  }

  /** Places a key (or returns where it already is); undefined when no node has weight. */
  assign(key: string): string | undefined {
    const existing = this.assignedSlot.get(key);
    if (existing !== undefined) return this.ring.idOfSlot(existing);
    this.ensureLoadSlots();
    const slot = this.place(key, this.loads, this.assignedSlot.size + 1);
    if (slot < 0) return undefined;
    this.loads[slot] += 1;
    this.assignedSlot.set(key, slot);
    return this.ring.idOfSlot(slot);
  }

  release(key: string): boolean {
    const slot = this.assignedSlot.get(key);
    if (slot === undefined) return false;
    this.assignedSlot.delete(key);
    this.loads[slot] -= 1;
    return true;
  }

  /** Adds a node (or re-weights a known one); live assignments stay where they are. */
  add(node: NodeSpec | string): void {
    this.ring.add(node);
    this.refreshWeights();
  }

  /** Removes a node and re-places its live keys, in the order they were first assigned. */
  remove(id: string): boolean {
    const slot = this.ring.slotOf(id);
    if (slot === undefined) return false;
    const orphans: string[] = [];
    for (const [key, assigned] of this.assignedSlot) if (assigned === slot) orphans.push(key);
    for (const key of orphans) this.assignedSlot.delete(key);
    this.ring.remove(id);
    this.loads[slot] = 0;
    this.refreshWeights();
    for (const key of orphans) this.assign(key);
    return true;
  }

  /**
   * Places `keys` from empty loads, in order, as if they were assigned one by one with the
   * capacity of the full batch. Returns each key's node; the live table is left alone.
   */
  assignAll(keys: readonly string[]): (string | undefined)[] {
    const loads = new Float64Array(this.ring.slotCapacity);
    const placed: (string | undefined)[] = new Array(keys.length);
    for (let index = 0; index < keys.length; index += 1) {
      const slot = this.place(keys[index], loads, keys.length);
      if (slot < 0) {
        placed[index] = undefined;
        continue;
      }
      loads[slot] += 1;
      placed[index] = this.ring.idOfSlot(slot);
    }
    return placed;
  }

  /** The node the key would go to, given `loads` and a total of `totalKeys` keys; -1 if none. */
  private place(key: string, loads: Float64Array, totalKeys: number): number {
    const points = this.ring.pointCount;
    if (points === 0) return -1;
    const perWeight = ((1 + this.epsilon) * totalKeys) / this.totalWeight;
    let index = this.ring.indexForHash(xxh32(key));
    const first = this.ring.ownerSlotAt(index);
    let previous = -1;
    for (let step = 0; step < points; step += 1) {
      const slot = this.ring.ownerSlotAt(index);
      // Consecutive points often share an owner; its capacity was just checked.
      if (slot !== previous) {
        if (loads[slot] < capacity(perWeight * this.ring.weightOfSlot(slot))) return slot;
        previous = slot;
      }
      index = this.ring.nextIndex(index);
    }
    // Unreachable while ε ≥ 0 (total capacity ≥ m); kept so a float surprise degrades to the
    // plain ring instead of failing.
    return first;
  }

  private refreshWeights(): void {
    this.totalWeight = this.ring.nodes().reduce((sum, node) => sum + (node.weight ?? 1), 0);
    this.ensureLoadSlots();
  }

  private ensureLoadSlots(): void {
    if (this.loads.length >= this.ring.slotCapacity) return;
    const grown = new Float64Array(Math.max(this.ring.slotCapacity, this.loads.length * 2));
    grown.set(this.loads);
    this.loads = grown;
  }
}

/**
 * ⌈limit⌉, ignoring float noise below one part in 10^12: (1 + 0.05) · 1000 is
 * 1050.0000000000002 in doubles, and must give 1050, not 1051.
 */
function capacity(limit: number): number {
  return Math.ceil(limit - limit * 1e-12);
}
