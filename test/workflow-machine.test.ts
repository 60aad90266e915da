// The workflow machine on its own: pure functions from a stored workflow to the next one.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as wf from '../src/tx/workflow.js';
import type { Tx } from '../src/tx/types.js';

const options = { timeoutToFailMs: 0, requestTimeoutMs: 3000, retryIntervalMs: 1000, retryIntervalMsMax: 8000, retryLimit: null, branchHeaders: {}, concurrent: false };
const leaseMs = 1000;

function fresh(): Tx {
  return wf.newWorkflow({ gid: 'w1', name: 'order', input: '{"id":1}', options }, 0, 1000);
}

function ok(outcome: wf.Outcome): Tx {
  assert.ok(outcome.ok, outcome.ok ? '' : outcome.refusal.message);
  return outcome.tx;
}

function refused(outcome: wf.Outcome, code: wf.Refusal['code']): wf.Refusal {
  assert.ok(!outcome.ok, 'expected a refusal');
  assert.equal(outcome.refusal.code, code, outcome.refusal.message);
  return outcome.refusal;
}

describe('workflow machine', () => {
  test('a new workflow is ready, due soon, and without a lease', () => {
    const tx = fresh();
    assert.equal(tx.mode, 'workflow');
    assert.equal(tx.phase, 'ready');
    assert.equal(tx.nextAttemptAtMs, 1000);
    assert.equal(tx.lease, null);
    assert.ok(wf.claimable(tx, 0));
  });

  test('a claim gives a lease whose end is the due time; nobody else can claim before it ends', () => {
    const claimed = ok(wf.claim(fresh(), 'a/1', 10, leaseMs));
    assert.deepEqual(claimed.lease, { owner: 'a/1', untilMs: 1010 });
    assert.equal(claimed.nextAttemptAtMs, 1010);
    assert.equal(claimed.phase, 'running');
    refused(wf.claim(claimed, 'b/1', 1009, leaseMs), 'not-claimable');
    const taken = ok(wf.claim(claimed, 'b/1', 1010, leaseMs));
    assert.equal(taken.lease?.owner, 'b/1');
    // The first holder is fenced off.
    refused(wf.recordStep(taken, 'a/1', { name: 's', op: 'action', status: 'succeeded' }, 1011, leaseMs), 'lease-lost');
  });

  test('steps are recorded in order with result, attempts and timings, and each record renews the lease', () => {
    let tx = ok(wf.claim(fresh(), 'a/1', 0, leaseMs));
    tx = ok(wf.recordStep(tx, 'a/1', { name: 'reserve', op: 'action', status: 'retrying', error: 'busy', index: 0, durationMs: 5 }, 100, leaseMs));
    assert.equal(tx.branches[0].ops.action.status, 'pending');
    assert.equal(tx.branches[0].ops.action.startedAtMs, 95);
    tx = ok(wf.recordStep(tx, 'a/1', { name: 'reserve', op: 'action', status: 'succeeded', result: '"h1"', index: 0 }, 200, leaseMs));
    assert.deepEqual(
      { ...tx.branches[0].ops.action },
      { url: '', status: 'succeeded', attempts: 2, lastError: 'busy', result: '"h1"', startedAtMs: 95, settledAtMs: 200 },
    );
    assert.equal(tx.lease?.untilMs, 1200);
    assert.equal(tx.nextAttemptAtMs, 1200);
  });

  test('reporting a settled step again the same way is a retry; differently, or out of order, a conflict naming the record', () => {
    let tx = ok(wf.claim(fresh(), 'a/1', 0, leaseMs));
    tx = ok(wf.recordStep(tx, 'a/1', { name: 'a', op: 'action', status: 'succeeded', result: '1', index: 0 }, 1, leaseMs));
    const again = wf.recordStep(tx, 'a/1', { name: 'a', op: 'action', status: 'succeeded', result: '1', index: 0 }, 2, leaseMs);
    assert.ok(again.ok && !again.changed);
    refused(wf.recordStep(tx, 'a/1', { name: 'a', op: 'action', status: 'succeeded', result: '2', index: 0 }, 2, leaseMs), 'step-conflict');
    const skipped = refused(wf.recordStep(tx, 'a/1', { name: 'c', op: 'action', status: 'succeeded', index: 2 }, 2, leaseMs), 'step-conflict');
    assert.ok(skipped.code === 'step-conflict' && skipped.recorded.join() === 'a');
    refused(wf.recordStep(tx, 'a/1', { name: 'a', op: 'action', status: 'succeeded', result: '1', index: 1 }, 2, leaseMs), 'step-conflict');
  });

  test('compensation puts the workflow in rollback, only for succeeded steps, and never fails', () => {
    let tx = ok(wf.claim(fresh(), 'a/1', 0, leaseMs));
    tx = ok(wf.recordStep(tx, 'a/1', { name: 'a', op: 'action', status: 'succeeded', index: 0 }, 1, leaseMs));
    tx = ok(wf.recordStep(tx, 'a/1', { name: 'b', op: 'action', status: 'failed', error: 'no', index: 1 }, 2, leaseMs));
    refused(wf.recordStep(tx, 'a/1', { name: 'b', op: 'compensate', status: 'succeeded' }, 3, leaseMs), 'step-conflict');
    refused(wf.recordStep(tx, 'a/1', { name: 'a', op: 'compensate', status: 'failed' }, 3, leaseMs), 'step-conflict');
    tx = ok(wf.startRollback(tx, 'a/1', 'BusinessFailure: no', 3, leaseMs));
    assert.equal(tx.status, 'aborting');
    refused(wf.recordStep(tx, 'a/1', { name: 'c', op: 'action', status: 'succeeded', index: 2 }, 4, leaseMs), 'step-conflict');
    tx = ok(wf.recordStep(tx, 'a/1', { name: 'a', op: 'compensate', status: 'succeeded' }, 5, leaseMs));
    assert.equal(tx.branches[0].ops.compensate?.status, 'succeeded');
    refused(wf.finish(tx, 'a/1', { status: 'succeeded' }, 6), 'step-conflict');
    tx = ok(wf.finish(tx, 'a/1', { status: 'failed', reason: 'no' }, 6));
    assert.equal(tx.status, 'failed');
    assert.equal(tx.nextAttemptAtMs, null);
    assert.equal(tx.lease, null);
    const twice = wf.finish(tx, 'a/1', { status: 'failed', reason: 'no' }, 7);
    assert.ok(twice.ok && !twice.changed);
    refused(wf.finish(tx, 'a/1', { status: 'succeeded' }, 7), 'ended');
  });

  test('the engine makes a due workflow ready with backoff, and leaves a leased, blocked or ended one alone', () => {
    const ctx = (nowMs: number) => ({ nowMs, jitter: 0.999 });
    const claimed = ok(wf.claim(fresh(), 'a/1', 0, leaseMs));
    const early = wf.stepWorkflow(claimed, { type: 'wake' }, ctx(999));
    assert.ok(early.ok && early.tx === claimed && early.calls.length === 0);
    const due = wf.stepWorkflow(claimed, { type: 'wake' }, ctx(1000));
    assert.ok(due.ok);
    assert.equal(due.tx.phase, 'ready');
    assert.equal(due.tx.lease, null);
    assert.ok((due.tx.nextAttemptAtMs ?? 0) > 1000);
    const again = wf.stepWorkflow(due.tx, { type: 'wake' }, ctx(due.tx.nextAttemptAtMs ?? 0));
    assert.ok(again.ok && (again.tx.nextAttemptAtMs ?? 0) - (due.tx.nextAttemptAtMs ?? 0) > (due.tx.nextAttemptAtMs ?? 0) - 1000, 'backoff grows');
    const blocked = ok(wf.block(claimed, 'a/1', 'replay differs', 10));
    assert.equal(blocked.nextAttemptAtMs, null);
    assert.ok(!wf.claimable(blocked, 10_000));
    assert.ok(wf.claimable(ok(wf.unblock(blocked, 20)), 20));
    const submit = wf.stepWorkflow(claimed, { type: 'submit' }, ctx(1));
    assert.ok(!submit.ok);
  });
});

describe('workflow machine: waits, signals, cancellation, timeout', () => {
  test('a sleep lets go until its end; the engine then settles it and makes the run ready', () => {
    let tx = ok(wf.claim(fresh(), 'a/1', 0, leaseMs));
    tx = ok(wf.sleep(tx, 'a/1', 'nap', 0, 5000, 10));
    assert.equal(tx.phase, 'sleeping');
    assert.equal(tx.lease, null);
    assert.equal(tx.nextAttemptAtMs, 5010);
    const woken = wf.stepWorkflow(tx, { type: 'wake' }, { nowMs: 5010, jitter: 0 });
    assert.ok(woken.ok);
    assert.equal(woken.tx.phase, 'ready');
    assert.equal(woken.tx.branches[0].ops.action.status, 'succeeded');
  });

  test('a signal sent before the wait is kept and taken by it; one sent during the wait settles it', () => {
    let tx = ok(wf.claim(fresh(), 'a/1', 0, leaseMs));
    const early = wf.deliverSignal(tx, 'go', 'true', 1);
    assert.equal(early.delivered, 'buffered');
    tx = ok(early);
    assert.equal(wf.deliverSignal(tx, 'go', 'false', 2).delivered, 'dropped');
    tx = ok(wf.waitForSignal(tx, 'a/1', 'go', 0, 'go', null, 3, leaseMs));
    assert.equal(tx.phase, 'running');
    assert.equal(tx.branches[0].ops.action.result, 'true');
    tx = ok(wf.waitForSignal(tx, 'a/1', 'again', 1, 'again', 100, 4, leaseMs));
    assert.equal(tx.phase, 'waiting');
    const during = wf.deliverSignal(tx, 'again', '"x"', 5);
    assert.equal(during.delivered, 'received');
    assert.equal(ok(during).phase, 'ready');
    // Without a signal, the timeout fails the wait.
    const timedOut = wf.stepWorkflow(tx, { type: 'wake' }, { nowMs: 104, jitter: 0 });
    assert.ok(timedOut.ok);
    assert.match(timedOut.tx.branches[1].ops.action.lastError ?? '', /^SignalTimeoutError/);
  });

  test('cancelling wakes a waiting run with its wait failed; a timeout caps the wait and is a stop reason', () => {
    let tx = ok(wf.claim(fresh(), 'a/1', 0, leaseMs));
    tx = ok(wf.waitForSignal(tx, 'a/1', 'go', 0, 'go', null, 1, leaseMs));
    assert.equal(tx.nextAttemptAtMs, null);
    const cancelled = ok(wf.requestCancel(tx, 'no longer wanted', 2));
    assert.equal(cancelled.phase, 'ready');
    assert.equal(wf.stopReason(cancelled, 2), 'no longer wanted');
    assert.match(cancelled.branches[0].ops.action.lastError ?? '', /^WorkflowCancelledError/);
    const timed = wf.newWorkflow({ gid: 'w2', name: 'order', input: 'null', options, timeoutMs: 500 }, 0, 1000);
    let running = ok(wf.claim(timed, 'a/1', 0, leaseMs));
    running = ok(wf.waitForSignal(running, 'a/1', 'go', 0, 'go', 10_000, 1, leaseMs));
    assert.equal(running.nextAttemptAtMs, 500);
    assert.equal(wf.stopReason(running, 499), null);
    assert.match(wf.stopReason(running, 500) ?? '', /timed out/);
  });
});
