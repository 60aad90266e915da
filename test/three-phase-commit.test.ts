// 3PC's commit point (issue 10, bug 1). A participant that acknowledged preCommit commits on
// its own after autoCommitAfterMs, so once the coordinator has persisted the preCommit phase
// (and so may have sent preCommit to anyone) the only outcome it may reach is commit. These
// tests drive the pure machine into preCommit and try every way out that used to abort: the
// deadline (seen by a timer or by a late answer), the retry limit, a FAILURE answer, the
// abort API event and a restart long after the deadline. Only canCommit may still abort.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { limitDefaults } from '../src/config.js';
import { toNewTx, type BranchRequest, type TxRequest } from '../src/server/tx-request.js';
import { newTx, step } from '../src/tx/machine.js';
import type { BranchCall, CallResult, StepContext, StepResult, Tx, TxEvent } from '../src/tx/types.js';
import { isFinal } from '../src/tx/types.js';
import { seededPrng } from './support/prng.js';

const startMs = 1_700_000_000_000;
const deadlineMs = 1000;
const ops = ['canCommit', 'preCommit', 'doCommit', 'abort'] as const;

function branchRequest(branchId: string): BranchRequest {
  return { branchId, urls: Object.fromEntries(ops.map((op) => [op, `http://participant.test/${branchId}/${op}`])) };
}

function created(extra: Partial<Omit<TxRequest, 'gid' | 'mode' | 'branches'>> = {}): Tx {
  const request: TxRequest = { gid: 'g3pc', mode: '3pc', concurrent: false, branches: [branchRequest('01'), branchRequest('02')], timeoutToFailMs: deadlineMs, retryIntervalMs: 10, ...extra };
  return newTx(toNewTx(request, { ...limitDefaults }), startMs);
}

function at(offsetMs: number): StepContext {
  return { nowMs: startMs + offsetMs, jitter: 0.5 };
}

function ok(result: StepResult): { tx: Tx; calls: BranchCall[] } {
  if (!result.ok) assert.fail(`step refused: ${result.error.code}: ${result.error.message}`);
  return { tx: result.tx, calls: result.calls };
}

function answers(calls: BranchCall[], outcome: CallResult['outcome'] | ((call: BranchCall) => CallResult['outcome'])): TxEvent {
  return { type: 'results', results: calls.map((call) => ({ branchId: call.branchId, op: call.op, outcome: typeof outcome === 'string' ? outcome : outcome(call) })) };
}

function keys(calls: BranchCall[]): string[] {
  return calls.map((call) => `${call.branchId}/${call.op}`);
}

/** Both participants voted yes: the persisted state is the preCommit phase, its calls out. */
function inPreCommit(extra: Parameters<typeof created>[0] = {}, offsetMs = 10): { tx: Tx; calls: BranchCall[] } {
  let { tx, calls } = ok(step(created(extra), { type: 'submit' }, at(0)));
  assert.deepEqual(keys(calls), ['01/canCommit', '02/canCommit']);
  ({ tx, calls } = ok(step(tx, answers(calls, 'success'), at(offsetMs))));
  assert.equal(tx.phase, 'preCommit');
  assert.deepEqual(keys(calls), ['01/preCommit', '02/preCommit']);
  return { tx, calls };
}

/** Answers every call with success until the transaction ends; returns the ops called. */
function finish(start: { tx: Tx; calls: BranchCall[] }, offsetMs: number): { tx: Tx; seen: string[] } {
  let { tx, calls } = start;
  const seen: string[] = [];
  for (let round = 0; round < 10 && !isFinal(tx); round += 1) {
    if (calls.length === 0) ({ tx, calls } = ok(step(tx, { type: 'wake' }, at(Math.max(offsetMs, (tx.nextAttemptAtMs ?? startMs) - startMs)))));
    seen.push(...keys(calls));
    ({ tx, calls } = ok(step(tx, answers(calls, 'success'), at(offsetMs))));
  }
  return { tx, seen };
}

function assertCommitted(tx: Tx, seen: string[]): void {
  assert.equal(tx.status, 'succeeded', `ended ${tx.status}/${tx.phase} (${tx.reason ?? ''})`);
  assert.ok(!seen.some((key) => key.endsWith('/abort')), `abort was called: ${seen.join(' ')}`);
  for (const branch of tx.branches) assert.equal(branch.ops.doCommit.status, 'succeeded');
}

describe('3pc: once preCommit is durable the outcome is commit', () => {
  test('the deadline passing during preCommit (seen by the timer) retries preCommit instead of aborting', () => {
    let { tx, calls } = inPreCommit();
    ({ tx, calls } = ok(step(tx, answers(calls, (call) => (call.branchId === '01' ? 'success' : 'transient')), at(500))));
    ({ tx, calls } = ok(step(tx, { type: 'wake' }, at(deadlineMs + 1))));
    assert.equal(tx.status, 'submitted');
    assert.equal(tx.phase, 'preCommit');
    assert.deepEqual(keys(calls), ['02/preCommit'], 'only the unacknowledged preCommit is retried');
    const { tx: ended, seen } = finish({ tx, calls }, deadlineMs + 50);
    assertCommitted(ended, seen);
  });

  test('a late preCommit answer after the deadline does not abort', () => {
    let { tx, calls } = inPreCommit();
    ({ tx, calls } = ok(step(tx, answers(calls, 'ongoing'), at(deadlineMs * 5))));
    assert.equal(tx.status, 'submitted');
    assert.equal(tx.phase, 'preCommit');
    const { tx: ended, seen } = finish({ tx, calls }, deadlineMs * 6);
    assertCommitted(ended, seen);
  });

  test('the retry limit running out in preCommit keeps retrying, then commits', () => {
    let { tx, calls } = inPreCommit({ retryLimit: 1 });
    let nowMs = 10;
    for (let round = 1; round <= 5; round += 1) {
      nowMs += 5;
      ({ tx, calls } = ok(step(tx, answers(calls, 'transient'), at(nowMs))));
      assert.equal(tx.phase, 'preCommit', `round ${round}: ${tx.status}/${tx.phase} (${tx.reason ?? ''})`);
      nowMs = Math.max(nowMs, (tx.nextAttemptAtMs ?? startMs) - startMs);
      ({ tx, calls } = ok(step(tx, { type: 'wake' }, at(nowMs))));
      assert.deepEqual(keys(calls), ['01/preCommit', '02/preCommit']);
    }
    assert.ok(tx.branches.every((branch) => branch.ops.preCommit.attempts > 1), 'the retry limit was passed');
    const { tx: ended, seen } = finish({ tx, calls }, nowMs + 5);
    assertCommitted(ended, seen);
  });

  test('a FAILURE answer to preCommit is retried, not taken as a vote', () => {
    let { tx, calls } = inPreCommit({ retryLimit: 0 });
    ({ tx, calls } = ok(step(tx, answers(calls, (call) => (call.branchId === '02' ? 'failure' : 'success')), at(20))));
    assert.equal(tx.status, 'submitted');
    assert.equal(tx.phase, 'preCommit');
    assert.equal(tx.branches[1].ops.preCommit.status, 'pending');
    const { tx: ended, seen } = finish({ tx, calls }, 100);
    assertCommitted(ended, seen);
  });

  test('an abort event during preCommit is refused and changes nothing', () => {
    const { tx } = inPreCommit();
    const result = step(tx, { type: 'abort', reason: 'operator' }, at(20));
    assert.equal(result.ok, false);
    assert.equal(result.tx, tx);
    assert.equal(!result.ok && result.error.code, 'not-allowed-in-status');
    assert.match(!result.ok ? result.error.message : '', /preCommit/);
  });

  test('a coordinator waking long after the deadline, with preCommit persisted and its calls lost, resumes preCommit', () => {
    const { tx: persisted } = inPreCommit();
    // The process died with the preCommit calls in flight; the recovery scan finds it much later.
    const { tx, calls } = ok(step(persisted, { type: 'wake' }, at(deadlineMs * 100)));
    assert.equal(tx.status, 'submitted');
    assert.equal(tx.phase, 'preCommit');
    assert.deepEqual(keys(calls), ['01/preCommit', '02/preCommit']);
    const { tx: ended, seen } = finish({ tx, calls }, deadlineMs * 101);
    assertCommitted(ended, seen);
  });

  test('no sequence of faults, wakes, restarts and aborts leads from preCommit to abort (seeded)', () => {
    for (let seed = 1; seed <= 300; seed += 1) {
      const random = seededPrng(seed);
      let { tx, calls } = inPreCommit({ retryLimit: random.chance(0.5) ? random.int(0, 3) : null }, random.int(1, deadlineMs + 500));
      let nowMs = tx.updatedAtMs - startMs;
      const trace: string[] = [];
      for (let stepIndex = 0; stepIndex < 60 && !isFinal(tx); stepIndex += 1) {
        nowMs += random.int(0, 800);
        const calm = stepIndex >= 40;
        let event: TxEvent;
        if (!calm && random.chance(0.1)) event = { type: 'abort', reason: 'simulated' };
        else if (calls.length > 0 && (calm || !random.chance(0.2))) {
          const pick = (): CallResult['outcome'] => (calm ? 'success' : random.pick(['success', 'failure', 'ongoing', 'transient'] as const));
          event = answers(calls, pick);
        } else {
          // A restart (calls lost) or a timer: wake no earlier than asked.
          nowMs = Math.max(nowMs, (tx.nextAttemptAtMs ?? startMs) - startMs);
          event = { type: 'wake' };
        }
        const result = step(tx, event, at(nowMs));
        trace.push(`${event.type} at +${nowMs} → ${result.ok ? `${result.tx.status}/${result.tx.phase}` : `refused ${result.error.code}`}`);
        if (!result.ok) {
          assert.equal(event.type, 'abort', `seed ${seed}: ${event.type} refused\n${trace.join('\n')}`);
          continue;
        }
        assert.ok(result.tx.status === 'submitted' || result.tx.status === 'succeeded', `seed ${seed}: left preCommit for ${result.tx.status}\n${trace.join('\n')}`);
        assert.ok(!result.calls.some((call) => call.op === 'abort'), `seed ${seed}: abort called\n${trace.join('\n')}`);
        tx = result.tx;
        calls = result.calls;
      }
      assert.equal(tx.status, 'succeeded', `seed ${seed}: not committed after the calm steps\n${trace.join('\n')}`);
    }
  });
});

describe('3pc: canCommit (the vote) is the only phase that may abort', () => {
  test('the deadline during canCommit aborts every participant', () => {
    let { tx, calls } = ok(step(created(), { type: 'submit' }, at(0)));
    ({ tx, calls } = ok(step(tx, answers(calls, (call) => (call.branchId === '01' ? 'success' : 'transient')), at(deadlineMs - 1))));
    ({ tx, calls } = ok(step(tx, { type: 'wake' }, at(deadlineMs))));
    assert.equal(tx.status, 'aborting');
    assert.deepEqual(keys(calls), ['01/abort', '02/abort']);
  });

  test('a no vote, or the retry limit at canCommit, aborts', () => {
    for (const outcome of ['failure', 'transient'] as const) {
      let { tx, calls } = ok(step(created({ retryLimit: 0 }), { type: 'submit' }, at(0)));
      ({ tx, calls } = ok(step(tx, answers(calls, (call) => (call.branchId === '02' ? outcome : 'success')), at(10))));
      assert.equal(tx.status, 'aborting', `${outcome} at canCommit`);
      assert.deepEqual(keys(calls), ['01/abort', '02/abort']);
    }
  });

  test('an abort event during canCommit aborts', () => {
    const { tx: voting } = ok(step(created(), { type: 'submit' }, at(0)));
    const { tx, calls } = ok(step(voting, { type: 'abort', reason: 'app' }, at(5)));
    assert.equal(tx.status, 'aborting');
    assert.deepEqual(keys(calls), ['01/abort', '02/abort']);
  });
});
