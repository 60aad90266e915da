// Types for the parts of npm hashring (3.x, untyped JavaScript) that the hashing benchmark
// and tests use.
declare module 'hashring' {
  interface HashRingNode {
    value: number;
    server: string;
  }

  interface HashRingOptions {
    'vnode count'?: number;
    'max cache size'?: number;
    'default port'?: number;
    compatibility?: 'hash_ring';
    replicas?: number;
  }

  type ServerList = string | string[] | Record<string, number | { weight?: number; vnodes?: number }>;

  class HashRing {
    constructor(servers: ServerList, algorithm?: string, options?: HashRingOptions);
    /** The continuum, sorted by point value. */
    ring: HashRingNode[];
    get(key: string): string | undefined;
    range(key: string, size?: number, unique?: boolean): string[];
    add(servers: ServerList): this;
    remove(server: string): this;
    hashValue(key: string): number;
    find(hashValue: number): number;
  }

  export = HashRing;
}
