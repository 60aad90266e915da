// The pure half of the ZooKeeper locks: how a lock's child znodes are named, in what order they
// queue, and, given one listing of the children, whether a node holds the lock and which nodes
// it must watch to learn that it may. No I/O here, so every rule is testable without a server.
//
// Child names: "<kind>-<guid>-<origin>-" + the 10-digit sequence ZooKeeper appends.
//   kind    w exclusive (writer), r shared (reader), s semaphore lease
//   guid    32 hex chars chosen by the client, so it can find its own node again when the
//           answer to its create was lost with the connection
//   origin  empty, or for a read taken by the holder of the write lock, the sequence of that
//           write node: the read queues where the write stands, not at the back
// Order: by (origin, else own sequence), then own sequence. Sequence numbers come from the
// parent, in creation order, so this is arrival order (FIFO).

export type NodeKind = 'w' | 'r' | 's';

export interface LockNode {
  name: string;
  kind: NodeKind;
  guid: string;
  /** Sequence of the write node this read was taken under, or null. */
  origin: number | null;
  seq: number;
}

const nodePattern = /^([wrs])-([0-9a-f]{32})-(\d{10})?-(\d{10})$/;

export function nodePrefix(kind: NodeKind, guid: string, origin: number | null): string {
  return `${kind}-${guid}-${origin === null ? '' : String(origin).padStart(10, '0')}-`;
}

/** Null for a name this module did not make (other tools may put children there). */
export function parseNode(name: string): LockNode | null {
  const match = nodePattern.exec(name);
  if (!match) return null;
  return { name, kind: match[1] as NodeKind, guid: match[2], origin: match[3] === undefined ? null : Number(match[3]), seq: Number(match[4]) };
}

function queuePosition(node: LockNode): number {
  return node.origin ?? node.seq;
}

/** The children this module made, in queue order. */
export function queueOf(children: readonly string[]): LockNode[] {
  const nodes: LockNode[] = [];
  for (const name of children) {
    const node = parseNode(name);
    if (node) nodes.push(node);
  }
  return nodes.sort((a, b) => queuePosition(a) - queuePosition(b) || a.seq - b.seq);
}

export type Decision =
  /** Our node is not among the children: deleted, or its session ended. */
  | { kind: 'gone' }
  /** `successor`: some node queues behind ours (a semaphore lease then tells it it moved up). */
  | { kind: 'granted'; successor: boolean }
  /**
   * Wait until one of `watch` is deleted — or, with `promotion`, until its data changes (a
   * semaphore lease touches its node when granted, so the waiter behind learns it is next).
   */
  | { kind: 'wait'; watch: string[]; promotion: boolean };

/**
 * Decides for node `me` from one listing. Each waiter watches as few nodes as the rule allows,
 * so a release wakes only those it lets in (no herd):
 *   writer  holds when first in the queue; else watches the node just ahead;
 *   reader  holds when no writer is ahead (a read under a write ignores that write); else
 *           watches the nearest writer ahead, and all readers behind it are let in together;
 *   lease   holds when fewer than `permits` nodes are ahead; the first waiter watches the
 *           holders (any release lets it in), each later waiter the node just ahead, which
 *           touches its node once granted.
 */
export function decide(queue: readonly LockNode[], me: string, permits: number): Decision {
  const index = queue.findIndex((node) => node.name === me);
  if (index < 0) return { kind: 'gone' };
  const mine = queue[index];
  const successor = index < queue.length - 1;
  if (mine.kind === 'w') {
    return index === 0 ? { kind: 'granted', successor } : { kind: 'wait', watch: [queue[index - 1].name], promotion: false };
  }
  if (mine.kind === 'r') {
    for (let ahead = index - 1; ahead >= 0; ahead--) {
      const node = queue[ahead];
      if (node.kind === 'w' && node.seq !== mine.origin) return { kind: 'wait', watch: [node.name], promotion: false };
    }
    return { kind: 'granted', successor };
  }
  if (index < permits) return { kind: 'granted', successor };
  if (index === permits) return { kind: 'wait', watch: queue.slice(0, permits).map((node) => node.name), promotion: false };
  return { kind: 'wait', watch: [queue[index - 1].name], promotion: true };
}

/** The holders in a listing: what inspect() reports. */
export function holdersOf(queue: readonly LockNode[], permits: number): LockNode[] {
  return queue.filter((node) => decide(queue, node.name, permits).kind === 'granted');
}

/** A zxid (8 bytes, big-endian: epoch, counter) as a number; throws past 2^53 (epoch 2^21). */
export function zxidNumber(bytes: Buffer): number {
  const value = bytes.readBigUInt64BE(0);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`zxid ${value} does not fit a safe integer`);
  return Number(value);
}
