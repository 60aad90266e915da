// A deterministic simulation of the whole engine: several Engine instances (the real code) on
// one simulated store, simulated participants, per-instance clocks with skew and jumps,
// crashes and restarts at any moment, clients that time out and retry, in all six modes.
// After a phase with faults, the faults stop and the world runs until everything has ended;
// then every invariant is checked. One seed replays exactly.
import { Engine, type EngineLimits, GidTakenError } from '../../src/tx/engine.js';
import { StoreClock } from '../../src/tx/store-clock.js';
import type { NewTx } from '../../src/tx/machine.js';
import { newOp } from '../../src/tx/machine.js';
import { opsOfMode } from '../../src/server/tx-request.js';
import type { Branch, Mode, Tx, TxOptions } from '../../src/tx/types.js';
import { isFinal, modes } from '../../src/tx/types.js';
import { seededPrng, type Prng } from '../support/prng.js';
import { SimParticipants, noParticipantFaults } from './participants.js';
import { SimStore, noStoreFaults, type SimNode } from './store.js';
import { SimWorld } from './world.js';

export interface SimOptions {
  nodes: number;
  transactions: number;
  /** Virtual time during which faults and crashes happen. */
  faultPhaseMs: number;
  /** Virtual time allowed after the faults stop for everything to end. */
  healPhaseMsMax: number;
  eventsMax: number;
  /** Largest host clock skew between instances, in ms. */
  clockSkewMsMax: number;
  crashes: boolean;
}

export const defaultSimOptions: SimOptions = {
  nodes: 3,
  transactions: 8,
  faultPhaseMs: 3000,
  healPhaseMsMax: 120_000,
  eventsMax: 400_000,
  clockSkewMsMax: 15_000,
  crashes: true,
};

export interface SimReport {
  seed: number;
  violations: string[];
  stats: { events: number; crashes: number; ended: Record<string, number>; staleCalls: number; virtualMs: number };
}

const limits: EngineLimits = {
  activeTransactionsMax: 1000,
  recoveryIntervalMs: 100,
  resultWaitersMax: 10,
  recoveryBatchMax: 50,
  leaseMs: 300,
  failoverAttemptsMax: 1,
  heartbeatIntervalMs: 100,
  instanceTtlMs: 500,
  // Longer than any client retries a create, so no gid is reused; batches small enough that
  // several coordinators purge side by side.
  finishedRetentionMs: 5000,
  purgeBatchMax: 3,
  purgeIntervalMs: 400,
};

const autoCommitAfterMs = 250;

interface SimInstance {
  node: SimNode;
  engine: Engine;
  /** Host wall clock minus true time: skew plus jumps. */
  wallOffsetMs: number;
  /** Host monotonic clock minus true time. */
  monotonicOffsetMs: number;
}

interface ClientRecord {
  gid: string;
  mode: Mode;
  acknowledged: boolean;
  finished: boolean;
  /** When the client first sent its create (virtual ms): a message's hold starts no earlier. */
  firstCreateSentAtMs?: number;
}

export async function runEngineSimulation(seed: number, options: SimOptions = defaultSimOptions): Promise<SimReport> {
  const prng = seededPrng(seed);
  const world = new SimWorld();
  const store = new SimStore(world, prng, limits.finishedRetentionMs);
  const participants = new SimParticipants(world, prng, autoCommitAfterMs);
  const violations: string[] = [];
  const errors: string[] = [];
  const instances: SimInstance[] = [];
  let crashes = 0;
  let faultsOn = true;

  const startInstance = (slot: number, node: SimNode, wallOffsetMs: number): SimInstance => {
    const monotonicOffsetMs = prng.int(-1000, 1000);
    const instance: SimInstance = { node, engine: undefined as unknown as Engine, wallOffsetMs, monotonicOffsetMs };
    const nodeStore = store.forNode(node);
    const incarnation = node.incarnation;
    const alive = () => node.alive && node.incarnation === incarnation;
    instance.engine = new Engine({
      store: nodeStore,
      instanceId: `${node.id}.${incarnation}`,
      caller: participants.callerFor(node),
      limits,
      clock: new StoreClock(() => nodeStore.clockMs(), {
        monotonicMs: () => world.nowMs + instance.monotonicOffsetMs,
        wallMs: () => world.nowMs + instance.wallOffsetMs,
      }),
      timers: {
        setTimeout: (callback, delayMs) => world.schedule(delayMs, () => alive() && callback()),
        clearTimeout: (handle) => world.cancel(handle),
      },
      random: () => prng.next(),
      onError: (error) => {
        const message = error instanceof Error ? error.message : String(error);
        if (message.startsWith('invariant violated')) violations.push(`engine on ${node.id}: ${message}`);
        else errors.push(message);
      },
    });
    instances[slot] = instance;
    void instance.engine.start().catch((error: unknown) => errors.push(String(error)));
    return instance;
  };

  for (let slot = 0; slot < options.nodes; slot++) {
    startInstance(slot, { id: `n${slot}`, incarnation: 0, alive: true }, prng.int(-options.clockSkewMsMax, options.clockSkewMsMax));
  }

  const liveInstance = (): SimInstance | undefined => {
    const live = instances.filter((instance) => instance.node.alive);
    return live.length > 0 ? prng.pick(live) : undefined;
  };

  // Crashes, restarts and clock jumps during the fault phase.
  const chaos = () => {
    if (!faultsOn) return;
    const slot = prng.int(0, options.nodes - 1);
    const instance = instances[slot];
    const roll = prng.next();
    if (options.crashes && roll < 0.5 && instance.node.alive) {
      instance.node.alive = false;
      crashes += 1;
      world.schedule(prng.int(10, 400), () => {
        const node = { id: instance.node.id, incarnation: instance.node.incarnation + 1, alive: true };
        startInstance(slot, node, instance.wallOffsetMs);
      });
    } else if (roll < 0.7) {
      // The wall clock jumps (NTP step, a VM resumed); the monotonic clock does not.
      instance.wallOffsetMs += prng.int(-5000, 5000);
    }
    world.schedule(prng.int(50, 600), chaos);
  };
  world.schedule(prng.int(50, 600), chaos);
  store.faults = { failBefore: 0.03, unknownOutcome: 0.03, latencyMsMax: 4 };
  participants.faults = { transient: 0.15, slow: 0.05, duplicate: 0.1 };

  const clients: ClientRecord[] = [];
  for (let index = 0; index < options.transactions; index++) {
    const mode = prng.pick(modes);
    const record: ClientRecord = { gid: `s${seed}-t${index}-${mode}`, mode, acknowledged: false, finished: false };
    clients.push(record);
    world.schedule(prng.int(0, options.faultPhaseMs / 2), () => {
      void runClient(record).finally(() => (record.finished = true));
    });
  }

  /** Races an engine call against the client's own timeout (the instance may have died). */
  const withTimeout = <T>(work: Promise<T>, timeoutMs: number): Promise<T | 'timeout'> =>
    new Promise((resolve, reject) => {
      const timer = world.schedule(timeoutMs, () => resolve('timeout'));
      work.then(
        (value) => {
          world.cancel(timer);
          resolve(value);
        },
        (error: unknown) => {
          world.cancel(timer);
          reject(error);
        },
      );
    });
  const pause = (ms: number) => new Promise<void>((resolve) => world.schedule(ms, resolve));

  async function create(record: ClientRecord, spec: NewTx, submit: boolean): Promise<boolean> {
    record.firstCreateSentAtMs = world.nowMs;
    for (let attempt = 0; attempt < 6; attempt++) {
      const instance = liveInstance();
      if (!instance) {
        await pause(50);
        continue;
      }
      try {
        const result = await withTimeout(instance.engine.create(spec, { submit, waitForRound: false }), 500);
        if (result !== 'timeout') {
          record.acknowledged = true;
          return true;
        }
      } catch (error) {
        if (error instanceof GidTakenError) {
          violations.push(`${spec.gid}: a retry of the same create was refused as a taken gid`);
          return false;
        }
      }
      await pause(prng.int(10, 100));
    }
    return false;
  }

  /** Sends an event; true once an instance accepted it. */
  async function apply(gid: string, event: Parameters<Engine['apply']>[1]): Promise<boolean> {
    for (let attempt = 0; attempt < 6; attempt++) {
      const instance = liveInstance();
      if (instance) {
        try {
          const result = await withTimeout(instance.engine.apply(gid, event, { waitForRound: false }), 500);
          if (result !== 'timeout') return result.kind === 'ok';
        } catch {
          // Busy, a version conflict or a store failure: try again.
        }
      }
      await pause(prng.int(10, 100));
    }
    return false;
  }

  async function runClient(record: ClientRecord): Promise<void> {
    const branchCount = prng.int(1, 3);
    const branches = makeBranches(record.mode, branchCount, prng);
    for (const branch of branches) if (prng.chance(0.15)) participants.refusing.add(`${record.gid}/${branch.branchId}`);
    const registers = record.mode === 'tcc' || record.mode === 'xa';
    const spec: NewTx = {
      gid: record.gid,
      mode: record.mode,
      branches: registers ? [] : branches,
      options: txOptions(record.mode, prng),
      ...(record.mode === 'msg' ? { queryPreparedUrl: 'http://app.sim/queryPrepared' } : {}),
    };
    const startsAtOnce = record.mode === 'saga' || record.mode === '2pc' || record.mode === '3pc';
    if (record.mode === 'msg') {
      // The local transaction commits or rolls back a little after the message is prepared.
      participants.apps.set(record.gid, { decidedAtMs: world.nowMs + prng.int(0, 300), committed: prng.chance(0.7) });
    }
    if (!(await create(record, spec, startsAtOnce))) return;
    if (startsAtOnce) return;
    const vanishes = prng.chance(0.15);
    if (record.mode === 'msg') {
      const app = participants.apps.get(record.gid)!;
      await pause(Math.max(0, app.decidedAtMs - world.nowMs));
      if (vanishes) return;
      await apply(record.gid, app.committed ? { type: 'submit' } : { type: 'abort', reason: 'local transaction rolled back' });
      return;
    }
    let allTried = true;
    for (const branch of branches) {
      if (!(await apply(record.gid, { type: 'register', branch, branchCountMax: 10 }))) {
        allTried = false;
        break;
      }
      if (vanishes && prng.chance(0.3)) return;
      if (participants.appForward(record.gid, branch.branchId) !== 'success') {
        allTried = false;
        break;
      }
    }
    if (vanishes) return;
    await apply(record.gid, allTried ? { type: 'submit' } : { type: 'abort', reason: 'a first phase failed' });
  }

  // Fault phase, then heal: faults off, every instance up, run until all ended.
  await world.runUntil(() => false, world.nowMs + options.faultPhaseMs, options.eventsMax);
  faultsOn = false;
  store.faults = noStoreFaults;
  participants.faults = noParticipantFaults;
  const allEnded = () => clients.every((record) => record.finished && (!store.stored(record.gid) || isFinal(store.stored(record.gid)!)));
  // Restarts scheduled by the chaos still run; wait for every instance to be back.
  await world.runUntil(() => instances.every((instance) => instance.node.alive), world.nowMs + 1000, options.eventsMax);
  await world.runUntil(allEnded, world.nowMs + options.healPhaseMsMax, options.eventsMax);
  // Then the retention: every transaction ended is deleted once finishedRetentionMs has passed.
  // Waiting for that costs seconds of virtual time, so one seed in four does; every seed checks
  // that nothing is purged early, leased or recreated.
  const awaitRetention = seed % 4 === 0;
  if (awaitRetention) {
    const allPurged = () => clients.every((record) => !store.holds(record.gid));
    await world.runUntil(allPurged, world.nowMs + limits.finishedRetentionMs + 10 * limits.purgeIntervalMs, options.eventsMax);
  }

  const ended: Record<string, number> = {};
  for (const record of clients) {
    const tx = store.stored(record.gid);
    if (record.acknowledged && !tx) violations.push(`${record.gid}: acknowledged, then lost`);
    if (!tx) continue;
    if (!isFinal(tx)) {
      violations.push(`${record.gid}: stuck in ${tx.status}/${tx.phase}`);
      continue;
    }
    ended[`${tx.mode}:${tx.status}`] = (ended[`${tx.mode}:${tx.status}`] ?? 0) + 1;
    if (awaitRetention && !store.wasPurged(record.gid)) violations.push(`${record.gid}: ${tx.status} at ${tx.updatedAtMs}, still kept at ${world.nowMs} (finishedRetentionMs ${limits.finishedRetentionMs})`);
    violations.push(...checkAtomicity(tx, participants));
    violations.push(...checkSecondPhaseOrder(tx, participants));
    violations.push(...checkDelay(tx, record, participants));
  }
  violations.push(...store.violations, ...participants.violations);
  for (const instance of instances) instance.node.alive = false;
  return {
    seed,
    violations,
    stats: { events: world.eventsRun, crashes, ended, staleCalls: participants.staleCalls, virtualMs: world.nowMs - 1_000_000 },
  };
}

function txOptions(mode: Mode, prng: Prng): TxOptions {
  const deadline = mode === 'saga' ? (prng.chance(0.3) ? prng.int(300, 2000) : 0) : prng.int(300, 2000);
  return {
    timeoutToFailMs: deadline,
    requestTimeoutMs: 100,
    retryIntervalMs: 20,
    retryIntervalMsMax: 400,
    retryLimit: mode !== 'msg' && prng.chance(0.2) ? prng.int(0, 3) : null,
    branchHeaders: {},
    // TCC and XA: concurrent runs the second phase on every branch at once; else one at a time.
    concurrent: mode === 'saga' || mode === 'tcc' || mode === 'xa' ? prng.chance(0.5) : false,
    ...(mode === 'msg' && prng.chance(0.5) ? { delayMs: prng.int(1, 400) } : {}),
  };
}

/**
 * A sequential TCC or XA second phase takes effect branch by branch in its order (TCC: the last
 * registered first; XA: registration order): a branch is called only after the one before it
 * acknowledged, so even stale coordinators and late or duplicated calls cannot reorder the
 * first effects.
 */
function checkSecondPhaseOrder(tx: Tx, participants: SimParticipants): string[] {
  if ((tx.mode !== 'tcc' && tx.mode !== 'xa') || tx.options.concurrent) return [];
  const registered = tx.branches.map((branch) => branch.branchId);
  const expected = tx.mode === 'tcc' ? [...registered].reverse() : registered;
  const seen = participants.secondPhaseOrder.get(tx.gid) ?? [];
  return seen.join(',') === expected.join(',') ? [] : [`${tx.gid} (${tx.mode} ${tx.status}): second phase took effect in order ${seen.join(',')}, expected ${expected.join(',')}`];
}

/** Clock error allowed between the engine's shared clock and virtual time (store latency is at most a few ms). */
const clockToleranceMs = 50;

/** A message with a delay delivers nothing before the hold, which starts at the submit (or the prepare) at the earliest. */
function checkDelay(tx: Tx, record: ClientRecord, participants: SimParticipants): string[] {
  const delayMs = tx.options.delayMs ?? 0;
  const deliveredAtMs = participants.firstDeliveryAtMs.get(tx.gid);
  if (tx.mode !== 'msg' || delayMs === 0 || deliveredAtMs === undefined || record.firstCreateSentAtMs === undefined) return [];
  const earliestMs = record.firstCreateSentAtMs + delayMs - clockToleranceMs;
  return deliveredAtMs >= earliestMs ? [] : [`${tx.gid}: a step was delivered ${earliestMs - deliveredAtMs + clockToleranceMs} ms before its delay of ${delayMs} ms had passed`];
}

function makeBranches(mode: Mode, count: number, prng: Prng): Branch[] {
  const branches: Branch[] = [];
  for (let index = 0; index < count; index++) {
    const branchId = String(index + 1).padStart(2, '0');
    const ops: Branch['ops'] = {};
    for (const op of opsOfMode[mode]) ops[op] = newOp(`http://p${index}.sim/${op}`);
    const sequential = mode === 'saga' && index > 0;
    branches.push({ branchId, ops, payload: '{}', ...(sequential && prng.chance(0.7) ? { dependsOn: [branches[index - 1].branchId] } : {}) });
  }
  return branches;
}

/** All committed or all undone, per mode, as the participants saw it. */
function checkAtomicity(tx: Tx, participants: SimParticipants): string[] {
  const problems: string[] = [];
  const succeeded = tx.status === 'succeeded';
  for (const branch of tx.branches) {
    const state = participants.stateOf(tx.gid, branch.branchId);
    const where = `${tx.gid}/${branch.branchId} (${tx.mode} ${tx.status})`;
    switch (tx.mode) {
      case 'saga':
        if (succeeded && (!state.forward || state.undone)) problems.push(`${where}: saga succeeded but the action is not in effect`);
        if (!succeeded && state.forward && !state.undone) problems.push(`${where}: saga failed but the action was not compensated`);
        break;
      case 'msg':
        if (succeeded && !state.forward) problems.push(`${where}: message succeeded but a step was not delivered`);
        if (!succeeded && state.forward) problems.push(`${where}: message failed but a step was delivered`);
        break;
      default:
        if (succeeded && !state.committed) problems.push(`${where}: committed transaction, branch not committed`);
        if (succeeded && state.undone) problems.push(`${where}: committed transaction, branch undone`);
        if (!succeeded && state.committed) problems.push(`${where}: rolled back transaction, branch committed${state.autoCommitted ? ' on its own after preCommit' : ''}`);
        if (!succeeded && state.forward && !state.undone) problems.push(`${where}: rolled back transaction, first phase not undone`);
    }
  }
  if (tx.mode === 'msg') {
    const app = participants.apps.get(tx.gid);
    if (app && succeeded !== app.committed) problems.push(`${tx.gid}: message ${tx.status} but the local transaction ${app.committed ? 'committed' : 'rolled back'}`);
  }
  return problems;
}
