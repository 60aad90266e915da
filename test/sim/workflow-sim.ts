// A seeded simulation of workflow replay: the real SDK run (Worker.execute), the real HTTP
// routes (fastify inject, no sockets), the real service and machine, on an in-memory store and
// a virtual clock. Every worker incarnation may crash at any of its I/O points — before a
// request reaches the coordinator, after it was applied but before the answer arrived, inside
// a step before or after its effect — and the next worker takes over once the lease has run
// out. The invariants: the workflow ends; a step that is recorded as done is never run again;
// every effect (keyed by the step's idempotency key) lands once; a BusinessFailure
// compensates exactly the completed steps, each once, in reverse order.
import Fastify, { type FastifyInstance } from 'fastify';
import { limitDefaults, type Limits } from '../../src/config.js';
import type { CommitObservation, ListPage, ListQuery, Store } from '../../src/store/store.js';
import type { HistoryEntry, Tx } from '../../src/tx/types.js';
import { isFinal } from '../../src/tx/types.js';
import { WorkflowService } from '../../src/tx/workflow-service.js';
import { stepWorkflow } from '../../src/tx/workflow.js';
import { registerWorkflowApi, taskView } from '../../src/server/workflow-api.js';
import { problemOfError, sendProblem } from '../../src/server/problem.js';
import { BusinessFailure, Worker, WorkflowClient, type StepContext, type WorkflowView } from '../../src/sdk/workflow.js';
import { TandemApiError } from '../../src/sdk/client.js';
import { seededPrng, type Prng } from '../support/prng.js';

/** The store contract's part the workflow service uses, in memory. */
class MemoryStore implements Store {
  readonly rows = new Map<string, { tx: Tx; history: HistoryEntry[] }>();
  async insert(tx: Tx, history: HistoryEntry[]): Promise<boolean> {
    if (this.rows.has(tx.gid)) return false;
    this.rows.set(tx.gid, { tx: structuredClone(tx), history: [...history] });
    return true;
  }
  async update(tx: Tx, expectedVersion: number, history: HistoryEntry[]): Promise<boolean> {
    const row = this.rows.get(tx.gid);
    if (!row || row.tx.version !== expectedVersion) return false;
    this.rows.set(tx.gid, { tx: structuredClone(tx), history: [...row.history, ...history] });
    return true;
  }
  async get(gid: string): Promise<Tx | null> {
    const row = this.rows.get(gid);
    return row ? structuredClone(row.tx) : null;
  }
  async history(gid: string): Promise<HistoryEntry[]> {
    return this.rows.get(gid)?.history ?? [];
  }
  async list(_query: ListQuery): Promise<ListPage> {
    return { items: [], nextCursor: null };
  }
  async claim(): Promise<Tx | null> {
    throw new Error('not used by the workflow simulation');
  }
  async due(): Promise<string[]> {
    return [];
  }
  async heartbeat(): Promise<void> {}
  async liveInstances(): Promise<string[]> {
    return [];
  }
  async removeInstance(): Promise<void> {}
  async clockMs(): Promise<number> {
    return 0;
  }
  async purgeFinished(): Promise<number> {
    return 0;
  }
  onCommit(_observer: (observation: CommitObservation) => void): void {}
  async close(): Promise<void> {}
}

class Crash extends Error {
  constructor() {
    super('simulated crash');
    this.name = 'Crash';
  }
}

/** One worker process: alive until its crash point, dead (every I/O fails) after. */
class Incarnation {
  private events = 0;
  dead = false;
  constructor(readonly crashAt: number | null, readonly crashAfter: boolean) {}
  /**
   * Counts one I/O point: 'alive'; 'dies-after' (this I/O happens, then the process dies);
   * 'dead' (it dies before this I/O, or died earlier).
   */
  tick(): 'alive' | 'dies-after' | 'dead' {
    if (this.dead) return 'dead';
    this.events += 1;
    if (this.crashAt === null || this.events < this.crashAt) return 'alive';
    this.dead = true;
    return this.crashAfter ? 'dies-after' : 'dead';
  }
}

/** The SDK client, speaking to the in-process routes, dying with its incarnation. */
class SimClient extends WorkflowClient {
  constructor(private readonly app: FastifyInstance, private readonly life: Incarnation | null) {
    super({ url: 'http://sim' });
  }
  override async call<T>(method: 'GET' | 'POST', path: string, body: unknown): Promise<T> {
    const fate = this.life?.tick() ?? 'alive';
    if (fate === 'dead') throw new Crash();
    const response = await this.app.inject({ method, url: path, ...(body === undefined ? {} : { payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } }) });
    // Dying after the request was applied: the answer is lost.
    if (fate === 'dies-after') throw new Crash();
    if (response.statusCode >= 300) {
      let problem: TandemApiError['problem'] = response.body;
      try {
        problem = JSON.parse(response.body) as TandemApiError['problem'];
      } catch {
        // keep the text
      }
      throw new TandemApiError(response.statusCode, problem);
    }
    return (response.body.length > 0 ? JSON.parse(response.body) : undefined) as T;
  }
}

export interface WorkflowSimReport {
  seed: number;
  violations: string[];
  stats: { incarnations: number; crashes: number; stepRuns: number; status: string };
}

interface Plan {
  steps: number;
  /** Index of the step that throws a BusinessFailure, or -1. */
  refusedAt: number;
  /** Steps whose first attempt throws a transient error. */
  flaky: Set<number>;
  /** Steps with a compensation. */
  compensated: Set<number>;
}

function planOf(prng: Prng): Plan {
  const steps = prng.int(2, 5);
  const flaky = new Set<number>();
  const compensated = new Set<number>();
  for (let i = 0; i < steps; i++) {
    if (prng.chance(0.3)) flaky.add(i);
    if (prng.chance(0.7)) compensated.add(i);
  }
  return { steps, refusedAt: prng.chance(0.4) ? prng.int(0, steps - 1) : -1, flaky, compensated };
}

const simLimits: Limits = { ...limitDefaults, workflowLeaseMs: 60_000 };
/** Crashing incarnations before one is let run to the end. */
const crashingIncarnationsMax = 12;

/**
 * One coordinator for all seeds (building the routes costs more than a seed's run): each seed
 * has its own workflow id, violation list and clock reading.
 */
interface SimWorld {
  app: FastifyInstance;
  store: MemoryStore;
  service: WorkflowService;
  clock: { nowMs: number };
  unexpected: string[];
}

let world: Promise<SimWorld> | null = null;

function worldOnce(): Promise<SimWorld> {
  world ??= (async () => {
    const clock = { nowMs: 1_000_000 };
    const unexpected: string[] = [];
    const store = new MemoryStore();
    const service = new WorkflowService({
      store,
      limits: simLimits,
      nowMs: () => clock.nowMs,
      defaults: { timeoutToFailMs: 0, requestTimeoutMs: 3000, retryIntervalMs: 1000, retryIntervalMsMax: 10_000, retryLimit: null, branchHeaders: {}, concurrent: false },
    });
    const app = Fastify();
    app.setErrorHandler((error, _request, reply) => {
      const known = problemOfError(error);
      if (known) return sendProblem(reply, known.problem);
      unexpected.push(`a route failed unexpectedly: ${String(error)}`);
      return reply.code(500).send(String(error));
    });
    registerWorkflowApi(app, { workflows: service, store, limits: simLimits });
    await app.ready();
    return { app, store, service, clock, unexpected };
  })();
  return world;
}

export async function closeWorkflowSimulation(): Promise<void> {
  if (world) await (await world).app.close();
  world = null;
}

export async function runWorkflowSimulation(seed: number): Promise<WorkflowSimReport> {
  const prng = seededPrng(seed);
  const plan = planOf(prng);
  const { app, store, service, clock, unexpected } = await worldOnce();
  const violations = unexpected;
  violations.length = 0;
  // Each seed's virtual time starts well after the last one's, so no lease carries over.
  clock.nowMs += 10 * 24 * 3600 * 1000;
  const gid = `sim-${seed}`;
  /** Effects, keyed by idempotency key and op: what the services the steps call applied. */
  const applied = new Map<string, number>();
  const compensationOrder: number[] = [];
  let stepRuns = 0;
  let life = new Incarnation(null, false);

  const recordedDone = (name: string): boolean => {
    const step = store.rows.get(gid)?.tx.branches.find((branch) => branch.branchId === name);
    return step?.ops.action.status === 'succeeded';
  };
  const effect = (key: string, index: number, kind: 'action' | 'compensate') => {
    // A dying process may die before or after its effect lands.
    const fate = life.tick();
    if (fate === 'dead') throw new Crash();
    const id = `${key}/${kind}`;
    if (!applied.has(id) && kind === 'compensate') compensationOrder.push(index);
    applied.set(id, (applied.get(id) ?? 0) + 1);
    if (fate === 'dies-after') throw new Crash();
  };
  const attemptsSeen = new Map<number, number>();
  const definition = {
    name: 'sim',
    fn: async (wf: { step: <T>(name: string, fn: (context: StepContext) => T | Promise<T>, options?: object) => Promise<T> }, input: { values: number[] }) => {
      const results: number[] = [];
      for (let i = 0; i < plan.steps; i++) {
        const value = await wf.step(
          `step-${i}`,
          (ctx: StepContext) => {
            stepRuns += 1;
            if (recordedDone(ctx.stepName)) violations.push(`step-${i} ran again after its success was recorded`);
            if (i === plan.refusedAt) throw new BusinessFailure(`step-${i} refused`);
            const attempts = (attemptsSeen.get(i) ?? 0) + 1;
            attemptsSeen.set(i, attempts);
            if (plan.flaky.has(i) && attempts === 1) throw new Error(`step-${i} flaked`);
            effect(ctx.idempotencyKey, i, 'action');
            return input.values[i];
          },
          {
            retry: { attemptsMax: 100, initialMs: 1 },
            ...(plan.compensated.has(i) ? { compensate: (_value: number, ctx: StepContext) => effect(ctx.idempotencyKey, i, 'compensate') } : {}),
          },
        );
        results.push(value);
      }
      return results;
    },
  };
  const values = Array.from({ length: plan.steps }, (_, i) => (seed * 31 + i * 7) % 1000);
  await new SimClient(app, null).call('POST', '/v1/workflows', { name: 'sim', workflowId: gid, input: { values } });

  let incarnations = 0;
  let crashes = 0;
  const noSleep = async () => undefined;
  for (; incarnations < crashingIncarnationsMax + 5; incarnations++) {
    const current = await store.get(gid);
    if (!current || isFinal(current)) break;
    // The engine's part: once the last worker's lease has run out, the workflow is due and ready.
    const due = current.nextAttemptAtMs ?? clock.nowMs;
    clock.nowMs = Math.max(clock.nowMs, due) + 1;
    const woken = stepWorkflow(current, { type: 'wake' }, { nowMs: clock.nowMs, jitter: prng.next() });
    if (woken.ok && woken.tx !== current) {
      const next = { ...woken.tx, version: current.version + 1 };
      if (await store.update(next, current.version, [])) service.onWoken(next);
    }
    const claimed = await service.claim(`w${incarnations}`, ['sim'], 0);
    if (!claimed) {
      violations.push(`incarnation ${incarnations}: nothing to claim though the workflow is ${current.status}/${current.phase}`);
      break;
    }
    const crashing = incarnations < crashingIncarnationsMax && prng.chance(0.8);
    life = new Incarnation(crashing ? prng.int(1, 2 + plan.steps * 2) : null, prng.chance(0.5));
    const errors: unknown[] = [];
    const worker = new Worker(new SimClient(app, life), { workflows: [definition as never], sleep: noSleep, workerId: `w${incarnations}`, onError: (error) => errors.push(error) });
    await worker.execute(taskView(claimed.tx, claimed.leaseId, simLimits.workflowLeaseMs) as never);
    if (life.dead) crashes += 1;
    else if (errors.length > 0) violations.push(`a live worker failed: ${errors.map(String).join('; ')}`);
  }

  const final = await store.get(gid);
  const view = final ? ((await new SimClient(app, null).call('GET', `/v1/workflows/${gid}`, undefined)) as WorkflowView) : null;
  if (!final || !view) return { seed, violations: [...violations, 'the workflow vanished'], stats: { incarnations, crashes, stepRuns, status: 'missing' } };
  if (!isFinal(final)) violations.push(`the workflow did not end: ${final.status}/${final.phase}`);
  const keyOf = (i: number) => `${gid}:step-${i}`;
  const doneSteps = plan.refusedAt < 0 ? plan.steps : plan.refusedAt;
  for (let i = 0; i < plan.steps; i++) {
    const actions = applied.has(`${keyOf(i)}/action`) ? 1 : 0;
    if (i < doneSteps && actions !== 1) violations.push(`step-${i}'s effect landed ${actions} times, not once`);
    if (i >= doneSteps && actions !== 0) violations.push(`step-${i}'s effect landed though the workflow never got past step-${doneSteps}`);
  }
  if (plan.refusedAt < 0) {
    if (final.status !== 'succeeded') violations.push(`expected success, got ${final.status}: ${final.reason ?? ''}`);
    if (JSON.stringify(view.output) !== JSON.stringify(values)) violations.push(`output ${JSON.stringify(view.output)} is not the steps' values ${JSON.stringify(values)}`);
    if (compensationOrder.length > 0) violations.push(`compensations ran in a workflow that succeeded: ${compensationOrder.join(',')}`);
  } else {
    if (final.status !== 'failed') violations.push(`expected failure at step-${plan.refusedAt}, got ${final.status}`);
    const expected = [...Array(plan.refusedAt).keys()].filter((i) => plan.compensated.has(i)).reverse();
    if (compensationOrder.join(',') !== expected.join(',')) violations.push(`compensated [${compensationOrder.join(',')}], expected [${expected.join(',')}] (reverse order of the completed steps)`);
    for (const step of view.steps.slice(0, plan.refusedAt)) {
      const index = Number(step.name.slice('step-'.length));
      if (plan.compensated.has(index) && step.compensate?.status !== 'succeeded') violations.push(`${step.name}'s compensation is not recorded as succeeded`);
    }
  }
  for (const step of view.steps) {
    const index = Number(step.name.slice('step-'.length));
    if (step.action.status === 'succeeded' && step.action.result !== values[index]) violations.push(`${step.name} recorded ${JSON.stringify(step.action.result)}, not ${values[index]}`);
  }
  return { seed, violations: [...violations], stats: { incarnations, crashes, stepRuns, status: final.status } };
}
