// Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016): a lookup table of prime size M where each node owns ⌊M/n⌋ or ⌈M/n⌉
// entries; a key's node is table[hash(key) mod M]. Lookups are one hash and one array read.
//
// Population follows the paper: node i has a permutation of 0..M-1 given by
// offset_i = h1(i) mod M and skip_i = h2(i) mod (M-1) + 1 (M prime makes every skip coprime
// with M), and nodes take turns claiming their next preferred entry that is still free until the
// table is full. Weights, which the paper leaves out, change how often a node takes its turn:
// in round r a node of weight w claims floor(r·w/wMax) − floor((r−1)·w/wMax) entries, so the
// heaviest node claims one per round and the others proportionally fewer.
//
// Nodes take turns in id order, so the table depends only on the node set. A change rebuilds
// the table (lazily, at the next lookup); Maglev moves a little more than the ideal share on a
// change, in exchange for that near-perfect balance. The paper recommends M > 100·n.

import { xxh32 } from './hash.js';
import type { ConsistentHash, NodeSpec } from './ring.js';

export interface MaglevOptions {
  /** Table size, a prime (default 65537). Keep it above 100 × the node count. */
  readonly tableSize?: number;
}

export const DEFAULT_MAGLEV_TABLE_SIZE = 65537;
const OFFSET_SEED = 0x1b873593;
const SKIP_SEED = 0xcc9e2d51;

export function isPrime(value: number): boolean {
  if (!Number.isInteger(value) || value < 2) return false;
  if (value % 2 === 0) return value === 2;
  for (let divisor = 3; divisor * divisor <= value; divisor += 2) if (value % divisor === 0) return false;
  return true;
}

/** The smallest prime ≥ value. */
export function nextPrime(value: number): number {
  let candidate = Math.max(2, Math.ceil(value));
  while (!isPrime(candidate)) candidate += 1;
  return candidate;
}

export class Maglev implements ConsistentHash {
  readonly tableSize: number;
  private readonly weights = new Map<string, number>();
  private ids: string[] = [];
  private table: Uint16Array | Uint32Array = new Uint16Array(0);
  private dirty = true;

  constructor(nodes: Iterable<NodeSpec | string> = [], options: MaglevOptions = {}) {
    this.tableSize = options.tableSize ?? DEFAULT_MAGLEV_TABLE_SIZE;
    if (!isPrime(this.tableSize)) throw new RangeError(`maglev: table size ${this.tableSize} is not a prime`);
    for (const node of nodes) this.add(node);
  }

  get size(): number {
    return this.weights.size;
  }

  /** Adds a node, or sets the weight of a known one. */
  add(node: NodeSpec | string): void {
    const id = typeof node === 'string' ? node : node.id;
    const weight = typeof node === 'string' ? 1 : (node.weight ?? 1);
    if (!(weight >= 0) || !Number.isFinite(weight)) throw new RangeError(`maglev: node ${id} needs a finite weight ≥ 0`);
    this.weights.set(id, weight);
    this.dirty = true;
  }

  remove(id: string): boolean {
    const removed = this.weights.delete(id);
    if (removed) this.dirty = true;
    return removed;
  }

  lookup(key: string): string | undefined {
    if (this.dirty) this.populate();
    if (this.ids.length === 0) return undefined;
    return this.ids[this.table[xxh32(key) % this.tableSize]];
  }

  /**
   * Distinct nodes for a key: its own entry, then the nodes of the entries that follow it.
   * Entries are interleaved pseudo-randomly, so this spreads replicas, but unlike a ring the
   * later choices are not themselves stable when nodes change.
   */
  replicas(key: string, count: number): string[] {
    if (this.dirty) this.populate();
    const wanted = Math.min(count, this.ids.length);
    const found: string[] = [];
    const seen = new Uint8Array(this.ids.length);
    let entry = xxh32(key) % this.tableSize;
    for (let step = 0; step < this.tableSize && found.length < wanted; step += 1) {
      const owner = this.table[entry];
      if (seen[owner] === 0) {
        seen[owner] = 1;
        found.push(this.ids[owner]);
      }
      entry = entry + 1 === this.tableSize ? 0 : entry + 1;
    }
    return found;
  }

  /** How many table entries each node owns, by id (for tests and measurements). */
  entryCounts(): Map<string, number> {
    if (this.dirty) this.populate();
    const counts = new Map(this.ids.map((id) => [id, 0]));
    for (const owner of this.table) counts.set(this.ids[owner], (counts.get(this.ids[owner]) ?? 0) + 1);
    return counts;
  }

  private populate(): void {
    this.dirty = false;
    const size = this.tableSize;
    this.ids = [...this.weights.entries()]
      .filter(([, weight]) => weight > 0)
      .map(([id]) => id)
      .sort((left, right) => (left < right ? -1 : left > right ? 1 : 0));
    const count = this.ids.length;
    this.table = count <= 0xffff ? new Uint16Array(size) : new Uint32Array(size);
    if (count === 0) return;
    if (count > size) throw new RangeError(`maglev: ${count} nodes do not fit a table of ${size} entries`);

    const weights = this.ids.map((id) => this.weights.get(id) as number);
    const heaviest = Math.max(...weights);
    const cursor = new Float64Array(count);
    const skip = new Float64Array(count);
    for (let node = 0; node < count; node += 1) {
      cursor[node] = xxh32(this.ids[node], OFFSET_SEED) % size;
      skip[node] = (xxh32(this.ids[node], SKIP_SEED) % (size - 1)) + 1;
    }
    const claimed = new Uint8Array(size);
    let filled = 0;
    for (let round = 1; filled < size; round += 1) {
      for (let node = 0; node < count && filled < size; node += 1) {
        const turns = Math.floor((round * weights[node]) / heaviest) - Math.floor(((round - 1) * weights[node]) / heaviest);
        for (let turn = 0; turn < turns && filled < size; turn += 1) {
          let entry = cursor[node];
          while (claimed[entry] === 1) {
            entry += skip[node];
            if (entry >= size) entry -= size;
          }
          claimed[entry] = 1;
          this.table[entry] = node;
          filled += 1;
          entry += skip[node];
          cursor[node] = entry >= size ? entry - size : entry;
        }
      }
    }
  }
}
