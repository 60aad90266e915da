// Crash tests at engine-chosen points: the child coordinator kills itself with SIGKILL right
// after a given state became durable (TANDEM_FAILPOINTS=after-persist:<status>/<phase>). Each
// test checks that the file holds exactly that state, restarts the coordinator without the
// failpoint, waits for the transaction to end, and reads each participant's own ledger: every
// effect the outcome requires is there once, and nothing else is.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { isConnectionError, startChildCoordinator, type ChildCoordinator } from './support/child-coordinator.js';
import {
  deliveryCounts,
  expectCounts,
  ledgerCounts,
  onlyOp,
  place,
  startLedgerParticipants,
  type Counts,
  type Placed,
} from './support/ledger-participant.js';

const testTimeoutMs = 60_000;
const resultWaitMs = 30_000;
/** Small intervals so that retries and the resumption after a restart come quickly. */
const txOptions = { requestTimeoutMs: 1000, retryIntervalMs: 20 };

/**
 * Awaits a request the failpoint may cut off. A connection error is the kill; anything else
 * (an HTTP error answer, a throw from the test's own code) is a broken test.
 */
async function survivingKill(request: Promise<unknown>): Promise<void> {
  try {
    await request;
  } catch (error) {
    if (!isConnectionError(error)) throw error;
  }
}

interface Crash {
  coordinator: ChildCoordinator;
  /** Deliveries per branch/op made before the kill. */
  deliveredBeforeKill: Counts;
  status: string;
}

/**
 * Starts a coordinator armed with `failpoint`, lets `begin` start the transaction, waits for
 * the self-kill, checks the durable state, restarts and waits for the end.
 */
async function crashAndRecover(
  t: TestContext,
  failpoint: string,
  gid: string,
  branches: Placed[],
  ops: readonly string[],
  begin: (coordinator: ChildCoordinator) => Promise<void>,
): Promise<Crash> {
  const coordinator = await startChildCoordinator(t, { failpoints: failpoint });
  await survivingKill(begin(coordinator));
  const exit = await coordinator.waitForExit();
  assert.equal(exit.signal, 'SIGKILL', `the coordinator should have killed itself; stderr:\n${coordinator.stderrText}`);
  assert.match(coordinator.stderrText, new RegExp(`failpoint ${failpoint.replace(/\//g, '\\/')}: SIGKILL`));
  const [, statusPhase] = failpoint.split(':');
  const [status, phase] = statusPhase.split('/');
  assert.deepEqual(coordinator.durableState(gid), { status, phase }, 'the state the failpoint names is durable at the kill');
  const deliveredBeforeKill = deliveryCounts(gid, branches, ops);
  await coordinator.restart();
  const ended = await coordinator.client.waitResult(gid, { timeoutMs: resultWaitMs });
  assert.deepEqual(coordinator.errorLogs(), [], 'the coordinator logged no errors');
  return { coordinator, deliveredBeforeKill, status: ended.status };
}

function newGid(): string {
  return `crash-${randomUUID()}`;
}

describe('crash at a failpoint, then restart', { timeout: testTimeoutMs * 10 }, () => {
  test('2pc killed right after the commit decision is durable commits every participant once', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 2);
    const ops = ['prepare', 'commit', 'rollback'] as const;
    const gid = newGid();
    const crash = await crashAndRecover(t, 'after-persist:submitted/commit', gid, branches, ops, async (coordinator) => {
      const builder = coordinator.client.twoPhase({ gid, ...txOptions });
      for (const placed of branches) {
        builder.add({ prepare: placed.participant.urlFor('prepare'), commit: placed.participant.urlFor('commit'), rollback: placed.participant.urlFor('rollback') }, { amount: 5 }, placed.branchId);
      }
      await builder.submit();
    });
    assert.equal(crash.status, 'succeeded');
    // The decision was durable before any commit went out: the kill came in between.
    assert.deepEqual(onlyOp(crash.deliveredBeforeKill, 'commit'), expectCounts(branches, ['commit'], []));
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['prepare', 'commit']));
  });

  test('2pc killed once rollback is durable rolls back the participant that prepared, once', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 2);
    const ops = ['prepare', 'commit', 'rollback'] as const;
    const gid = newGid();
    const crash = await crashAndRecover(t, 'after-persist:aborting/rollback', gid, branches, ops, async (coordinator) => {
      const builder = coordinator.client.twoPhase({ gid, ...txOptions });
      branches.forEach((placed, index) => {
        const refuse = index === 1;
        builder.add({ prepare: placed.participant.urlFor('prepare', { refuse }), commit: placed.participant.urlFor('commit'), rollback: placed.participant.urlFor('rollback') }, { amount: 5 }, placed.branchId);
      });
      await builder.submit();
    });
    assert.equal(crash.status, 'failed');
    // Branch 02 refused inside its barrier, so its rollback is a null compensation.
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['prepare', 'rollback'], { '02/prepare': 0, '02/rollback': 0 }));
    assert.equal(branches[0].participant.balance(gid) + branches[1].participant.balance(gid), 0);
  });

  for (const phase of ['preCommit', 'doCommit'] as const) {
    test(`3pc killed once ${phase} is durable commits every participant once`, { timeout: testTimeoutMs }, async (t) => {
      const participants = await startLedgerParticipants(t, 2);
      const branches = place(participants, 2);
      const ops = ['canCommit', 'preCommit', 'doCommit', 'abort'] as const;
      const gid = newGid();
      const crash = await crashAndRecover(t, `after-persist:submitted/${phase}`, gid, branches, ops, async (coordinator) => {
        const builder = coordinator.client.threePhase({ gid, ...txOptions });
        for (const placed of branches) {
          const urls = { canCommit: placed.participant.urlFor('canCommit'), preCommit: placed.participant.urlFor('preCommit'), doCommit: placed.participant.urlFor('doCommit'), abort: placed.participant.urlFor('abort') };
          builder.add(urls, { amount: 3 }, placed.branchId);
        }
        await builder.submit();
      });
      assert.equal(crash.status, 'succeeded');
      assert.deepEqual(onlyOp(crash.deliveredBeforeKill, phase), expectCounts(branches, [phase], []), `no ${phase} went out before the kill`);
      assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['canCommit', 'preCommit', 'doCommit']));
    });
  }

  test('saga killed after its first action is durable does not run that action again', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 2);
    const ops = ['action', 'compensate'] as const;
    const gid = newGid();
    const crash = await crashAndRecover(t, 'after-persist:submitted/action', gid, branches, ops, async (coordinator) => {
      const saga = coordinator.client.saga({ gid, ...txOptions });
      for (const placed of branches) saga.add(placed.participant.urlFor('action'), placed.participant.urlFor('compensate'), { amount: 7 });
      await saga.submit();
    });
    assert.equal(crash.status, 'succeeded');
    assert.equal(crash.deliveredBeforeKill['02/action'], 0, 'the kill came before action 02 was called');
    const deliveredAfter = deliveryCounts(gid, branches, ops);
    assert.equal(deliveredAfter['01/action'], crash.deliveredBeforeKill['01/action'], 'a durable success is not called again');
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['action']));
  });

  test('saga killed once compensation is durable compensates every applied action once', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 3);
    const ops = ['action', 'compensate'] as const;
    const gid = newGid();
    const crash = await crashAndRecover(t, 'after-persist:aborting/compensate', gid, branches, ops, async (coordinator) => {
      const saga = coordinator.client.saga({ gid, ...txOptions });
      branches.forEach((placed, index) => {
        saga.add(placed.participant.urlFor('action', { refuse: index === 2 }), placed.participant.urlFor('compensate'), { amount: 7 });
      });
      await saga.submit();
    });
    assert.equal(crash.status, 'failed');
    assert.deepEqual(onlyOp(crash.deliveredBeforeKill, 'compensate'), expectCounts(branches, ['compensate'], []), 'no compensation went out before the kill');
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['action', 'compensate'], { '03/action': 0, '03/compensate': 0 }));
    assert.equal(participants[0].balance(gid) + participants[1].balance(gid), 0, 'the ledgers net to zero');
  });

  test('saga killed right after it succeeded stays succeeded and calls nothing again', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 2);
    const ops = ['action', 'compensate'] as const;
    const gid = newGid();
    const crash = await crashAndRecover(t, 'after-persist:succeeded/done', gid, branches, ops, async (coordinator) => {
      const saga = coordinator.client.saga({ gid, ...txOptions });
      for (const placed of branches) saga.add(placed.participant.urlFor('action'), placed.participant.urlFor('compensate'), { amount: 7 });
      await saga.submit();
    });
    assert.equal(crash.status, 'succeeded');
    assert.deepEqual(deliveryCounts(gid, branches, ops), crash.deliveredBeforeKill, 'no call after the restart');
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['action']));
  });

  test('tcc killed right after submit is durable confirms every branch once', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 2);
    const ops = ['try', 'confirm', 'cancel'] as const;
    const gid = newGid();
    const crash = await crashAndRecover(t, 'after-persist:submitted/confirm', gid, branches, ops, async (coordinator) => {
      const tcc = await coordinator.client.beginTcc({ gid, timeoutToFailMs: 20_000, ...txOptions });
      for (const placed of branches) {
        await tcc.callBranch({ amount: 4 }, placed.participant.urlFor('try'), placed.participant.urlFor('confirm'), placed.participant.urlFor('cancel'));
      }
      // The failpoint fires between the durable submit and its answer: the app sees a broken
      // connection and does not know the outcome, which the long poll then tells it.
      await tcc.submit();
      throw new Error('submit was answered although the failpoint should have killed the coordinator first');
    });
    assert.equal(crash.status, 'succeeded');
    assert.deepEqual(onlyOp(crash.deliveredBeforeKill, 'confirm'), expectCounts(branches, ['confirm'], []), 'no confirm went out before the kill');
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['try', 'confirm']));
  });
});
