// Locks on ZooKeeper, for users who already run it: an exclusive mutex, a fair read-write lock
// (the holder of the write lock may also take the read lock) and a counting semaphore, all on
// ephemeral sequential znodes, and the same HeldLock as the other backends (signal, 'lost',
// fencing token, release, using()).
//
// A lock is a parent znode; each acquire creates one ephemeral sequential child and reads the
// children once; zookeeper-recipes.ts decides from that listing whether the child holds the
// lock and which few nodes it must watch (never the parent's children: a release wakes only
// the waiters it lets in). A watched node that is already gone when the watch is set (it
// vanished between the listing and the watch) means "look again at once".
//
// A child lives as long as its session: it is deleted when the holder releases or when
// ZooKeeper expires the session. So "the lock is ours" is "our session lives", which the
// client can only bound from below: the server expires a session no sooner than the session
// timeout after it last heard from the client, and it heard from us no sooner than we sent a
// request it answered. A lease therefore counts as surely held until
// sent-time-of-last-answered-request + timeout·(1 − driftFactor); renew() (and keepAlive(),
// which using() turns on) refreshes that bound with one round trip that also checks the node
// is still there and still ours. A disconnection is not a loss: the library reconnects with
// the same session and re-registers watches, and as long as the session lives the lock is
// kept. When the server says the session expired, every lease of it is lost at once
// ('session-lost') and the next acquire opens a new session.
//
// Fencing token: the czxid of the lock's znode (the parent) plus our child's sequence number,
// both from the listing the acquire makes anyway (see tokenOf). Zxids are one total order over
// every write in the ensemble, (epoch, counter) with the epoch raised by each new leader; the
// sequence alone would start again at 0 when the parent is recreated. Holders are granted in
// creation order (FIFO), so each exclusive grant carries a larger token than every grant before
// it. docs/locks.md has the argument.
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import zookeeper from 'node-zookeeper-client';
import type { Client, Event as ZkEvent, Stat } from 'node-zookeeper-client';
import { HeldLockBase, LockBusyError, LockLostError, using, type HeldLock, type LockLostReason, type RenewResult, type UsingContext } from './locks.js';
import { decide, holdersOf, nodePrefix, queueOf, zxidNumber, type NodeKind } from './zookeeper-recipes.js';

const { CreateMode, Exception } = zookeeper;

export interface ZooKeeperLockOptions {
  /** "host:port[,host:port…][/chroot]", e.g. "127.0.0.1:2181". */
  connectionString: string;
  /** Parent of every lock's znode (default '/tandem/locks'); created when missing. */
  rootPath?: string;
  /** Session timeout asked for (default 10 000); the server clamps it to [2, 20] × its tickTime. */
  sessionTimeoutMs?: number;
  /** Share of the session timeout assumed lost to clock-rate differences (default 0.01). */
  driftFactor?: number;
  /** Longest wait for a session to be established (default 10 000). */
  connectTimeoutMs?: number;
  /** Longest random pause between reconnection rounds (default 1000). */
  reconnectDelayMsMax?: number;
}

export interface ZooKeeperAcquireOptions {
  /** 'exclusive' (default, the mutex and the write side) or 'shared' (the read side); pass `permits` instead for a semaphore. */
  mode?: 'exclusive' | 'shared';
  /** Makes the lock a counting semaphore of this many leases (at most permitsMax); every client must pass the same. */
  permits?: number;
  /** Longest wait; 0 fails at once when not granted. acquire() defaults to 30 s. */
  waitMs?: number;
  /** Gives up waiting when aborted (throws the signal's reason). */
  signal?: AbortSignal;
  /**
   * With mode 'shared': an exclusive lock on the same name held through this client. The read
   * lock is then granted at once and queues where the write lock stands, so it can outlive it
   * (downgrade: take the read lock, release the write lock) without a queued writer slipping in.
   */
  heldWrite?: HeldLock;
}

export interface ZooKeeperLockInspection {
  holders: Array<{ mode: ZooKeeperLockMode; sequence: number }>;
  waiters: Array<{ mode: ZooKeeperLockMode; sequence: number }>;
}

export type ZooKeeperLockMode = 'exclusive' | 'shared' | 'semaphore';

/** Limits and defaults (documented in docs/locks.md). */
export const zooKeeperLockLimits = {
  lockNameLengthMax: 256,
  permitsMax: 1000,
  /** Listings one acquire may make before it gives up (each follows a wake-up). */
  looksPerAcquireMax: 10_000,
  /** Fresh starts of one acquire after its node or session vanished. */
  restartsPerAcquireMax: 5,
} as const;

const defaultWaitMs = 30_000;
const modeOfKind: Record<NodeKind, ZooKeeperLockMode> = { w: 'exclusive', r: 'shared', s: 'semaphore' };

/** The library's error code, when `error` is one of its exceptions. */
function zkCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/**
 * The fencing token: the parent's czxid plus our child's sequence number, both read from the
 * one listing an acquire makes anyway (no extra request). Under one incarnation of the parent
 * the sequence grows with every child created. A child's sequence is the parent's cversion
 * when it was created: that many child creates and deletes, each a write with its own zxid
 * above the parent's czxid, came before it, so old czxid + sequence < the child's czxid < the
 * czxid of a parent recreated later. Zxids only grow, across leader epochs too.
 */
function tokenOf(parent: Stat, myName: string): number {
  const token = zxidNumber(parent.czxid) + Number(myName.slice(-10));
  if (!Number.isSafeInteger(token)) throw new RangeError(`fencing token ${token} does not fit a safe integer`);
  return token;
}

/** Our node or session is gone; the acquire starts again with a new node. */
class RestartAcquire extends Error {}

/** One ZooKeeper session: the library's client and the leases held in it. */
class Session {
  readonly leases = new Set<ZooKeeperLease>();
  ended = false;
  /** Resolves when the server says this session expired, or it is closed. */
  readonly endedPromise: Promise<void>;
  private markEnded!: () => void;
  id = '';

  constructor(readonly client: Client) {
    this.endedPromise = new Promise((resolve) => (this.markEnded = resolve));
  }

  end(reason: LockLostReason): void {
    if (this.ended) return;
    this.ended = true;
    this.markEnded();
    for (const lease of [...this.leases]) lease.sessionEnded(reason);
    this.leases.clear();
  }

  timeoutMs(): number {
    return this.client.getSessionTimeout();
  }

  create(path: string): Promise<string> {
    return new Promise((resolve, reject) =>
      this.client.create(path, Buffer.alloc(0), CreateMode.EPHEMERAL_SEQUENTIAL, (error, created) => (error ? reject(error) : resolve(created))),
    );
  }

  mkdirp(path: string): Promise<void> {
    return new Promise((resolve, reject) => this.client.mkdirp(path, (error) => (error ? reject(error) : resolve())));
  }

  getChildren(path: string): Promise<string[]> {
    return this.listing(path).then((listed) => listed.children);
  }

  /** The children and the parent's own stat (GET_CHILDREN2); no parent: none and null. */
  listing(path: string): Promise<{ children: string[]; parent: Stat | null }> {
    return new Promise((resolve, reject) =>
      this.client.getChildren(path, (error, children, stat) => {
        if (error && zkCode(error) === Exception.NO_NODE) resolve({ children: [], parent: null });
        else if (error) reject(error);
        else resolve({ children, parent: stat ?? null });
      }),
    );
  }

  exists(path: string, watcher?: (event: ZkEvent) => void): Promise<Stat | null> {
    return new Promise((resolve, reject) => {
      const done = (error: unknown, stat: Stat | null | undefined) => (error ? reject(error) : resolve(stat ?? null));
      if (watcher) this.client.exists(path, watcher, done);
      else this.client.exists(path, done);
    });
  }

  touch(path: string): Promise<void> {
    return new Promise((resolve, reject) => this.client.setData(path, Buffer.from('granted'), (error) => (error ? reject(error) : resolve())));
  }

  /** Deletes a node; a node already gone counts as deleted. */
  remove(path: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.client.remove(path, (error) => (error && zkCode(error) !== Exception.NO_NODE ? reject(error) : resolve())),
    );
  }
}

/** Rejects after `ms`; used to bound calls the library would queue across a long outage. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)));
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

export class ZooKeeperLockClient {
  readonly rootPath: string;
  /** Watch notifications that woke a waiter (tests use it to show a release wakes only the next one). */
  wakeups = 0;
  /** @internal Runs between a listing and setting its watches: lets a test delete a watched node in that window. */
  beforeWatch: ((nodes: readonly string[]) => Promise<void>) | null = null;
  private readonly options: Required<Omit<ZooKeeperLockOptions, 'rootPath'>>;
  private current: Session | null = null;
  private connecting: Promise<Session> | null = null;
  private closed = false;

  constructor(options: ZooKeeperLockOptions) {
    const rootPath = (options.rootPath ?? '/tandem/locks').replace(/\/+$/, '');
    if (!rootPath.startsWith('/') || rootPath.length < 2) throw new RangeError(`rootPath must be an absolute znode path, got "${options.rootPath}"`);
    this.rootPath = rootPath;
    this.options = {
      connectionString: options.connectionString,
      sessionTimeoutMs: options.sessionTimeoutMs ?? 10_000,
      driftFactor: options.driftFactor ?? 0.01,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      reconnectDelayMsMax: options.reconnectDelayMsMax ?? 1000,
    };
    checkPositiveInteger('sessionTimeoutMs', this.options.sessionTimeoutMs);
  }

  /** Acquires or throws LockBusyError when `waitMs` (default 30 s) passes first. */
  async acquire(name: string, options: ZooKeeperAcquireOptions = {}): Promise<HeldLock> {
    const semaphore = options.permits !== undefined;
    const permits = options.permits ?? 1;
    const waitMs = options.waitMs ?? defaultWaitMs;
    checkName(name);
    checkPositiveInteger('permits', permits);
    if (permits > zooKeeperLockLimits.permitsMax) throw new RangeError(`permits must be at most permitsMax (${zooKeeperLockLimits.permitsMax}), got ${permits}`);
    if (!Number.isFinite(waitMs) || waitMs < 0) throw new RangeError(`waitMs must be a non-negative number, got ${waitMs}`);
    const kind: NodeKind = semaphore ? 's' : options.mode === 'shared' ? 'r' : 'w';
    if (options.mode !== undefined && options.mode !== 'exclusive' && options.mode !== 'shared') throw new RangeError(`mode must be 'exclusive' or 'shared', got "${String(options.mode)}"`);
    let origin: ZooKeeperLease | null = null;
    if (options.heldWrite !== undefined) {
      const write = options.heldWrite;
      if (kind !== 'r' || !(write instanceof ZooKeeperLease) || write.client !== this || write.kind !== 'w' || write.name !== name) {
        throw new RangeError('heldWrite must be an exclusive lock on the same name, from this client, with mode "shared"');
      }
      if (!write.held) throw write.lostError ?? new LockLostError(name, 'not-holder');
      origin = write;
    }
    options.signal?.throwIfAborted();
    const parent = `${this.rootPath}/${semaphore ? 'semaphores' : 'locks'}/${encodeURIComponent(name)}`;
    const deadlineMs = performance.now() + waitMs;
    for (let restart = 0; ; restart++) {
      const session = origin ? origin.session : await this.session();
      try {
        return await this.attempt(session, { name, parent, kind, permits, origin, waitMs, deadlineMs, signal: options.signal });
      } catch (error) {
        const more = restart + 1 < zooKeeperLockLimits.restartsPerAcquireMax && performance.now() < deadlineMs && !origin;
        if (error instanceof RestartAcquire && more) continue;
        if (error instanceof RestartAcquire) throw new LockBusyError(name, `its node or session kept vanishing (${restart + 1} tries)`);
        if (zkCode(error) === Exception.SESSION_EXPIRED && more) continue;
        throw error;
      }
    }
  }

  async tryAcquire(name: string, options: Omit<ZooKeeperAcquireOptions, 'waitMs'> = {}): Promise<HeldLock | null> {
    try {
      return await this.acquire(name, { ...options, waitMs: 0 });
    } catch (error) {
      if (error instanceof LockBusyError) return null;
      throw error;
    }
  }

  async using<T>(name: string, options: ZooKeeperAcquireOptions, fn: (context: UsingContext) => Promise<T> | T): Promise<T> {
    return using(await this.acquire(name, options), fn);
  }

  /** Who holds and who waits, in queue order, from one listing. */
  async inspect(name: string, options: { permits?: number } = {}): Promise<ZooKeeperLockInspection> {
    checkName(name);
    const semaphore = options.permits !== undefined;
    const session = await this.session();
    const queue = queueOf(await session.getChildren(`${this.rootPath}/${semaphore ? 'semaphores' : 'locks'}/${encodeURIComponent(name)}`));
    const holders = new Set(holdersOf(queue, options.permits ?? 1));
    const entry = (node: (typeof queue)[number]) => ({ mode: modeOfKind[node.kind], sequence: node.seq });
    return { holders: queue.filter((node) => holders.has(node)).map(entry), waiters: queue.filter((node) => !holders.has(node)).map(entry) };
  }

  /** The current session's id and password (for tools and tests that need to act on it). */
  async sessionCredentials(): Promise<{ id: Buffer; password: Buffer; timeoutMs: number }> {
    const session = await this.session();
    return { id: session.client.getSessionId(), password: session.client.getSessionPassword(), timeoutMs: session.timeoutMs() };
  }

  /** Ends the session: ZooKeeper deletes its nodes, so every lock still held is released (and reported lost). */
  async close(): Promise<void> {
    this.closed = true;
    const session = this.current ?? (await this.connecting?.catch(() => null)) ?? null;
    this.current = null;
    if (!session) return;
    session.end('session-lost');
    const closedPromise = new Promise<void>((resolve) => session.client.once('disconnected', () => resolve()));
    session.client.close();
    await within(closedPromise, 2000, 'closing the ZooKeeper session').catch(() => undefined);
  }

  /** @internal performance.now() time until which a session that answered a request sent at `sentAtMs` surely lives. */
  validUntil(session: Session, sentAtMs: number): number {
    return sentAtMs + session.timeoutMs() * (1 - this.options.driftFactor) - 1;
  }

  /** The live session, opening one when there is none (or the last one expired). */
  private session(): Promise<Session> {
    if (this.closed) return Promise.reject(new Error('ZooKeeperLockClient is closed'));
    if (this.current && !this.current.ended) return Promise.resolve(this.current);
    this.connecting ??= this.open().finally(() => (this.connecting = null));
    return this.connecting;
  }

  private async open(): Promise<Session> {
    const client = zookeeper.createClient(this.options.connectionString, {
      sessionTimeout: this.options.sessionTimeoutMs,
      spinDelay: this.options.reconnectDelayMsMax,
      retries: 0,
    });
    const session = new Session(client);
    client.on('state', (state) => {
      if (state === zookeeper.State.EXPIRED) {
        session.end('session-lost');
        if (this.current === session) this.current = null;
        client.close();
      }
    });
    const connected = new Promise<void>((resolve) => client.once('connected', () => resolve()));
    client.connect();
    try {
      await within(connected, this.options.connectTimeoutMs, `connecting to ZooKeeper at ${this.options.connectionString}`);
    } catch (error) {
      client.close();
      throw error;
    }
    session.id = client.getSessionId().toString('hex');
    if (this.closed) {
      client.close();
      throw new Error('ZooKeeperLockClient is closed');
    }
    this.current = session;
    return session;
  }

  private async attempt(session: Session, request: AttemptRequest): Promise<ZooKeeperLease> {
    const { name, parent, kind, permits, origin, waitMs, deadlineMs, signal } = request;
    if (session.ended) throw new RestartAcquire();
    const guid = randomBytes(16).toString('hex');
    const myPath = await this.createNode(session, parent, `${parent}/${nodePrefix(kind, guid, origin ? origin.seq : null)}`);
    const myName = myPath.slice(parent.length + 1);
    let token = origin ? origin.token : null;
    try {
      for (let look = 0; look < zooKeeperLockLimits.looksPerAcquireMax; look++) {
        const sentAtMs = performance.now();
        let children: string[];
        try {
          const listed = await session.listing(parent);
          children = listed.children;
          // The listing holds our node, so its parent stat is of the parent our node lives in.
          if (token === null && listed.parent !== null && children.includes(myName)) token = tokenOf(listed.parent, myName);
        } catch (error) {
          // The library queues the retry until it has reconnected (same session).
          if (zkCode(error) === Exception.CONNECTION_LOSS) continue;
          throw error;
        }
        const decision = decide(queueOf(children), myName, permits);
        if (decision.kind === 'gone' || token === null) throw new RestartAcquire();
        if (decision.kind === 'granted') {
          // The waiter behind a semaphore lease watches it for this: it may now be first in line.
          if (kind === 's' && decision.successor) await session.touch(myPath).catch(() => undefined);
          if (session.ended) throw new RestartAcquire();
          const lease = new ZooKeeperLease(this, session, name, myPath, kind, Number(myName.slice(-10)), token, this.validUntil(session, sentAtMs));
          session.leases.add(lease);
          return lease;
        }
        if (waitMs === 0) throw new LockBusyError(name, 'held');
        if (performance.now() >= deadlineMs) throw new LockBusyError(name, `not granted within ${waitMs} ms`);
        if (this.beforeWatch) await this.beforeWatch(decision.watch);
        const wake = new Wake();
        let stats: Array<Stat | null>;
        try {
          stats = await Promise.all(decision.watch.map((node) => session.exists(`${parent}/${node}`, wake.fire)));
        } catch (error) {
          if (zkCode(error) === Exception.CONNECTION_LOSS) continue;
          throw error;
        }
        // Gone before the watch was set, or already granted (touched): look again now.
        if (stats.some((stat) => stat === null || (decision.promotion && stat.version > 0))) continue;
        const outcome = await wake.wait(deadlineMs - performance.now(), signal, session.endedPromise);
        if (outcome === 'woken') this.wakeups++;
        else if (outcome === 'aborted') throw signal?.reason ?? new Error('aborted');
        else if (outcome === 'ended') throw new RestartAcquire();
        // 'timeout': the next look decides (granted just now, or busy).
      }
      throw new LockBusyError(name, `looked ${zooKeeperLockLimits.looksPerAcquireMax} times without a grant`);
    } catch (error) {
      if (!session.ended) await within(session.remove(myPath), session.timeoutMs(), 'deleting a waiter node').catch(() => undefined);
      throw error;
    }
  }

  /**
   * Creates our child, making the parent when missing. After a lost connection the create may
   * or may not have happened: our guid in the name lets us find the node instead of leaving
   * an orphan that would block the queue until the session ends.
   */
  private async createNode(session: Session, parent: string, prefix: string): Promise<string> {
    const guidPrefix = prefix.slice(parent.length + 1);
    for (let tries = 0; tries < 5; tries++) {
      try {
        return await session.create(prefix);
      } catch (error) {
        const code = zkCode(error);
        if (code === Exception.NO_NODE) {
          await session.mkdirp(parent).catch((mkdirError: unknown) => {
            if (zkCode(mkdirError) !== Exception.NODE_EXISTS) throw mkdirError;
          });
          continue;
        }
        if (code !== Exception.CONNECTION_LOSS) throw error;
        const found = (await session.getChildren(parent).catch(() => [] as string[])).find((child) => child.startsWith(guidPrefix));
        if (found) return `${parent}/${found}`;
      }
    }
    throw new Error(`could not create a lock node under ${parent}`);
  }
}

interface AttemptRequest {
  name: string;
  parent: string;
  kind: NodeKind;
  permits: number;
  origin: ZooKeeperLease | null;
  waitMs: number;
  deadlineMs: number;
  signal: AbortSignal | undefined;
}

class ZooKeeperLease extends HeldLockBase {
  private lostOnce = false;

  constructor(
    readonly client: ZooKeeperLockClient,
    readonly session: Session,
    name: string,
    readonly path: string,
    readonly kind: NodeKind,
    /** The sequence suffix: the queue position reads under this (write) lock take. */
    readonly seq: number,
    token: number,
    validUntilMs: number,
  ) {
    super(name, token, validUntilMs, Math.max(10, Math.floor(session.timeoutMs() / 3)));
  }

  /** The fencing token (the lock node's czxid); the same as `token`. */
  get fencingToken(): number {
    return this.token;
  }

  get mode(): ZooKeeperLockMode {
    return modeOfKind[this.kind];
  }

  /** @internal */
  sessionEnded(reason: LockLostReason): void {
    this.markLost(reason);
  }

  protected async renewOnce(): Promise<RenewResult> {
    if (this.session.ended) throw new LockLostError(this.name, 'session-lost');
    // A connection lost mid-call is retried: the library sends it again once reconnected,
    // which is worth waiting for only as long as the lease surely lasts.
    for (let tries = 0; ; tries++) {
      const sentAtMs = performance.now();
      let stat: Stat | null;
      try {
        stat = await within(this.session.exists(this.path), Math.max(1, this.remainingMs()), `renewing lock "${this.name}"`);
      } catch (error) {
        if (zkCode(error) === Exception.SESSION_EXPIRED) throw new LockLostError(this.name, 'session-lost');
        if (zkCode(error) === Exception.CONNECTION_LOSS && tries < 5 && this.remainingMs() > 0) continue;
        throw error;
      }
      if (!stat || stat.ephemeralOwner.toString('hex') !== this.session.id) throw new LockLostError(this.name, 'not-holder');
      return { validUntilMs: this.client.validUntil(this.session, sentAtMs) };
    }
  }

  protected async releaseOnce(): Promise<void> {
    this.session.leases.delete(this);
    if (this.session.ended) return;
    // Past one session timeout without an answer the server has ended the session, node and all.
    try {
      await within(this.session.remove(this.path), this.session.timeoutMs(), `releasing lock "${this.name}"`);
    } catch (error) {
      if (zkCode(error) === Exception.SESSION_EXPIRED) return;
      throw error;
    }
  }

  /** A lease we no longer count as held must not keep blocking others while its session lives on. */
  protected override markLost(reason: LockLostReason): void {
    if (this.lostOnce) return;
    this.lostOnce = true;
    super.markLost(reason);
    void this.releaseOnce().catch(() => undefined);
  }
}

/** One wake-up: a watch firing, the deadline, an abort, or the session ending, whichever first. */
class Wake {
  private resolveWoken!: () => void;
  private readonly woken = new Promise<void>((resolve) => (this.resolveWoken = resolve));
  readonly fire = (): void => this.resolveWoken();

  wait(timeoutMs: number, signal: AbortSignal | undefined, ended: Promise<void>): Promise<'woken' | 'timeout' | 'aborted' | 'ended'> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const outcomes: Array<Promise<'woken' | 'timeout' | 'aborted' | 'ended'>> = [
      this.woken.then(() => 'woken' as const),
      ended.then(() => 'ended' as const),
      new Promise((resolve) => (timer = setTimeout(() => resolve('timeout'), Math.max(0, timeoutMs)))),
    ];
    if (signal) {
      outcomes.push(
        new Promise((resolve) => {
          onAbort = () => resolve('aborted');
          if (signal.aborted) onAbort();
          else signal.addEventListener('abort', onAbort, { once: true });
        }),
      );
    }
    return Promise.race(outcomes).finally(() => {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    });
  }
}

function checkName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > zooKeeperLockLimits.lockNameLengthMax) {
    throw new RangeError(`name must be 1 to lockNameLengthMax (${zooKeeperLockLimits.lockNameLengthMax}) characters`);
  }
}

function checkPositiveInteger(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${field} must be a positive whole number, got ${value}`);
}
