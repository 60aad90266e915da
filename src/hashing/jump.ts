// Jump consistent hash (Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm",
// 2014): no memory, about ln(n) steps, and as balanced as the key hash is uniform.
//
// The algorithm works on a 64-bit key with 64-bit wrap-around arithmetic. BigInt would make
// every lookup allocate, so the key is held as two unsigned 32-bit halves and the LCG step
// key·2862933555777941757 + 1 (mod 2^64) is done with 16-bit partial products, which doubles
// hold exactly. The bucket step uses the same double operations in the same order as the C++
// reference, so results match it bit for bit (the tests check the published vectors).
//
// Buckets are numbered 0..n-1 and only the last can go away without remapping others:
// JumpHash.remove() of any other node moves the last node into the freed bucket, which moves
// the removed node's keys (as it must) and also the last node's keys (about 1/n more).

import { xxh32, xxh32Pair } from './hash.js';
import type { ConsistentHash, NodeSpec } from './ring.js';

// 2862933555777941757 = 0x27BB2EE6_87B0B0FD, split for 32×32 → 64-bit products.
const MULTIPLIER_HIGH = 0x27bb2ee6;
const MULTIPLIER_LOW = 0x87b0b0fd;
const MULTIPLIER_LOW_LOW = MULTIPLIER_LOW & 0xffff;
const MULTIPLIER_LOW_HIGH = MULTIPLIER_LOW >>> 16;
const TWO_POW_32 = 4294967296;
const TWO_POW_31 = 2147483648;
const HIGH_WORD_SEED = 0x68e31da4;

/**
 * Jump consistent hash of the 64-bit key `keyHigh·2^32 + keyLow` over `buckets` buckets.
 * Both halves are read as unsigned 32-bit values.
 */
export function jumpBucket(keyHigh: number, keyLow: number, buckets: number): number {
  let high = keyHigh >>> 0;
  let low = keyLow >>> 0;
  let bucket = -1;
  let next = 0;
  while (next < buckets) {
    bucket = next;
    // low·M_low as an exact 64-bit product from 16-bit pieces.
    const lowLow = low & 0xffff;
    const lowHigh = low >>> 16;
    const middle = lowLow * MULTIPLIER_LOW_HIGH + lowHigh * MULTIPLIER_LOW_LOW; // < 2^33
    // `& 0xffff` reads the low 16 bits of a double below 2^53 exactly (ToInt32 keeps them).
    const bottom = lowLow * MULTIPLIER_LOW_LOW + (middle & 0xffff) * 65536 + 1; // + 1: the LCG increment
    const carry = bottom >= TWO_POW_32 ? 1 : 0;
    const productHigh =
      lowHigh * MULTIPLIER_LOW_HIGH + Math.floor(middle / 65536) + carry + Math.imul(high, MULTIPLIER_LOW) + Math.imul(low, MULTIPLIER_HIGH);
    low = bottom >>> 0;
    high = productHigh >>> 0;
    // C++: j = (b + 1) * (double(1LL << 31) / double((key >> 33) + 1));
    next = Math.floor((bucket + 1) * (TWO_POW_31 / ((high >>> 1) + 1)));
  }
  return bucket;
}

/**
 * The 64-bit jump key for a string: XXH32 of the key as the low half, and the high half mixed
 * from it. Only 32 bits are independent, which is all the balance needs (each lookup draws its
 * randomness from the LCG sequence seeded by the key) and saves a second pass over the string.
 */
export function jumpKeyHalves(key: string): { high: number; low: number } {
  const low = xxh32(key);
  return { high: xxh32Pair(low, low, HIGH_WORD_SEED), low };
}

export class JumpHash implements ConsistentHash {
  private ids: string[] = [];
  private readonly bucketById = new Map<string, number>();

  constructor(nodes: Iterable<NodeSpec | string> = []) {
    for (const node of nodes) this.add(node);
  }

  get size(): number {
    return this.ids.length;
  }

  /** Nodes in bucket order: the last one is the one removable without extra movement. */
  nodes(): readonly string[] {
    return this.ids;
  }

  add(node: NodeSpec | string): void {
    const id = typeof node === 'string' ? node : node.id;
    if (typeof node !== 'string' && node.weight !== undefined && node.weight !== 1) {
      throw new RangeError('jump: nodes cannot be weighted (use WeightedRing, RendezvousHash or Maglev)');
    }
    if (this.bucketById.has(id)) return;
    this.bucketById.set(id, this.ids.length);
    this.ids.push(id);
  }

  /** Removes a node; any node but the last also relocates the last into its bucket. */
  remove(id: string): boolean {
    const bucket = this.bucketById.get(id);
    if (bucket === undefined) return false;
    const last = this.ids.pop() as string;
    this.bucketById.delete(id);
    if (last !== id) {
      this.ids[bucket] = last;
      this.bucketById.set(last, bucket);
    }
    return true;
  }

  lookup(key: string): string | undefined {
    if (this.ids.length === 0) return undefined;
    const low = xxh32(key);
    return this.ids[jumpBucket(xxh32Pair(low, low, HIGH_WORD_SEED), low, this.ids.length)];
  }

  /**
   * Distinct nodes for a key: the first is lookup(key); the others come from jumping the key
   * re-hashed with the attempt number, skipping nodes already chosen, and after a bounded number
   * of attempts from the buckets that follow.
   */
  replicas(key: string, count: number): string[] {
    const bucketCount = this.ids.length;
    const wanted = Math.min(count, bucketCount);
    const found: string[] = [];
    if (wanted === 0) return found;
    const chosen = new Uint8Array(bucketCount);
    const low = xxh32(key);
    const high = xxh32Pair(low, low, HIGH_WORD_SEED);
    const take = (bucket: number): void => {
      if (chosen[bucket] === 1) return;
      chosen[bucket] = 1;
      found.push(this.ids[bucket]);
    };
    take(jumpBucket(high, low, bucketCount));
    const attemptLimit = 4 * wanted + 16;
    for (let attempt = 1; attempt < attemptLimit && found.length < wanted; attempt += 1) {
      take(jumpBucket(xxh32Pair(high, attempt, low), xxh32Pair(low, attempt, high), bucketCount));
    }
    for (let bucket = 0; found.length < wanted; bucket += 1) take(bucket);
    return found;
  }
}
