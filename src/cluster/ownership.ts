// Which live coordinator instance owns the recovery work of a gid: rendezvous (highest random
// weight) hashing, so when an instance joins or leaves only the gids it gains or loses move.

/** 32-bit FNV-1a over UTF-16 code units: fast on short strings and deterministic everywhere. */
function fnv1a(text: string, seed: number): number {
  let hash = (0x811c9dc5 ^ seed) >>> 0;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  // A final avalanche (murmur3's fmix32) so similar inputs spread over the whole range.
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

export class Ownership {
  private readonly seeds: number[];

  constructor(readonly instances: readonly string[]) {
    this.seeds = instances.map((instance) => fnv1a(instance, 0));
  }

  ownerOf(gid: string): string | undefined {
    let best: string | undefined;
    let bestScore = -1;
    for (let index = 0; index < this.instances.length; index++) {
      const score = fnv1a(gid, this.seeds[index]);
      if (score > bestScore || (score === bestScore && best !== undefined && this.instances[index] < best)) {
        bestScore = score;
        best = this.instances[index];
      }
    }
    return best;
  }
}
