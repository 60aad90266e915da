// Crash tests at participant-chosen points: a participant applies an effect, then holds its
// answer; the test kills the coordinator with SIGKILL while the call is open, lets the
// answer go to the dead socket, and restarts the coordinator. The coordinator never heard the
// answer, so it must call again; each participant's ledger must still show the effect once.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { startChildCoordinator, type ChildCoordinator } from './support/child-coordinator.js';
import {
  expectCounts,
  ledgerCounts,
  place,
  startLedgerParticipants,
  type Delivery,
  type LedgerParticipant,
  type Placed,
} from './support/ledger-participant.js';

const testTimeoutMs = 60_000;
const resultWaitMs = 30_000;
/**
 * The kill follows the held call within milliseconds, well inside requestTimeoutMs; were it
 * ever slower, the coordinator would just call again, which the assertions allow.
 */
const txOptions = { requestTimeoutMs: 1000, retryIntervalMs: 20 };

function newGid(): string {
  return `crash-${randomUUID()}`;
}

/**
 * Holds the first delivery of `op` on any participant, starts the transaction, kills the
 * coordinator once that call is open, releases the answer, restarts, and waits for the end.
 * Resolves with the held delivery and the final status.
 */
async function killWhileHeld(
  t: TestContext,
  participants: LedgerParticipant[],
  isHeld: (delivery: Delivery) => boolean,
  begin: (coordinator: ChildCoordinator) => Promise<string>,
): Promise<{ held: Delivery; status: string }> {
  const holds = participants.map((participant) => participant.holdAnswer(isHeld));
  const coordinator = await startChildCoordinator(t);
  const gid = await begin(coordinator);
  const held = await Promise.race(holds.map((hold) => hold.arrived));
  const exit = await coordinator.kill();
  assert.equal(exit.signal, 'SIGKILL');
  for (const hold of holds) hold.release();
  await coordinator.restart();
  const ended = await coordinator.client.waitResult(gid, { timeoutMs: resultWaitMs });
  assert.deepEqual(coordinator.errorLogs(), [], 'the coordinator logged no errors');
  return { held, status: ended.status };
}

function heldParticipant(branches: Placed[], held: Delivery): LedgerParticipant {
  const placed = branches.find((branch) => branch.branchId === held.branchId);
  assert.ok(placed, `held a call for unknown branch ${held.branchId}`);
  return placed.participant;
}

describe('crash while a participant holds its answer, then restart', { timeout: testTimeoutMs * 10 }, () => {
  test('2pc killed during commit commits every participant once', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 2);
    const ops = ['prepare', 'commit', 'rollback'] as const;
    const gid = newGid();
    const { held, status } = await killWhileHeld(t, participants, (delivery) => delivery.gid === gid && delivery.op === 'commit', async (coordinator) => {
      const builder = coordinator.client.twoPhase({ gid, ...txOptions });
      for (const placed of branches) {
        builder.add({ prepare: placed.participant.urlFor('prepare'), commit: placed.participant.urlFor('commit'), rollback: placed.participant.urlFor('rollback') }, { amount: 5 }, placed.branchId);
      }
      return (await builder.submit()).gid;
    });
    assert.equal(status, 'succeeded');
    const participant = heldParticipant(branches, held);
    assert.ok(participant.deliveries(gid, held.branchId, 'commit') >= 2, 'the commit whose answer was lost is delivered again');
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['prepare', 'commit']));
  });

  test('2pc killed during prepare resumes the vote and commits once', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 2);
    const ops = ['prepare', 'commit', 'rollback'] as const;
    const gid = newGid();
    const { held, status } = await killWhileHeld(t, participants, (delivery) => delivery.gid === gid && delivery.op === 'prepare', async (coordinator) => {
      const builder = coordinator.client.twoPhase({ gid, ...txOptions });
      for (const placed of branches) {
        builder.add({ prepare: placed.participant.urlFor('prepare'), commit: placed.participant.urlFor('commit'), rollback: placed.participant.urlFor('rollback') }, { amount: 5 }, placed.branchId);
      }
      return (await builder.submit()).gid;
    });
    assert.equal(status, 'succeeded');
    assert.ok(heldParticipant(branches, held).deliveries(gid, held.branchId, 'prepare') >= 2, 'the prepare whose answer was lost is delivered again');
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['prepare', 'commit']));
  });

  test('saga killed during compensation compensates every applied action once', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 3);
    const ops = ['action', 'compensate'] as const;
    const gid = newGid();
    // Branch 03 refuses; 02 is compensated first (03's is a null compensation), and held.
    const { held, status } = await killWhileHeld(
      t,
      participants,
      (delivery) => delivery.gid === gid && delivery.op === 'compensate' && delivery.branchId === '02',
      async (coordinator) => {
        const saga = coordinator.client.saga({ gid, ...txOptions });
        branches.forEach((placed, index) => {
          saga.add(placed.participant.urlFor('action', { refuse: index === 2 }), placed.participant.urlFor('compensate'), { amount: 7 });
        });
        return (await saga.submit()).gid;
      },
    );
    assert.equal(status, 'failed');
    assert.ok(heldParticipant(branches, held).deliveries(gid, '02', 'compensate') >= 2, 'the compensation whose answer was lost is delivered again');
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['action', 'compensate'], { '03/action': 0, '03/compensate': 0 }));
    assert.equal(participants[0].balance(gid) + participants[1].balance(gid), 0, 'the ledgers net to zero');
  });

  test('tcc killed during confirm confirms every branch once', { timeout: testTimeoutMs }, async (t) => {
    const participants = await startLedgerParticipants(t, 2);
    const branches = place(participants, 2);
    const ops = ['try', 'confirm', 'cancel'] as const;
    const gid = newGid();
    const { held, status } = await killWhileHeld(t, participants, (delivery) => delivery.gid === gid && delivery.op === 'confirm', async (coordinator) => {
      const tcc = await coordinator.client.beginTcc({ gid, timeoutToFailMs: 20_000, ...txOptions });
      for (const placed of branches) {
        await tcc.callBranch({ amount: 4 }, placed.participant.urlFor('try'), placed.participant.urlFor('confirm'), placed.participant.urlFor('cancel'));
      }
      await tcc.submit();
      return gid;
    });
    assert.equal(status, 'succeeded');
    assert.ok(heldParticipant(branches, held).deliveries(gid, held.branchId, 'confirm') >= 2, 'the confirm whose answer was lost is delivered again');
    assert.deepEqual(ledgerCounts(gid, branches, ops), expectCounts(branches, ops, ['try', 'confirm']));
  });
});
