// The two-phase message machine, pure: a seeded simulation drives it through a faulty network,
// crashes (in-flight calls lost, state back to the last write), early wakes, and an app that
// submits, aborts, or vanishes after committing or rolling back its local transaction. The
// invariants are checked after every step. Replay a failing seed alone with
// MSG_SIM_SEED=123 node --test dist/test/msg-machine.test.js
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { limitDefaults } from '../src/config.js';
import { toNewTx } from '../src/server/tx-request.js';
import { newTx, step } from '../src/tx/machine.js';
import type { BranchCall, CallResult, StepResult, Tx, TxEvent } from '../src/tx/types.js';
import { isFinal } from '../src/tx/types.js';
import { seededPrng, type Prng } from './support/prng.js';

const startMs = 1_700_000_000_000;
const seeds = 500;
const stormStepsMax = 80;
const calmStepsMax = 400;

type LocalState = 'running' | 'committed' | 'rolled-back';

class MessageSimulation {
  private readonly random: Prng;
  private clockMs = startMs;
  private persisted!: Tx;
  private inFlight: BranchCall[] = [];
  private local: LocalState = 'running';
  private appDone = false;
  private submitted = false;
  private readonly delivered = new Set<string>();
  private readonly trace: string[] = [];

  constructor(readonly seed: number) {
    this.random = seededPrng(seed);
  }

  run(): Tx {
    try {
      this.create();
      for (let index = 0; index < stormStepsMax && !isFinal(this.persisted); index++) this.stormStep();
      for (let index = 0; index < calmStepsMax && !isFinal(this.persisted); index++) this.calmStep();
      this.checkEnd();
      return this.persisted;
    } catch (error) {
      throw new Error(`seed=${this.seed}: ${(error as Error).message}\nreplay: MSG_SIM_SEED=${this.seed}\n  ${this.trace.slice(-20).join('\n  ')}`);
    }
  }

  private create(): void {
    const random = this.random;
    const stepCount = random.int(1, 4);
    const prepared = random.chance(0.8);
    const spec = toNewTx(
      {
        gid: `m-${this.seed}`,
        mode: 'msg',
        concurrent: random.chance(0.3),
        branches: Array.from({ length: stepCount }, (_unused, index) => ({ urls: { action: `http://s/${index}` } })),
        timeoutToFailMs: random.int(50, 2000),
        retryIntervalMs: random.int(10, 200),
        requestTimeoutMs: random.int(50, 500),
        ...(prepared ? { queryPreparedUrl: 'http://app/query' } : {}),
      },
      { ...limitDefaults },
    );
    this.persisted = newTx(spec, this.clockMs);
    this.trace.push(`create steps=${stepCount} prepared=${prepared} concurrent=${spec.options.concurrent}`);
    if (!prepared) {
      this.local = 'committed';
      this.appDone = true;
      this.apply({ type: 'submit' });
    }
  }

  private stormStep(): void {
    const random = this.random;
    const roll = random.next();
    if (!this.appDone && roll < 0.25) return this.appActs();
    if (roll < 0.3) return this.crash();
    if (this.inFlight.length > 0 && roll < 0.75) return this.answer(this.random.chance(0.5));
    this.wake(random.chance(0.2));
  }

  /** No faults: every call answers, the app (if alive) has finished, wakes come on time. */
  private calmStep(): void {
    if (this.local === 'running') this.local = this.random.chance(0.5) ? 'committed' : 'rolled-back';
    if (this.inFlight.length > 0) return this.answer(false);
    this.wake(false);
  }

  private appActs(): void {
    const random = this.random;
    if (this.local === 'running') {
      this.local = random.chance(0.7) ? 'committed' : 'rolled-back';
      this.trace.push(`app local ${this.local}`);
      return;
    }
    this.appDone = true;
    const intent = random.pick(['submit', 'abort', 'vanish'] as const);
    if (intent === 'vanish') return void this.trace.push('app vanishes');
    // A correct app submits only after committing and aborts only after rolling back.
    this.apply(this.local === 'committed' ? { type: 'submit' } : { type: 'abort', reason: 'app rolled back' });
  }

  private crash(): void {
    this.trace.push(`crash (lost ${this.inFlight.length} calls)`);
    this.inFlight = [];
  }

  private wake(early: boolean): void {
    const next = this.persisted.nextAttemptAtMs;
    if (next === null) return;
    this.clockMs = early ? this.clockMs + 1 : Math.max(this.clockMs + 1, next);
    this.apply({ type: 'wake' });
  }

  private answer(faulty: boolean): void {
    const index = this.random.int(0, this.inFlight.length - 1);
    const [call] = this.inFlight.splice(index, 1);
    const outcome = call.op === 'msg' ? this.queryAnswer(faulty) : this.stepAnswer(call, faulty);
    this.clockMs += 1;
    this.apply({ type: 'results', results: [{ branchId: call.branchId, op: call.op, outcome }] });
  }

  private queryAnswer(faulty: boolean): CallResult['outcome'] {
    if (faulty && this.random.chance(0.5)) return 'transient';
    if (this.local === 'running') {
      // A queryPrepared that finds nothing committed blocks the local transaction for good.
      if (this.random.chance(0.5)) return 'ongoing';
      this.local = 'rolled-back';
    }
    return this.local === 'committed' ? 'success' : 'failure';
  }

  private stepAnswer(call: BranchCall, faulty: boolean): CallResult['outcome'] {
    if (faulty) {
      const outcome = this.random.pick(['success', 'failure', 'ongoing', 'transient'] as const);
      if (outcome !== 'transient' || this.random.chance(0.5)) this.delivered.add(call.branchId);
      return outcome;
    }
    this.delivered.add(call.branchId);
    return 'success';
  }

  private apply(event: TxEvent): void {
    const before = this.persisted;
    const result: StepResult = step(before, event, { nowMs: this.clockMs, jitter: this.random.next() });
    this.trace.push(`${event.type} ${before.status}/${before.phase} → ${result.ok ? `${result.tx.status}/${result.tx.phase} calls=${result.calls.map((c) => `${c.branchId}:${c.op}`).join(',')}` : `refused ${result.error.code}`}`);
    if (!result.ok) {
      // Refusals are fine only for an abort after the message was submitted.
      assert.ok(event.type === 'abort' && before.status !== 'prepared', `refused ${event.type} in ${before.status}`);
      return;
    }
    if (event.type === 'submit' && result.tx.status === 'submitted') this.submitted = true;
    this.check(before, result);
    this.persisted = result.tx;
    this.inFlight.push(...result.calls);
  }

  private check(before: Tx, result: Extract<StepResult, { ok: true }>): void {
    const tx = result.tx;
    assert.ok(isFinal(tx) === (tx.nextAttemptAtMs === null), 'a message has a next attempt exactly while it has not ended');
    if (before.status === 'submitted' || before.status === 'succeeded') assert.notEqual(tx.status, 'failed', 'a submitted message never fails');
    if (tx.status === 'failed') assert.notEqual(this.local, 'committed', 'a message whose local transaction committed must not fail');
    for (const call of result.calls) {
      if (call.op === 'msg') {
        assert.equal(tx.status, 'prepared', 'queryPrepared is asked only while prepared');
        continue;
      }
      assert.equal(tx.status, 'submitted', 'steps are delivered only once submitted');
      assert.equal(this.local, 'committed', 'steps are delivered only after the local commit');
      const index = tx.branches.findIndex((branch) => branch.branchId === call.branchId);
      if (!tx.options.concurrent) {
        for (const earlier of tx.branches.slice(0, index)) {
          assert.equal(earlier.ops.action.status, 'succeeded', `step ${call.branchId} called before ${earlier.branchId} was acknowledged`);
        }
      }
    }
  }

  private checkEnd(): void {
    const tx = this.persisted;
    assert.ok(isFinal(tx), `the message has not ended after the calm phase: ${tx.status}/${tx.phase}`);
    if (tx.status === 'succeeded') {
      assert.equal(this.local, 'committed');
      for (const branch of tx.branches) assert.ok(this.delivered.has(branch.branchId), `step ${branch.branchId} acknowledged without reaching the participant`);
    } else {
      assert.notEqual(this.local, 'committed');
      assert.equal(this.delivered.size, 0, 'a failed message delivered nothing');
      assert.equal(this.submitted, false);
    }
  }
}

describe('two-phase message machine', () => {
  test(`seeded simulation: ${seeds} seeds with faults, crashes and vanishing apps`, () => {
    const only = process.env.MSG_SIM_SEED;
    const seedList = only ? [Number(only)] : Array.from({ length: seeds }, (_unused, index) => index + 1);
    const ends = { succeeded: 0, failed: 0 };
    for (const seed of seedList) {
      const end = new MessageSimulation(seed).run();
      ends[end.status as 'succeeded' | 'failed'] += 1;
    }
    if (!only) {
      // The seeds must reach both ends, or the simulation is not exercising the machine.
      assert.ok(ends.succeeded > seeds / 10 && ends.failed > seeds / 10, JSON.stringify(ends));
    }
  });

  test('a prepared message waits for its deadline, then asks queryPrepared as branch 00 with op msg', () => {
    const spec = toNewTx({ gid: 'm', mode: 'msg', concurrent: false, branches: [{ urls: { action: 'http://s/1' } }], timeoutToFailMs: 1000, queryPreparedUrl: 'http://app/q' }, { ...limitDefaults });
    const tx = newTx(spec, startMs);
    assert.equal(tx.nextAttemptAtMs, startMs + 1000);
    const early = step(tx, { type: 'wake' }, { nowMs: startMs + 999, jitter: 0.5 });
    assert.ok(early.ok && early.calls.length === 0 && early.tx === tx);
    const due = step(tx, { type: 'wake' }, { nowMs: startMs + 1000, jitter: 0.5 });
    assert.ok(due.ok);
    assert.deepEqual(due.calls, [{ branchId: '00', op: 'msg', url: 'http://app/q' }]);
    assert.equal(due.tx.phase, 'query-prepared');
  });
});
