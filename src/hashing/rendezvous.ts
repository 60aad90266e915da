// Weighted rendezvous hashing (highest random weight, Thaler & Ravishankar): a key goes to the
// node with the highest score, score = -w / ln(u) with u in (0, 1) drawn from hash(node, key).
// With that score the chance that a node wins is exactly its share of the total weight, and
// adding, removing or re-weighting a node moves only keys that node gains or loses.
//
// A lookup scores every node: O(n) per key. It is the simplest scheme with perfect movement and
// gives `replicas` for free (the next-highest scores), but past a few hundred nodes a ring,
// Maglev or jump hash is much cheaper per key.
//
// hash(node, key) is XXH32 of the pair (key hash, node hash): the key string is hashed once per
// lookup, not once per node. With all weights equal the score is monotonic in u, so the
// logarithm is skipped.

import { xxh32, xxh32Pair } from './hash.js';
import type { ConsistentHash, NodeSpec } from './ring.js';

const NODE_SEED = 0x3c6ef372;

export class RendezvousHash implements ConsistentHash {
  private ids: string[] = [];
  private nodeHashes: Int32Array = new Int32Array(0);
  private weights: Float64Array = new Float64Array(0);
  private allWeightsEqual = true;

  constructor(nodes: Iterable<NodeSpec | string> = []) {
    for (const node of nodes) this.add(node);
  }

  get size(): number {
    return this.ids.length;
  }

  /** Adds a node, or sets the weight of a known one. */
  add(node: NodeSpec | string): void {
    const id = typeof node === 'string' ? node : node.id;
    const weight = typeof node === 'string' ? 1 : (node.weight ?? 1);
    if (!(weight >= 0) || !Number.isFinite(weight)) throw new RangeError(`rendezvous: node ${id} needs a finite weight ≥ 0`);
    const index = this.ids.indexOf(id);
    if (index >= 0) {
      this.weights[index] = weight;
    } else {
      this.ids.push(id);
      this.nodeHashes = appendInt32(this.nodeHashes, xxh32(id, NODE_SEED));
      this.weights = appendFloat64(this.weights, weight);
    }
    this.refreshWeightFlag();
  }

  remove(id: string): boolean {
    const index = this.ids.indexOf(id);
    if (index < 0) return false;
    this.ids.splice(index, 1);
    this.nodeHashes = Int32Array.from(this.nodeHashes.filter((_, at) => at !== index));
    this.weights = Float64Array.from(this.weights.filter((_, at) => at !== index));
    this.refreshWeightFlag();
    return true;
  }

  lookup(key: string): string | undefined {
    const best = this.bestIndex(xxh32(key));
    return best < 0 ? undefined : this.ids[best];
  }

  /** The `count` nodes with the highest scores for the key, best first. */
  replicas(key: string, count: number): string[] {
    const keyHash = xxh32(key);
    const ranked = this.ids.map((_, index) => ({ index, score: this.score(keyHash, index) }));
    ranked.sort((left, right) => right.score - left.score || this.compareIds(left.index, right.index));
    return ranked
      .filter((entry) => this.weights[entry.index] > 0)
      .slice(0, count)
      .map((entry) => this.ids[entry.index]);
  }

  private bestIndex(keyHash: number): number {
    const count = this.ids.length;
    let best = -1;
    if (this.allWeightsEqual) {
      if (count === 0 || this.weights[0] === 0) return -1;
      let bestDraw = -1;
      for (let index = 0; index < count; index += 1) {
        const draw = xxh32Pair(keyHash, this.nodeHashes[index]);
        if (draw > bestDraw || (draw === bestDraw && this.compareIds(index, best) < 0)) {
          bestDraw = draw;
          best = index;
        }
      }
      return best;
    }
    let bestScore = 0;
    for (let index = 0; index < count; index += 1) {
      const score = this.score(keyHash, index);
      if (score > bestScore || (score === bestScore && score > 0 && this.compareIds(index, best) < 0)) {
        bestScore = score;
        best = index;
      }
    }
    return best;
  }

  /** -w / ln(u), u = (draw + 0.5) / 2^32 strictly inside (0, 1); 0 for weight 0. */
  private score(keyHash: number, index: number): number {
    const weight = this.weights[index];
    if (weight === 0) return 0;
    const unit = (xxh32Pair(keyHash, this.nodeHashes[index]) + 0.5) / 4294967296;
    return -weight / Math.log(unit);
  }

  // Equal draws (a 32-bit collision) go to the smaller id, so the winner never depends on the
  // order in which nodes were added.
  private compareIds(left: number, right: number): number {
    const leftId = this.ids[left];
    const rightId = this.ids[right];
    return leftId < rightId ? -1 : leftId > rightId ? 1 : 0;
  }

  private refreshWeightFlag(): void {
    this.allWeightsEqual = this.weights.every((weight) => weight === this.weights[0]);
  }
}

function appendInt32(values: Int32Array, value: number): Int32Array {
  const grown = new Int32Array(values.length + 1);
  grown.set(values);
  grown[values.length] = value;
  return grown;
}

function appendFloat64(values: Float64Array, value: number): Float64Array {
  const grown = new Float64Array(values.length + 1);
  grown.set(values);
  grown[values.length] = value;
  return grown;
}
