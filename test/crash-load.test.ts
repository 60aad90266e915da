// Kill -9 with hundreds of transactions in flight. 360 sagas of three branches (one branch on
// each of three participants), in two waves; a quarter refuse at branch 02 and a quarter at
// branch 03. Once a third of them have ended (counted from participant events, not time) the
// coordinator is killed with SIGKILL and restarted. Then: every saga whose create was
// acknowledged exists and ends as its script says; succeeded ones applied every action once
// and compensated nothing; failed ones compensated every applied action once and each
// ledger nets to zero; a saga whose create was cut off either never existed (and touched no
// participant) or ends just as correctly.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { TandemApiError } from '../src/sdk/client.js';
import { isConnectionError, startChildCoordinator, type ChildCoordinator } from './support/child-coordinator.js';
import { place, startLedgerParticipants, type AppliedEffect, type LedgerParticipant, type Placed } from './support/ledger-participant.js';

/** Created and acknowledged before any branch runs: hundreds in flight at the kill. */
const firstWaveCount = 300;
/** Created just before the kill: some are cut off by it. */
const secondWaveCount = 60;
const branchCount = 3;
const resultWaitMs = 30_000;
/** Calls held at the gate wait for the whole first wave; the timeout leaves them room. */
const txOptions = { requestTimeoutMs: 3000, retryIntervalMs: 20 };

/** Which branch refuses its action, if any: the script each saga follows. */
type Script = { refusingBranchId: string | null };

interface PlannedSaga {
  gid: string;
  amount: number;
  script: Script;
}

function plan(): PlannedSaga[] {
  const runId = randomUUID().slice(0, 8);
  return Array.from({ length: firstWaveCount + secondWaveCount }, (_, index) => ({
    gid: `load-${runId}-${index}`,
    amount: index + 1,
    script: { refusingBranchId: index % 4 === 0 ? '02' : index % 4 === 1 ? '03' : null },
  }));
}

function submit(coordinator: ChildCoordinator, branches: Placed[], saga: PlannedSaga): Promise<unknown> {
  const builder = coordinator.client.saga({ gid: saga.gid, ...txOptions });
  for (const placed of branches) {
    const refuse = placed.branchId === saga.script.refusingBranchId;
    builder.add(placed.participant.urlFor('action', { refuse }), placed.participant.urlFor('compensate'), { amount: saga.amount });
  }
  return builder.submit();
}

/** The effect that comes last in a saga's script: its end is at most one store write away. */
function isLastEffect(effect: AppliedEffect, byGid: Map<string, PlannedSaga>): boolean {
  const saga = byGid.get(effect.gid);
  if (!saga) return false;
  if (saga.script.refusingBranchId === null) return effect.op === 'action' && effect.branchId === String(branchCount).padStart(2, '0');
  return effect.op === 'compensate' && effect.branchId === '01';
}

/** Resolves once `count` sagas have applied their last effect. */
function whenEnded(participants: LedgerParticipant[], byGid: Map<string, PlannedSaga>, count: number): Promise<void> {
  return new Promise((resolve) => {
    let ended = 0;
    for (const participant of participants) {
      participant.onApplied((effect) => {
        if (isLastEffect(effect, byGid) && ++ended === count) resolve();
      });
    }
  });
}

/** What is wrong with one saga's end state; empty when it ended as its script says. */
function problemsOf(saga: PlannedSaga, status: string, branches: Placed[]): string[] {
  const problems: string[] = [];
  const refusing = saga.script.refusingBranchId;
  const expectedStatus = refusing === null ? 'succeeded' : 'failed';
  if (status !== expectedStatus) problems.push(`status ${status}, expected ${expectedStatus}`);
  let balance = 0;
  for (const { participant, branchId } of branches) {
    const actionRan = refusing === null || branchId < refusing;
    const expected = { action: actionRan ? 1 : 0, compensate: actionRan && refusing !== null ? 1 : 0 };
    for (const op of ['action', 'compensate'] as const) {
      const effects = participant.effects(saga.gid, branchId, op);
      if (effects !== expected[op]) problems.push(`${branchId}/${op} applied ${effects} times, expected ${expected[op]}`);
    }
    if (refusing !== null && branchId > refusing && participant.deliveries(saga.gid, branchId, 'action') > 0) {
      problems.push(`${branchId}/action was called after ${refusing} refused`);
    }
    balance += participant.balance(saga.gid);
  }
  const expectedBalance = refusing === null ? branchCount * saga.amount : 0;
  if (balance !== expectedBalance) problems.push(`ledgers sum to ${balance}, expected ${expectedBalance}`);
  return problems;
}

async function statusAfterRestart(coordinator: ChildCoordinator, gid: string): Promise<string | 'absent'> {
  try {
    return (await coordinator.client.waitResult(gid, { timeoutMs: resultWaitMs })).status;
  } catch (error) {
    if (error instanceof TandemApiError && error.status === 404) return 'absent';
    throw error;
  }
}

test('kill -9 with hundreds of sagas in flight loses nothing acknowledged and applies every effect once', { timeout: 120_000 }, async (t) => {
  const participants = await startLedgerParticipants(t, branchCount);
  const branches = place(participants, branchCount);
  const sagas = plan();
  const firstWave = sagas.slice(0, firstWaveCount);
  const secondWave = sagas.slice(firstWaveCount);
  const byGid = new Map(sagas.map((saga) => [saga.gid, saga]));
  const thirdEnded = whenEnded(participants, byGid, Math.floor(sagas.length / 3));
  const coordinator = await startChildCoordinator(t);

  // The first wave is acknowledged while the participants hold every call at their gate, so
  // all of it is in flight when the gate opens. The second wave starts once a third of all
  // sagas have ended, and the kill comes as soon as its first create is acknowledged, so the
  // rest of it is cut off at every stage: not yet sent, received, stored but not answered.
  for (const participant of participants) participant.closeGate();
  const firstOutcomes = await Promise.allSettled(firstWave.map((saga) => submit(coordinator, branches, saga)));
  for (const participant of participants) participant.openGate();
  await thirdEnded;
  const secondCreates = secondWave.map((saga) => submit(coordinator, branches, saga));
  // Settled from the start: the kill rejects some of them while the test awaits other things.
  const secondOutcomesPromise = Promise.allSettled(secondCreates);
  await Promise.any(secondCreates);
  const exit = await coordinator.kill();
  assert.equal(exit.signal, 'SIGKILL');
  const outcomes = [...firstOutcomes, ...(await secondOutcomesPromise)];

  const acknowledged = new Set<string>();
  outcomes.forEach((outcome, index) => {
    if (outcome.status === 'fulfilled') acknowledged.add(sagas[index].gid);
    else if (!isConnectionError(outcome.reason)) throw outcome.reason;
  });
  const doneBeforeRestart = sagas.filter((saga) => isScriptDone(saga, branches)).length;

  await coordinator.restart();
  const statuses = await Promise.all(sagas.map((saga) => statusAfterRestart(coordinator, saga.gid)));

  const problems: string[] = [];
  let redelivered = 0;
  let storedWithoutAnswer = 0;
  sagas.forEach((saga, index) => {
    const status = statuses[index];
    if (status === 'absent') {
      if (acknowledged.has(saga.gid)) problems.push(`${saga.gid}: acknowledged but lost`);
      if (participants.some((participant) => participant.sawGid(saga.gid))) problems.push(`${saga.gid}: never stored, yet a participant was called`);
      return;
    }
    if (!acknowledged.has(saga.gid)) storedWithoutAnswer += 1;
    for (const problem of problemsOf(saga, status, branches)) problems.push(`${saga.gid}: ${problem}`);
    redelivered += countRedeliveries(saga, branches);
  });
  t.diagnostic(
    `acknowledged ${acknowledged.size}/${sagas.length} (${storedWithoutAnswer} more stored without an answer); ` +
      `last effect applied before the restart ${doneBeforeRestart}; calls delivered again ${redelivered}`,
  );
  assert.deepEqual(problems, []);
  assert.deepEqual(coordinator.errorLogs(), [], 'the coordinator logged no errors');
  assert.equal(firstWave.filter((saga) => acknowledged.has(saga.gid)).length, firstWave.length, 'the whole first wave was acknowledged before the kill');
});

/** True when the participants already hold every effect the saga's script asks for. */
function isScriptDone(saga: PlannedSaga, branches: Placed[]): boolean {
  const last = saga.script.refusingBranchId === null ? branches[branches.length - 1] : branches[0];
  const op = saga.script.refusingBranchId === null ? 'action' : 'compensate';
  return last.participant.effects(saga.gid, last.branchId, op) === 1;
}

/** Calls that reached a participant more than once for this saga: the crash's re-deliveries. */
function countRedeliveries(saga: PlannedSaga, branches: Placed[]): number {
  let extra = 0;
  for (const { participant, branchId } of branches) {
    for (const op of ['action', 'compensate']) extra += Math.max(0, participant.deliveries(saga.gid, branchId, op) - 1);
  }
  return extra;
}
