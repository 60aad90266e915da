// The lock service under simulation: the real LockService shell and manager on a simulated
// store (latency, writes that fail unapplied, writes that fail after applying, loads that
// fail), crashes and restarts of the service at any moment, and clients that take, renew and
// release exclusive, shared and semaphore leases, with and without sessions, and retry after
// 503 with the same lease id. Checked as it runs:
// - exclusion as the clients believe it (a client holds from its grant answer until the
//   deadline it was told or until it sends its release) and as the store holds it (no grant
//   is written beside a live incompatible lease);
// - fencing: a grant answered after an incompatible one carries a larger token; the store
//   never writes a new lease with a token it has seen;
// - nothing acknowledged is lost: a grant, renewal, release or session answer is in the store
//   when the client reads it;
// - nothing stuck: once faults stop, every request is answered and every lease ends.
import { LockService, type AcquireInput, type LockTimers, type Outcome } from '../../src/locks/service.js';
import type { LockStore, LockWrite } from '../../src/locks/store.js';
import type { Lease, LockMode, Session, Snapshot } from '../../src/locks/manager.js';
import { seededPrng, type Prng } from '../support/prng.js';
import { SimWorld } from './world.js';

export interface LockSimOptions {
  /** Off shows what the store contract's fail-stop rule prevents. */
  failStop: boolean;
}

export interface LockSimReport {
  violations: string[];
  stats: { events: number; grants: number; crashes: number; writeFailures: number; loadFailures: number; answers503: number };
}

const limits = { lockWaitersPerLockMax: 20, lockLeasesMax: 100, lockSessionsMax: 20 };
const semaphorePermits = 2;
const faultyPhaseMs = 4000;
const healMs = 3000;

/** What the store really holds, shared by every incarnation of the service. */
class SimLockStore {
  readonly leases = new Map<string, Lease>();
  readonly sessions = new Map<string, Session>();
  lastToken = 0;
  /** Every token a lease was ever written with. */
  private readonly tokensSeen = new Set<number>();
  faulty = true;
  failed: unknown = null;
  private tailMs = 0;

  constructor(
    private readonly world: SimWorld,
    private readonly prng: Prng,
    private readonly options: LockSimOptions,
    private readonly violations: string[],
    readonly stats: LockSimReport['stats'],
  ) {}

  /** The completion time of a write issued now: in order after the ones before it. */
  nextCompletionMs(): number {
    this.tailMs = Math.max(this.tailMs, this.world.nowMs + this.prng.int(0, 4));
    return this.tailMs;
  }

  complete(writes: LockWrite[]): unknown {
    if (this.options.failStop && this.failed !== null) return this.failed;
    const roll = this.faulty ? this.prng.next() : 1;
    if (roll < 0.03) {
      this.stats.writeFailures += 1;
      this.failed = new Error('sim: write failed, nothing applied');
      return this.failed;
    }
    this.apply(writes);
    if (roll < 0.05) {
      this.stats.writeFailures += 1;
      this.failed = new Error('sim: write applied, then the connection broke');
      return this.failed;
    }
    return null;
  }

  load(): Snapshot | Error {
    if (this.faulty && this.prng.chance(0.1)) {
      this.stats.loadFailures += 1;
      return new Error('sim: load failed');
    }
    this.failed = null;
    return { leases: [...this.leases.values()], sessions: [...this.sessions.values()], lastToken: this.lastToken };
  }

  private apply(writes: LockWrite[]): void {
    for (const write of writes) {
      switch (write.type) {
        case 'putLease':
          this.putLease(write.lease);
          break;
        case 'deleteLease':
          this.leases.delete(write.leaseId);
          break;
        case 'putSession':
          this.sessions.set(write.session.sessionId, write.session);
          break;
        case 'deleteSession':
          this.sessions.delete(write.sessionId);
          break;
      }
    }
  }

  private putLease(lease: Lease): void {
    const isNew = !this.leases.has(lease.leaseId);
    if (isNew) {
      if (this.tokensSeen.has(lease.token)) this.violations.push(`store: token ${lease.token} written twice (lease ${lease.leaseId})`);
      this.checkDurableExclusion(lease);
    }
    this.tokensSeen.add(lease.token);
    this.leases.set(lease.leaseId, lease);
    this.lastToken = Math.max(this.lastToken, lease.token);
  }

  /** No grant is written beside a live lease it does not fit with. */
  private checkDurableExclusion(lease: Lease): void {
    const live = [...this.leases.values()].filter((other) => other.name === lease.name && this.deadlineOf(other) > lease.grantedAtMs);
    if (!fitsBeside(lease.mode, live.map((other) => other.mode))) {
      this.violations.push(
        `store: ${lease.mode} lease ${lease.leaseId} (token ${lease.token}) written on "${lease.name}" at ${lease.grantedAtMs} beside live ${live.map((other) => `${other.mode} ${other.leaseId} until ${this.deadlineOf(other)}`).join(', ')}`,
      );
    }
  }

  private deadlineOf(lease: Lease): number {
    if (lease.expiresAtMs !== null) return lease.expiresAtMs;
    return this.sessions.get(lease.sessionId!)?.expiresAtMs ?? lease.grantedAtMs;
  }
}

function fitsBeside(mode: LockMode, others: LockMode[]): boolean {
  if (mode === 'semaphore') return others.length < semaphorePermits;
  if (mode === 'exclusive') return others.length === 0;
  return others.every((other) => other === 'shared');
}

/**
 * One incarnation's view of the store. A crash kills it: nothing it asks for afterwards
 * happens, and writes it had in flight land or not, as they would on a real disk.
 */
class IncarnationStore implements LockStore {
  alive = true;
  private last: Promise<void> = Promise.resolve();

  constructor(
    private readonly world: SimWorld,
    private readonly shared: SimLockStore,
  ) {}

  load(): Promise<Snapshot> {
    return new Promise((resolve, reject) => {
      this.world.schedule(1, () => {
        if (!this.alive) return;
        const result = this.shared.load();
        if (result instanceof Error) reject(result);
        else resolve(result);
      });
    });
  }

  write(writes: LockWrite[]): Promise<void> {
    const atMs = this.shared.nextCompletionMs();
    const done = new Promise<void>((resolve, reject) => {
      this.world.schedule(atMs - this.world.nowMs, () => {
        const failure = this.shared.complete(writes);
        if (!this.alive) return;
        if (failure === null) resolve();
        else reject(failure);
      });
    });
    done.catch(() => undefined);
    this.last = done;
    return done;
  }

  settled(): Promise<void> {
    return this.last;
  }

  async close(): Promise<void> {
    this.alive = false;
  }
}

interface Belief {
  client: number;
  name: string;
  mode: LockMode;
  leaseId: string;
  token: number;
  fromMs: number;
  untilMs: number;
  sessionId: string | null;
  releasedAtMs: number | null;
}

type Lost = { kind: 'lost' };

class Simulation {
  readonly world = new SimWorld();
  readonly prng: Prng;
  readonly violations: string[] = [];
  readonly stats: LockSimReport['stats'] = { events: 0, grants: 0, crashes: 0, writeFailures: 0, loadFailures: 0, answers503: 0 };
  readonly store: SimLockStore;
  private service: LockService | null = null;
  private incarnation: IncarnationStore | null = null;
  private incarnationAlive = { alive: false };
  /** Client requests in flight, so that a crash can tell them their connection broke. */
  private readonly inFlight = new Set<(outcome: Lost) => void>();
  private readonly beliefs: Belief[] = [];
  private readonly sessionUntil = new Map<string, number>();
  crashes = true;

  constructor(seed: number, options: LockSimOptions) {
    this.prng = seededPrng(seed);
    this.store = new SimLockStore(this.world, this.prng, options, this.violations, this.stats);
  }

  async start(): Promise<void> {
    for (let attempt = 0; this.service === null && attempt < 50; attempt++) {
      const alive = { alive: true };
      const store = new IncarnationStore(this.world, this.store);
      const timers: LockTimers = {
        setTimeout: (callback, delayMs) => this.world.schedule(delayMs, () => alive.alive && callback()),
        clearTimeout: (handle) => this.world.cancel(handle),
      };
      try {
        this.service = await LockService.open({ store, limits, clock: () => this.world.nowMs, timers });
        this.incarnation = store;
        this.incarnationAlive = alive;
      } catch {
        alive.alive = false;
        store.alive = false;
        await this.sleep(20);
      }
    }
    if (this.service === null) this.violations.push('the service never reopened');
  }

  crash(): void {
    if (!this.service) return;
    this.stats.crashes += 1;
    this.incarnationAlive.alive = false;
    this.incarnation!.alive = false;
    this.service = null;
    for (const tell of [...this.inFlight]) tell({ kind: 'lost' });
    this.inFlight.clear();
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.world.schedule(ms, resolve));
  }

  /** A request as a client sees it: an answer, or a broken connection. */
  ask(call: (service: LockService) => Promise<Outcome>): Promise<Outcome | Lost> {
    const service = this.service;
    if (!service) return this.sleep(5).then(() => ({ kind: 'lost' }) as Lost);
    return new Promise((resolve) => {
      let answered = false;
      const tell = (outcome: Outcome | Lost) => {
        if (answered) return;
        answered = true;
        this.inFlight.delete(tell);
        if (outcome.kind === 'unavailable') this.stats.answers503 += 1;
        resolve(outcome);
      };
      this.inFlight.add(tell);
      void call(service).then(tell);
    });
  }

  // ---- checks on answers ----

  granted(client: number, input: AcquireInput & { leaseId: string }, outcome: Extract<Outcome, { kind: 'granted' }>): Belief {
    const nowMs = this.world.nowMs;
    const { lease } = outcome;
    this.checkDurable(`grant of ${lease.leaseId}`, this.store.leases.get(lease.leaseId)?.token === lease.token);
    const known = this.beliefs.find((belief) => belief.leaseId === lease.leaseId);
    const untilMs = nowMs + outcome.ttlRemainingMs;
    if (known) {
      known.untilMs = Math.max(known.untilMs, untilMs);
      return known;
    }
    this.stats.grants += 1;
    const belief: Belief = { client, name: input.name, mode: input.mode, leaseId: lease.leaseId, token: lease.token, fromMs: nowMs, untilMs, sessionId: input.sessionId, releasedAtMs: null };
    const others = this.beliefs.filter((other) => other.name === belief.name && other.leaseId !== belief.leaseId);
    const live = others.filter((other) => this.endOf(other) > nowMs);
    if (!fitsBeside(belief.mode, live.map((other) => other.mode))) {
      this.violations.push(
        `client ${client} granted ${belief.mode} "${belief.name}" (token ${belief.token}) at ${nowMs} while ${live.map((other) => `client ${other.client} believes it holds ${other.mode} token ${other.token} until ${this.endOf(other)}`).join('; ')}`,
      );
    }
    for (const other of others) {
      const mustOrder = other.mode === 'exclusive' || belief.mode === 'exclusive';
      if (mustOrder && other.token >= belief.token) {
        this.violations.push(`fencing: ${belief.mode} "${belief.name}" granted at ${nowMs} with token ${belief.token}, after ${other.mode} token ${other.token} granted at ${other.fromMs}`);
      }
    }
    this.beliefs.push(belief);
    return belief;
  }

  endOf(belief: Belief): number {
    const untilMs = belief.sessionId !== null ? Math.max(belief.untilMs, this.sessionUntil.get(belief.sessionId) ?? 0) : belief.untilMs;
    return belief.releasedAtMs !== null ? Math.min(untilMs, belief.releasedAtMs) : untilMs;
  }

  checkDurable(what: string, holds: boolean): void {
    if (!holds) this.violations.push(`acknowledged but not in the store: ${what} at ${this.world.nowMs}`);
  }

  sessionAnswered(sessionId: string, outcome: Extract<Outcome, { kind: 'session' }>): void {
    const stored = this.store.sessions.get(sessionId);
    const untilMs = this.world.nowMs + outcome.ttlRemainingMs;
    this.checkDurable(`session ${sessionId}`, stored !== undefined && stored.expiresAtMs >= untilMs);
    this.sessionUntil.set(sessionId, Math.max(this.sessionUntil.get(sessionId) ?? 0, untilMs));
  }

  // ---- clients ----

  async client(id: number, endMs: number): Promise<void> {
    let sessionId: string | null = null;
    let attempt = 0;
    while (this.world.nowMs < endMs) {
      await this.sleep(this.prng.int(0, 40));
      if (this.prng.chance(0.3) && sessionId === null) sessionId = await this.openSession(id, attempt++);
      const name = this.prng.pick(['rw-a', 'rw-b', 'sem']);
      const mode: LockMode = name === 'sem' ? 'semaphore' : this.prng.chance(0.5) ? 'exclusive' : 'shared';
      const useSession = sessionId !== null && this.prng.chance(0.5);
      const input = {
        name,
        mode,
        permits: mode === 'semaphore' ? semaphorePermits : 1,
        ttlMs: useSession ? null : this.prng.int(30, 300),
        sessionId: useSession ? sessionId : null,
        owner: `client-${id}`,
        fair: this.prng.chance(0.5),
        waitMs: this.prng.chance(0.3) ? 0 : this.prng.int(10, 400),
        leaseId: `c${id}-${attempt++}`,
      };
      const belief = await this.acquire(id, input);
      if (belief) await this.hold(id, belief, sessionId);
      if (sessionId !== null && this.prng.chance(0.2)) sessionId = await this.closeSession(sessionId);
      else if (sessionId !== null) await this.keepalive(sessionId);
    }
  }

  private async acquire(id: number, input: AcquireInput & { leaseId: string }): Promise<Belief | null> {
    // Retrying after 503 or a broken connection with the same lease id is the safe retry.
    for (let tries = 0; tries < 3; tries++) {
      const outcome = await this.ask((service) => service.acquire(input));
      if (outcome.kind === 'granted') return this.granted(id, input, outcome);
      if (outcome.kind !== 'unavailable' && outcome.kind !== 'lost' && outcome.kind !== 'expired-before-answer') return null;
      await this.sleep(this.prng.int(5, 50));
    }
    return null;
  }

  private async hold(id: number, belief: Belief, sessionId: string | null): Promise<void> {
    for (let step = this.prng.int(0, 3); step > 0; step--) {
      await this.sleep(this.prng.int(5, 120));
      if (this.endOf(belief) <= this.world.nowMs) return;
      if (belief.sessionId !== null && sessionId !== null) {
        await this.keepalive(sessionId);
        continue;
      }
      const outcome = await this.ask((service) => service.renew(belief.name, belief.leaseId, null));
      if (outcome.kind === 'renewed') {
        const untilMs = this.world.nowMs + outcome.ttlRemainingMs;
        this.checkDurable(`renewal of ${belief.leaseId}`, (this.store.leases.get(belief.leaseId)?.expiresAtMs ?? -1) >= untilMs);
        belief.untilMs = Math.max(belief.untilMs, untilMs);
      }
    }
    // From here on the client no longer acts as the holder, whatever the answer.
    belief.releasedAtMs = this.world.nowMs;
    const outcome = await this.ask((service) => service.release(belief.name, belief.leaseId));
    if (outcome.kind === 'released') this.checkDurable(`release of ${belief.leaseId}`, !this.store.leases.has(belief.leaseId));
    void id;
  }

  private async openSession(id: number, attempt: number): Promise<string | null> {
    const sessionId = `s${id}-${attempt}`;
    const outcome = await this.ask((service) => service.openSession(this.prng.int(100, 400), `client-${id}`, sessionId));
    if (outcome.kind !== 'session') return null;
    this.sessionAnswered(sessionId, outcome);
    return sessionId;
  }

  private async keepalive(sessionId: string): Promise<void> {
    const outcome = await this.ask((service) => service.keepalive(sessionId));
    if (outcome.kind === 'session') this.sessionAnswered(sessionId, outcome);
  }

  private async closeSession(sessionId: string): Promise<null> {
    for (const belief of this.beliefs) if (belief.sessionId === sessionId && belief.releasedAtMs === null) belief.releasedAtMs = this.world.nowMs;
    await this.ask((service) => service.closeSession(sessionId));
    return null;
  }

  // ---- faults ----

  async crasher(endMs: number): Promise<void> {
    // Some runs never crash, so that a service that cannot get out of recovery by itself shows.
    const gapMsMax = this.prng.pick([1500, 4000, 0]);
    while (gapMsMax > 0 && this.world.nowMs < endMs) {
      await this.sleep(Math.min(this.prng.int(200, gapMsMax), endMs - this.world.nowMs));
      if (this.world.nowMs >= endMs) return;
      if (!this.crashes) return;
      this.crash();
      await this.sleep(this.prng.int(0, 100));
      await this.start();
    }
  }

  /** Runs virtual time until the promise settles (or nothing is left to run). */
  private async drive(work: Promise<void>, eventsMax: number): Promise<boolean> {
    let settled = false;
    void work.then(() => (settled = true));
    await this.world.runUntil(() => settled, Number.POSITIVE_INFINITY, eventsMax);
    return settled;
  }

  async run(): Promise<LockSimReport> {
    if (!(await this.drive(this.start(), 10_000))) this.violations.push('the service never opened');
    const endMs = this.world.nowMs + faultyPhaseMs;
    const clientsDone = Array.from({ length: 5 }, (_, id) => this.client(id, endMs));
    const crasherDone = this.crasher(endMs);
    let finished = 0;
    for (const done of [...clientsDone, crasherDone]) void done.then(() => (finished += 1));
    await this.world.runUntil(() => finished === clientsDone.length + 1, endMs + healMs, 200_000);
    if (finished < clientsDone.length + 1) this.violations.push(`stuck: ${clientsDone.length + 1 - finished} of the clients and the crasher never finished`);
    // Heal: no more faults; every lease and session must end on its own.
    this.store.faulty = false;
    this.crashes = false;
    if (!this.service && !(await this.drive(this.start(), 10_000))) this.violations.push('the service never reopened after healing');
    await this.world.runUntil(() => this.store.leases.size === 0 && this.store.sessions.size === 0, this.world.nowMs + healMs, 50_000);
    if (this.store.leases.size > 0 || this.store.sessions.size > 0) {
      this.violations.push(`stuck: ${this.store.leases.size} leases and ${this.store.sessions.size} sessions still in the store after healing`);
    }
    const counts = this.service?.counts();
    if (counts && (counts.leases > 0 || counts.waiters > 0)) this.violations.push(`stuck: the service still shows ${JSON.stringify(counts)}`);
    this.stats.events = this.world.eventsRun;
    await this.service?.close();
    return { violations: this.violations, stats: this.stats };
  }
}

export function runLockSimulation(seed: number, options: LockSimOptions = { failStop: true }): Promise<LockSimReport> {
  return new Simulation(seed, options).run();
}
