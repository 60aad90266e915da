// tandem/hashing: consistent hashing for routing keys to nodes.
//
// - WeightedRing: virtual nodes and weights; a change moves only the keys it must.
// - KetamaRing: placements identical to libketama / libmemcached / npm hashring.
// - JumpHash: Lamping–Veach jump consistent hash (no memory, unweighted, append/remove-last).
// - RendezvousHash: weighted highest-random-weight hashing, O(n) per lookup.
// - Maglev: prime-sized lookup table, near-perfect balance, O(1) lookups.
// - BoundedLoadRing: a ring with a load cap of ⌈(1+ε)·mean⌉ per node.
// All but BoundedLoadRing implement ConsistentHash: lookup(key) and replicas(key, n).

export { xxh32, xxh32Bytes, xxh32Pair } from './hash.js';
export { md5Words } from './md5.js';
export { WeightedRing, lowerBound, type ConsistentHash, type NodeSpec, type RingOptions } from './ring.js';
export { KetamaRing, ketamaHash, ketamaHashCount, type KetamaArithmetic, type KetamaOptions } from './ketama.js';
export { JumpHash, jumpBucket, jumpKeyHalves } from './jump.js';
export { RendezvousHash } from './rendezvous.js';
export { Maglev, DEFAULT_MAGLEV_TABLE_SIZE, isPrime, nextPrime, type MaglevOptions } from './maglev.js';
export { BoundedLoadRing, type BoundedLoadOptions } from './bounded.js';
