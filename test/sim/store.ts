// A simulated store shared by several simulated coordinators: the same contract as the real
// stores (src/store/store.ts), in memory, with latency, refused writes and writes whose
// outcome is unknown (applied, but the answer is lost), on the simulation's virtual time.
import type { CommitObservation, ListPage, ListQuery, PurgeRequest, Store } from '../../src/store/store.js';
import { purgeBatchOf } from '../../src/tx/retention.js';
import { StoreUnavailableError } from '../../src/store/store.js';
import type { HistoryEntry, Tx } from '../../src/tx/types.js';
import { isFinal } from '../../src/tx/types.js';
import type { Prng } from '../support/prng.js';
import type { SimWorld } from './world.js';

export interface StoreFaults {
  /** Chance an operation fails before it is applied. */
  failBefore: number;
  /** Chance an operation is applied but its answer is lost (the caller sees an error). */
  unknownOutcome: number;
  latencyMsMax: number;
}

/** Clock estimates err by about one store round trip; more than this is a real takeover. */
const leaseToleranceMs = 50;

export const noStoreFaults: StoreFaults = { failBefore: 0, unknownOutcome: 0, latencyMsMax: 2 };

/** A node's incarnation: a crash makes it dead, so its pending answers never arrive. */
export interface SimNode {
  id: string;
  incarnation: number;
  alive: boolean;
}

interface Row {
  tx: Tx;
  history: HistoryEntry[];
}

export class SimStore {
  private readonly rows = new Map<string, Row>();
  private readonly instances = new Map<string, number>();
  /** What the retention deleted, as it was then, so the checks still see how it ended. */
  private readonly purged = new Map<string, Tx>();
  faults: StoreFaults = noStoreFaults;
  readonly violations: string[] = [];

  /** `finishedRetentionMs` is the engines' setting: a purge asking for more is a violation. */
  constructor(private readonly world: SimWorld, private readonly prng: Prng, private readonly finishedRetentionMs = 0) {}

  /** The store's view of a node: what an Engine is given. */
  forNode(node: SimNode): Store {
    const op = <T>(apply: () => T): Promise<T> => this.op(node, apply);
    return {
      insert: (tx, history) => op(() => this.insert(tx, history)),
      update: (tx, expectedVersion, history) => op(() => this.update(tx, expectedVersion, history)),
      get: (gid) => op(() => this.get(gid)),
      history: (gid) => op(() => structuredClone(this.rows.get(gid)?.history ?? [])),
      list: (_query: ListQuery): Promise<ListPage> => op(() => ({ items: [], nextCursor: null })),
      claim: (gid, owner, nowMs, untilMs) => op(() => this.claim(gid, owner, nowMs, untilMs)),
      due: (nowMs, limit, owner) => op(() => this.due(nowMs, limit, owner)),
      heartbeat: (instanceId, nowMs) => op(() => void this.instances.set(instanceId, nowMs)),
      liveInstances: (sinceMs) => op(() => [...this.instances].filter(([, atMs]) => atMs >= sinceMs).map(([id]) => id)),
      removeInstance: (instanceId) => op(() => void this.instances.delete(instanceId)),
      purgeFinished: (request) => op(() => this.purge(request)),
      onCommit: (_observer: (observation: CommitObservation) => void) => undefined,
      close: async () => undefined,
      // The store's own clock, as PostgreSQL's clock_timestamp() or Redis TIME.
      clockMs: () => op(() => this.world.nowMs),
    };
  }

  /** What is stored, or was when the retention deleted it, for the checks (a copy). */
  stored(gid: string): Tx | null {
    const row = this.rows.get(gid);
    const tx = row?.tx ?? this.purged.get(gid);
    return tx ? structuredClone(tx) : null;
  }

  /** Whether the store holds the gid now (no copy: the simulation asks after every event). */
  holds(gid: string): boolean {
    return this.rows.has(gid);
  }

  wasPurged(gid: string): boolean {
    return this.purged.has(gid) && !this.rows.has(gid);
  }

  allGids(): string[] {
    return [...this.rows.keys()];
  }

  private op<T>(node: SimNode, apply: () => T): Promise<T> {
    const incarnation = node.incarnation;
    return new Promise<T>((resolve, reject) => {
      const latencyMs = this.prng.int(0, this.faults.latencyMsMax);
      const failBefore = this.prng.chance(this.faults.failBefore);
      const unknown = this.prng.chance(this.faults.unknownOutcome);
      this.world.schedule(latencyMs, () => {
        // A crashed process sends nothing more; what it had sent may or may not have landed.
        if (!node.alive || node.incarnation !== incarnation) return;
        if (failBefore) {
          reject(new StoreUnavailableError('simulated store failure (not applied)'));
          return;
        }
        const value = apply();
        if (unknown) {
          reject(new StoreUnavailableError('simulated lost answer (applied)'));
          return;
        }
        resolve(structuredClone(value));
      });
    });
  }

  private insertRow(tx: Tx, history: HistoryEntry[]): boolean {
    if (this.rows.has(tx.gid)) return false;
    this.rows.set(tx.gid, { tx: structuredClone(tx), history: structuredClone(history) });
    return true;
  }

  private update(tx: Tx, expectedVersion: number, history: HistoryEntry[]): boolean {
    const row = this.rows.get(tx.gid);
    if (!row || row.tx.version !== expectedVersion) return false;
    if (isFinal(row.tx) && row.tx.status !== tx.status) {
      this.violations.push(`${tx.gid}: ended ${row.tx.status}, then written as ${tx.status}`);
    }
    row.tx = structuredClone(tx);
    row.history.push(...structuredClone(history));
    return true;
  }

  private get(gid: string): Tx | null {
    return this.rows.get(gid)?.tx ?? null;
  }

  private claim(gid: string, owner: string, nowMs: number, untilMs: number): Tx | null {
    const row = this.rows.get(gid);
    if (!row) return null;
    const lease = row.tx.lease;
    if (lease && lease.untilMs > nowMs && lease.owner !== owner) return null;
    // Judged on true time: the claimer's clock may say the lease expired when it has not.
    if (lease && lease.owner !== owner && lease.untilMs > this.world.nowMs + leaseToleranceMs) {
      this.violations.push(`${gid}: ${owner} took over the lease of ${lease.owner} ${lease.untilMs - this.world.nowMs} ms before it expired`);
    }
    row.tx = { ...row.tx, version: row.tx.version + 1, lease: { owner, untilMs } };
    return row.tx;
  }

  /** The pure rule decides; the checks judge the request against true time. */
  private purge(request: PurgeRequest): number {
    const batch = purgeBatchOf([...this.rows.values()].map((row) => row.tx), request);
    for (const tx of batch) {
      const finishedAgoMs = this.world.nowMs - tx.updatedAtMs;
      if (this.finishedRetentionMs === 0 || finishedAgoMs < this.finishedRetentionMs - leaseToleranceMs) {
        this.violations.push(`${tx.gid}: purged ${finishedAgoMs} ms after it finished (finishedRetentionMs ${this.finishedRetentionMs})`);
      }
      if (tx.lease && tx.lease.untilMs > this.world.nowMs + leaseToleranceMs) {
        this.violations.push(`${tx.gid}: purged while ${tx.lease.owner} held its lease`);
      }
      this.rows.delete(tx.gid);
      this.purged.set(tx.gid, tx);
    }
    return batch.length;
  }

  private insert(tx: Tx, history: HistoryEntry[]): boolean {
    if (this.purged.has(tx.gid)) this.violations.push(`${tx.gid}: created again after the retention deleted it`);
    return this.insertRow(tx, history);
  }

  private due(nowMs: number, limit: number, owner: string): string[] {
    return [...this.rows.values()]
      .map((row) => row.tx)
      .filter((tx) => !isFinal(tx) && tx.nextAttemptAtMs !== null && tx.nextAttemptAtMs <= nowMs)
      .filter((tx) => !tx.lease || tx.lease.untilMs <= nowMs || tx.lease.owner === owner)
      .sort((a, b) => (a.nextAttemptAtMs ?? 0) - (b.nextAttemptAtMs ?? 0) || (a.gid < b.gid ? -1 : 1))
      .slice(0, limit)
      .map((tx) => tx.gid);
  }
}
