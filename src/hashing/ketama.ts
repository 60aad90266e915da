// Ketama-compatible ring: places keys exactly as libketama (last.fm's C library, also
// libmemcached's "ketama weighted" mode and python-ketama) and npm hashring do, so a TypeScript
// client can share a memcached pool with clients written against those.
//
// The rules being reproduced:
// - each server gets floor(weight / totalWeight · 40 · serverCount) hashes, MD5 of "<id>-<k>"
//   for k = 0, 1, …, and each hash gives 4 points (its four little-endian 32-bit words);
// - a key's position is the first little-endian word of MD5(key);
// - a key belongs to the first point at or after its position, wrapping to the first point.
//
// libketama computes the hash count in single precision (`float pct`, `floorf`), hashring in
// double precision; for some server sets the two differ by one hash (with 7 equal servers
// libketama gives 40 hashes each, hashring 39), so `arithmetic` picks whose placement to match.
// Because the share is relative to the total weight, any change of the server set can change
// every server's point count: this mode exists for compatibility, not for minimal movement
// (WeightedRing in ring.ts has that).
//
// Equal points from different servers (rare, but a ring of 1000 servers holds 160,000 points)
// are ordered by server order, then hash order, as hashring's stable sort leaves them.

import { md5Words } from './md5.js';
import { arcShares, lowerBound, type NodeSpec } from './ring.js';

export type KetamaArithmetic = 'libketama' | 'hashring';

export interface KetamaOptions {
  /** Whose floating-point rounding to match when counting a server's hashes (default libketama). */
  readonly arithmetic?: KetamaArithmetic;
}

const HASHES_PER_SERVER = 40;
const POINTS_PER_HASH = 4;

/** A key's position on a ketama ring: the first little-endian word of MD5(key). */
export function ketamaHash(key: string): number {
  return md5Words(key)[0];
}

/** How many MD5 hashes (of 4 points each) a server gets. */
export function ketamaHashCount(weight: number, totalWeight: number, serverCount: number, arithmetic: KetamaArithmetic): number {
  if (arithmetic === 'hashring') return Math.floor((weight / totalWeight) * HASHES_PER_SERVER * serverCount);
  // C: float pct = (float)w / (float)total; floorf(pct * 40.0 * (float)n) — the product is
  // computed in double (40.0 is a double), then narrowed to float for floorf.
  const share = Math.fround(Math.fround(weight) / Math.fround(totalWeight));
  return Math.floor(Math.fround(share * 40.0 * Math.fround(serverCount)));
}

interface KetamaServer {
  readonly id: string;
  readonly weight: number;
}

export class KetamaRing {
  private servers: KetamaServer[] = [];
  private positions = new Uint32Array(0);
  private owners = new Uint32Array(0);
  private readonly arithmetic: KetamaArithmetic;

  constructor(servers: Iterable<NodeSpec | string> = [], options: KetamaOptions = {}) {
    this.arithmetic = options.arithmetic ?? 'libketama';
    for (const server of servers) this.insert(server);
    this.rebuild();
  }

  get size(): number {
    return this.servers.length;
  }

  get pointCount(): number {
    return this.positions.length;
  }

  /** Adds a server (or changes its weight) and rebuilds the continuum, as ketama does. */
  add(server: NodeSpec | string): void {
    this.insert(server);
    this.rebuild();
  }

  remove(id: string): boolean {
    const before = this.servers.length;
    this.servers = this.servers.filter((server) => server.id !== id);
    if (this.servers.length === before) return false;
    this.rebuild();
    return true;
  }

  lookup(key: string): string | undefined {
    if (this.positions.length === 0) return undefined;
    return this.servers[this.owners[this.indexForHash(ketamaHash(key))]].id;
  }

  /** Share of the 32-bit hash space each server owns: its expected share of keys. */
  shares(): Map<string, number> {
    return arcShares(this.positions, this.owners, (owner) => this.servers[owner].id);
  }

  /** The point a position maps to (the first at or after it, wrapping); for compatibility checks. */
  pointForHash(hash: number): number | undefined {
    if (this.positions.length === 0) return undefined;
    return this.positions[this.indexForHash(hash)];
  }

  serverForHash(hash: number): string | undefined {
    if (this.positions.length === 0) return undefined;
    return this.servers[this.owners[this.indexForHash(hash)]].id;
  }

  /** The first `count` distinct servers clockwise from the key (hashring's `range`). */
  replicas(key: string, count: number): string[] {
    const found: string[] = [];
    const total = this.positions.length;
    if (total === 0) return found;
    const wanted = Math.min(count, this.servers.length);
    const seen = new Uint8Array(this.servers.length);
    let index = this.indexForHash(ketamaHash(key));
    for (let step = 0; step < total && found.length < wanted; step += 1) {
      const owner = this.owners[index];
      if (seen[owner] === 0) {
        seen[owner] = 1;
        found.push(this.servers[owner].id);
      }
      index = index + 1 === total ? 0 : index + 1;
    }
    return found;
  }

  private indexForHash(hash: number): number {
    const index = lowerBound(this.positions, this.positions.length, hash);
    return index === this.positions.length ? 0 : index;
  }

  private insert(server: NodeSpec | string): void {
    const spec = typeof server === 'string' ? { id: server, weight: 1 } : { id: server.id, weight: server.weight ?? 1 };
    if (!(spec.weight > 0) || !Number.isFinite(spec.weight)) throw new RangeError(`ketama: server ${spec.id} needs a positive weight`);
    const existing = this.servers.findIndex((candidate) => candidate.id === spec.id);
    if (existing >= 0) this.servers[existing] = spec;
    else this.servers.push(spec);
  }

  private rebuild(): void {
    const totalWeight = this.servers.reduce((sum, server) => sum + server.weight, 0);
    const hashCounts = this.servers.map((server) =>
      ketamaHashCount(server.weight, totalWeight, this.servers.length, this.arithmetic),
    );
    const pointCount = hashCounts.reduce((sum, count) => sum + count * POINTS_PER_HASH, 0);
    const rawPositions = new Uint32Array(pointCount);
    const rawOwners = new Uint32Array(pointCount);
    let next = 0;
    this.servers.forEach((server, serverIndex) => {
      for (let hashIndex = 0; hashIndex < hashCounts[serverIndex]; hashIndex += 1) {
        const words = md5Words(`${server.id}-${hashIndex}`);
        for (let word = 0; word < POINTS_PER_HASH; word += 1) {
          rawPositions[next] = words[word];
          rawOwners[next] = serverIndex;
          next += 1;
        }
      }
    });
    const order = stableOrderByValue(rawPositions);
    this.positions = new Uint32Array(pointCount);
    this.owners = new Uint32Array(pointCount);
    for (let rank = 0; rank < pointCount; rank += 1) {
      this.positions[rank] = rawPositions[order[rank]];
      this.owners[rank] = rawOwners[order[rank]];
    }
  }
}

/** Indices of `values` sorted by value, equal values in index order (a stable sort). */
function stableOrderByValue(values: Uint32Array): Uint32Array {
  const count = values.length;
  // value · 2^21 + index stays an exact double below 2^53, and a numeric typed-array sort of
  // it is several times faster than a comparator sort; larger rings take the comparator.
  if (count < 2 ** 21) {
    const keyed = new Float64Array(count);
    for (let index = 0; index < count; index += 1) keyed[index] = values[index] * 2097152 + index;
    keyed.sort();
    const order = new Uint32Array(count);
    for (let rank = 0; rank < count; rank += 1) order[rank] = keyed[rank] % 2097152;
    return order;
  }
  const order = Uint32Array.from({ length: count }, (_, index) => index);
  return order.sort((left, right) => values[left] - values[right] || left - right);
}
