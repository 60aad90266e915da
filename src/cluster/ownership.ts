// Which live coordinator instance owns the recovery work of a gid: rendezvous (highest random
// weight) hashing, so when an instance joins or leaves only the gids it gains or loses move.
import { RendezvousHash } from '../hashing/rendezvous.js';

export class Ownership {
  private readonly hash: RendezvousHash;

  constructor(instances: readonly string[]) {
    this.hash = new RendezvousHash(instances);
  }

  ownerOf(gid: string): string | undefined {
    return this.hash.lookup(gid);
  }
}
