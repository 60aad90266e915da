// Consistent-hash ring with virtual nodes and weights, where adding, removing or re-weighting
// one node moves only the keys that must move: those gained or lost by that node.
//
// A node of weight w owns round(w · pointsPerWeight) points. Point number i of a node sits at a
// position derived from (node id, i) alone, so a node's first k points are the same whatever
// its weight and whatever other nodes exist. Raising a weight adds points (keys move only onto
// this node), lowering it drops its last points (keys move only off it), and a node joining or
// leaving changes no one else's points. Contrast with ketama/hashring, where a node's point
// count is its share of the total weight, so one change re-counts every node.
//
// Equal positions from different nodes are ordered by node id, so the ring, and hence every
// placement, is a function of the set of (id, weight) pairs alone, not of the order in which
// nodes were added: two clients that know the same nodes agree on every key.
//
// Layout for fast lookups: sorted positions in a Uint32Array, the owning node's slot in a
// parallel Uint32Array, and a 65,536-entry index by the top 16 bits of a position that narrows
// each binary search to a few points. A lookup hashes the key (XXH32) and allocates nothing.

import { xxh32, xxh32Pair } from './hash.js';

export interface NodeSpec {
  readonly id: string;
  /** Relative capacity; 1 when omitted. Zero keeps the node known but owning nothing. */
  readonly weight?: number;
}

/** What every key-to-node structure here offers. */
export interface ConsistentHash {
  readonly size: number;
  /** The node a key belongs to, or undefined when there are no nodes. */
  lookup(key: string): string | undefined;
  /** `count` distinct nodes for a key (all nodes if there are fewer), the first being lookup(key). */
  replicas(key: string, count: number): string[];
}

export interface RingOptions {
  /** Points per unit of weight (default 160, as ketama gives a server of average weight). */
  readonly pointsPerWeight?: number;
}

interface RingNode {
  readonly id: string;
  readonly slot: number;
  readonly idHashLow: number;
  readonly idHashHigh: number;
  weight: number;
  points: number;
}

// Seeds of the two id hashes that identify a node: 64 bits, so distinct ids practically never
// share a point sequence.
const ID_SEED_HIGH = 0x5bd1e995;
const POINT_SEED = 0x27d4eb2f;
const INDEX_BITS = 16;
const INDEX_SHIFT = 32 - INDEX_BITS;

/** First index in `sorted[0..count)` whose value is ≥ `value` (count if none). */
export function lowerBound(sorted: Uint32Array, count: number, value: number): number {
  let low = 0;
  let high = count;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (sorted[middle] < value) low = middle + 1;
    else high = middle;
  }
  return low;
}

function pointPosition(node: RingNode, pointIndex: number): number {
  return xxh32Pair(pointIndex, node.idHashHigh, (node.idHashLow ^ POINT_SEED) | 0);
}

export class WeightedRing implements ConsistentHash {
  private readonly pointsPerWeight: number;
  private readonly nodesById = new Map<string, RingNode>();
  private slotIds: (string | undefined)[] = [];
  private readonly slotWeights: number[] = [];
  private readonly freeSlots: number[] = [];
  private positions = new Uint32Array(0);
  private owners = new Uint32Array(0);
  /** index[b] = first point whose top 16 bits are ≥ b; index[65536] = point count. */
  private readonly bucketStarts = new Uint32Array((1 << INDEX_BITS) + 1);
  private seenStamps = new Uint32Array(0);
  private stamp = 0;

  constructor(nodes: Iterable<NodeSpec | string> = [], options: RingOptions = {}) {
    this.pointsPerWeight = options.pointsPerWeight ?? 160;
    if (!(this.pointsPerWeight > 0)) throw new RangeError('ring: pointsPerWeight must be positive');
    const fresh: RingNode[] = [];
    for (const node of nodes) {
      const spec = normalize(node);
      if (this.nodesById.has(spec.id)) throw new Error(`ring: node ${spec.id} listed twice`);
      const created = this.createNode(spec.id, spec.weight);
      created.points = this.pointsFor(spec.weight);
      fresh.push(created);
    }
    this.rebuildFrom(fresh);
  }

  get size(): number {
    return this.nodesById.size;
  }

  get pointCount(): number {
    return this.positions.length;
  }

  has(id: string): boolean {
    return this.nodesById.has(id);
  }

  weightOf(id: string): number | undefined {
    return this.nodesById.get(id)?.weight;
  }

  nodes(): NodeSpec[] {
    return [...this.nodesById.values()].map((node) => ({ id: node.id, weight: node.weight }));
  }

  /** Adds a node, or sets the weight of a known one. */
  add(node: NodeSpec | string): void {
    const spec = normalize(node);
    const existing = this.nodesById.get(spec.id);
    if (existing) {
      this.setWeight(spec.id, spec.weight);
      return;
    }
    const created = this.createNode(spec.id, spec.weight);
    this.growPoints(created, this.pointsFor(spec.weight));
  }

  remove(id: string): boolean {
    const node = this.nodesById.get(id);
    if (!node) return false;
    this.keepPoints((owner) => owner !== node.slot);
    this.nodesById.delete(id);
    this.slotIds[node.slot] = undefined;
    this.slotWeights[node.slot] = 0;
    this.freeSlots.push(node.slot);
    return true;
  }

  setWeight(id: string, weight: number): void {
    const node = this.nodesById.get(id);
    if (!node) throw new Error(`ring: unknown node ${id}`);
    assertWeight(id, weight);
    node.weight = weight;
    this.slotWeights[node.slot] = weight;
    const target = this.pointsFor(weight);
    if (target > node.points) this.growPoints(node, target);
    else if (target < node.points) this.shrinkPoints(node, target);
  }

  lookup(key: string): string | undefined {
    if (this.positions.length === 0) return undefined;
    return this.slotIds[this.owners[this.indexForHash(xxh32(key))]];
  }

  replicas(key: string, count: number): string[] {
    const found: string[] = [];
    if (this.positions.length === 0) return found;
    const wanted = Math.min(count, this.ownersWithPoints());
    const stamp = this.nextStamp();
    let index = this.indexForHash(xxh32(key));
    for (let step = 0; step < this.positions.length && found.length < wanted; step += 1) {
      const owner = this.owners[index];
      if (this.seenStamps[owner] !== stamp) {
        this.seenStamps[owner] = stamp;
        found.push(this.slotIds[owner] as string);
      }
      index = this.nextIndex(index);
    }
    return found;
  }

  /** Share of the 32-bit hash space each node owns: its expected share of keys. */
  shares(): Map<string, number> {
    return arcShares(this.positions, this.owners, (slot) => this.slotIds[slot] as string);
  }

  // Low-level access for structures layered on the ring (bounded loads): they walk points
  // clockwise from a key and deal in slots, small integers standing for nodes.

  /** Index of the first point at or after a 32-bit position, wrapping to 0. */
  indexForHash(hash: number): number {
    const bucket = hash >>> INDEX_SHIFT;
    const end = this.bucketStarts[bucket + 1];
    let low = this.bucketStarts[bucket];
    let high = end;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.positions[middle] < hash) low = middle + 1;
      else high = middle;
    }
    return low === this.positions.length ? 0 : low;
  }

  nextIndex(index: number): number {
    return index + 1 === this.positions.length ? 0 : index + 1;
  }

  ownerSlotAt(index: number): number {
    return this.owners[index];
  }

  /** Upper bound (exclusive) of slot numbers, for sizing per-slot arrays. */
  get slotCapacity(): number {
    return this.slotIds.length;
  }

  idOfSlot(slot: number): string | undefined {
    return this.slotIds[slot];
  }

  weightOfSlot(slot: number): number {
    return this.slotWeights[slot] ?? 0;
  }

  slotOf(id: string): number | undefined {
    return this.nodesById.get(id)?.slot;
  }

  private ownersWithPoints(): number {
    let count = 0;
    for (const node of this.nodesById.values()) if (node.points > 0) count += 1;
    return count;
  }

  private nextStamp(): number {
    if (this.seenStamps.length < this.slotIds.length) this.seenStamps = new Uint32Array(this.slotIds.length * 2);
    this.stamp = (this.stamp + 1) >>> 0;
    if (this.stamp === 0) {
      this.seenStamps.fill(0);
      this.stamp = 1;
    }
    return this.stamp;
  }

  private pointsFor(weight: number): number {
    return Math.round(weight * this.pointsPerWeight);
  }

  private createNode(id: string, weight: number): RingNode {
    assertWeight(id, weight);
    const slot = this.freeSlots.pop() ?? this.slotIds.length;
    this.slotIds[slot] = id;
    this.slotWeights[slot] = weight;
    const node: RingNode = { id, slot, weight, points: 0, idHashLow: xxh32(id), idHashHigh: xxh32(id, ID_SEED_HIGH) };
    this.nodesById.set(id, node);
    return node;
  }

  /** Builds the whole ring from scratch (construction): one sort instead of many merges. */
  private rebuildFrom(nodes: RingNode[]): void {
    const total = nodes.reduce((sum, node) => sum + node.points, 0);
    const positions = new Uint32Array(total);
    const owners = new Uint32Array(total);
    let next = 0;
    for (const node of nodes) {
      for (let point = 0; point < node.points; point += 1) {
        positions[next] = pointPosition(node, point);
        owners[next] = node.slot;
        next += 1;
      }
    }
    this.sortPoints(positions, owners);
    this.positions = positions;
    this.owners = owners;
    this.rebuildIndex();
  }

  private growPoints(node: RingNode, target: number): void {
    const positions = new Uint32Array(target - node.points);
    for (let point = node.points; point < target; point += 1) positions[point - node.points] = pointPosition(node, point);
    node.points = target;
    // All new points have one owner, so position order is the whole order among them.
    positions.sort();
    this.mergeIn(positions, new Uint32Array(positions.length).fill(node.slot));
  }

  private shrinkPoints(node: RingNode, target: number): void {
    // Drop the node's points numbered target..points-1; count positions, since a node's own
    // points may (rarely) coincide, and any one copy of an equal pair is as good as the other.
    const dropping = new Map<number, number>();
    for (let point = target; point < node.points; point += 1) {
      const position = pointPosition(node, point);
      dropping.set(position, (dropping.get(position) ?? 0) + 1);
    }
    node.points = target;
    this.keepPoints((owner, position) => {
      if (owner !== node.slot) return true;
      const pending = dropping.get(position);
      if (pending === undefined || pending === 0) return true;
      dropping.set(position, pending - 1);
      return false;
    });
  }

  private keepPoints(keep: (owner: number, position: number) => boolean): void {
    // keep() may be stateful (shrinkPoints counts down), so it is asked once per point.
    const kept = new Uint8Array(this.positions.length);
    let keptCount = 0;
    for (let index = 0; index < this.positions.length; index += 1) {
      if (keep(this.owners[index], this.positions[index])) {
        kept[index] = 1;
        keptCount += 1;
      }
    }
    const positions = new Uint32Array(keptCount);
    const owners = new Uint32Array(keptCount);
    let next = 0;
    for (let index = 0; index < this.positions.length; index += 1) {
      if (kept[index] === 0) continue;
      positions[next] = this.positions[index];
      owners[next] = this.owners[index];
      next += 1;
    }
    this.positions = positions;
    this.owners = owners;
    this.rebuildIndex();
  }

  /** Merges sorted new points (all of one node) into the sorted ring. */
  private mergeIn(newPositions: Uint32Array, newOwners: Uint32Array): void {
    const oldCount = this.positions.length;
    const total = oldCount + newPositions.length;
    const positions = new Uint32Array(total);
    const owners = new Uint32Array(total);
    let oldIndex = 0;
    let newIndex = 0;
    for (let out = 0; out < total; out += 1) {
      const takeOld =
        newIndex >= newPositions.length ||
        (oldIndex < oldCount && this.comesBefore(this.positions[oldIndex], this.owners[oldIndex], newPositions[newIndex], newOwners[newIndex]));
      if (takeOld) {
        positions[out] = this.positions[oldIndex];
        owners[out] = this.owners[oldIndex];
        oldIndex += 1;
      } else {
        positions[out] = newPositions[newIndex];
        owners[out] = newOwners[newIndex];
        newIndex += 1;
      }
    }
    this.positions = positions;
    this.owners = owners;
    this.rebuildIndex();
  }

  private comesBefore(leftPosition: number, leftOwner: number, rightPosition: number, rightOwner: number): boolean {
    if (leftPosition !== rightPosition) return leftPosition < rightPosition;
    return this.compareSlots(leftOwner, rightOwner) <= 0;
  }

  private compareSlots(left: number, right: number): number {
    if (left === right) return 0;
    const leftId = this.slotIds[left] as string;
    const rightId = this.slotIds[right] as string;
    return leftId < rightId ? -1 : leftId > rightId ? 1 : 0;
  }

  /** Sorts points in place by (position, owner id). */
  private sortPoints(positions: Uint32Array, owners: Uint32Array): void {
    const count = positions.length;
    const idRank = this.slotRanksById();
    if (count < 2 ** 21 && idRank.length < 2 ** 21) {
      // position · 2^21 + (rank of the owner's id) is an exact double below 2^53, and a numeric
      // typed-array sort of it is several times faster than a comparator sort.
      const keyed = new Float64Array(count);
      for (let index = 0; index < count; index += 1) keyed[index] = positions[index] * 2097152 + idRank[owners[index]];
      keyed.sort();
      const slotByRank = new Uint32Array(idRank.length);
      idRank.forEach((rank, slot) => (slotByRank[rank] = slot));
      for (let index = 0; index < count; index += 1) {
        positions[index] = Math.floor(keyed[index] / 2097152);
        owners[index] = slotByRank[keyed[index] % 2097152];
      }
      return;
    }
    const order = Uint32Array.from({ length: count }, (_, index) => index);
    order.sort((left, right) => positions[left] - positions[right] || idRank[owners[left]] - idRank[owners[right]]);
    const sortedPositions = Uint32Array.from(order, (index) => positions[index]);
    const sortedOwners = Uint32Array.from(order, (index) => owners[index]);
    positions.set(sortedPositions);
    owners.set(sortedOwners);
  }

  private slotRanksById(): Uint32Array {
    const ranks = new Uint32Array(this.slotIds.length);
    const live = [...this.nodesById.values()].sort((left, right) => (left.id < right.id ? -1 : left.id > right.id ? 1 : 0));
    live.forEach((node, rank) => (ranks[node.slot] = rank));
    return ranks;
  }

  private rebuildIndex(): void {
    const count = this.positions.length;
    let point = 0;
    for (let bucket = 0; bucket < 1 << INDEX_BITS; bucket += 1) {
      while (point < count && this.positions[point] >>> INDEX_SHIFT < bucket) point += 1;
      this.bucketStarts[bucket] = point;
    }
    this.bucketStarts[1 << INDEX_BITS] = count;
  }
}

/** Each owner's total arc (from the previous point, exclusive, to its point) over 2^32. */
export function arcShares(positions: Uint32Array, owners: Uint32Array, idOf: (owner: number) => string): Map<string, number> {
  const shares = new Map<string, number>();
  const count = positions.length;
  for (let index = 0; index < count; index += 1) {
    const previous = index === 0 ? positions[count - 1] - 4294967296 : positions[index - 1];
    const id = idOf(owners[index]);
    shares.set(id, (shares.get(id) ?? 0) + (positions[index] - previous) / 4294967296);
  }
  return shares;
}

function normalize(node: NodeSpec | string): { id: string; weight: number } {
  if (typeof node === 'string') return { id: node, weight: 1 };
  return { id: node.id, weight: node.weight ?? 1 };
}

function assertWeight(id: string, weight: number): void {
  if (!(weight >= 0) || !Number.isFinite(weight)) throw new RangeError(`ring: node ${id} needs a finite weight ≥ 0`);
}
