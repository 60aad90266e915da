// Several coordinators, one store: three real `tandem serve` processes on PostgreSQL, then on
// Redis, with hundreds of sagas and TCC transactions in flight. One is killed with SIGKILL
// while the others keep taking requests; every acknowledged transaction must end, each effect
// must be applied once in the participants' ledgers, and no op may be worked on by two
// instances at the same time.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { TandemApiError, TandemClient, TccTransaction } from '../src/sdk/client.js';
import { ChildCoordinator, isConnectionError } from './support/child-coordinator.js';
import { startLedgerParticipants, type LedgerParticipant } from './support/ledger-participant.js';
import { requireService, services } from './support/services.js';
import { sharedStoreBackends } from './support/shared-stores.js';
import { TcpProxy } from './support/tcp-proxy.js';

const runId = randomBytes(4).toString('hex');
const pgSchema = `tandem_cluster_${runId}`;
const redisPrefix = `tandem-cluster:${runId}:`;

const clusterEnv = {
  TANDEM_RECOVERY_INTERVAL_MS: '100',
  TANDEM_HEARTBEAT_INTERVAL_MS: '200',
  TANDEM_INSTANCE_TTL_MS: '1000',
  TANDEM_LEASE_MS: '1500',
};

const backends = sharedStoreBackends(pgSchema, redisPrefix);

interface Placed {
  gid: string;
  mode: 'saga' | 'tcc';
  refuses: boolean;
  /** For TCC: whether the app's own flow finished (submit or abort answered). */
  appOutcome?: 'submitted' | 'aborted' | 'cut';
}

async function startCluster(t: TestContext, storeUrl: string, count: number): Promise<ChildCoordinator[]> {
  const coordinators = Array.from({ length: count }, (_, index) => new ChildCoordinator({ storeUrl, instanceId: `c${index + 1}`, env: clusterEnv }));
  t.after(() => Promise.all(coordinators.map((coordinator) => coordinator.dispose())));
  for (const coordinator of coordinators) await coordinator.start();
  return coordinators;
}

async function submitSaga(client: TandemClient, participants: LedgerParticipant[], index: number, refuses = index % 4 === 0): Promise<Placed | null> {
  const gid = `saga-${runId}-${index}`;
  const [first, second] = participants;
  try {
    await client.create({
      gid,
      mode: 'saga',
      retryIntervalMs: 50,
      branches: [
        { action: first.urlFor('action'), compensate: first.urlFor('compensate'), payload: { amount: 3 } },
        { action: second.urlFor('action', { refuse: refuses }), compensate: second.urlFor('compensate'), payload: { amount: 5 } },
      ],
    });
    return { gid, mode: 'saga', refuses };
  } catch (error) {
    if (isConnectionError(error)) return null; // never acknowledged: it may or may not exist
    throw error;
  }
}

async function runTcc(client: TandemClient, participants: LedgerParticipant[], index: number): Promise<Placed | null> {
  const gid = `tcc-${runId}-${index}`;
  const refuses = index % 5 === 0;
  const [first, second] = participants;
  try {
    await client.create({ gid, mode: 'tcc', timeoutToFailMs: 8000, retryIntervalMs: 50 });
  } catch (error) {
    if (isConnectionError(error)) return null;
    throw error;
  }
  const placed: Placed = { gid, mode: 'tcc', refuses, appOutcome: 'cut' };
  try {
    const tcc = new TccTransaction(client, gid);
    try {
      await tcc.callBranch({ amount: 2 }, first.urlFor('try'), first.urlFor('confirm'), first.urlFor('cancel'));
      await tcc.callBranch({ amount: 7 }, second.urlFor('try', { refuse: refuses }), second.urlFor('confirm'), second.urlFor('cancel'));
    } catch (error) {
      if (isConnectionError(error) || error instanceof TandemApiError) throw error;
      await client.abort(gid);
      placed.appOutcome = 'aborted';
      return placed;
    }
    await client.submit(gid);
    placed.appOutcome = 'submitted';
  } catch (error) {
    // The instance died or was busy mid-flow (503), or the deadline already cancelled the
    // transaction (409): either way the coordinator ends it without the app.
    const tolerated = isConnectionError(error) || (error instanceof TandemApiError && (error.status === 503 || error.status === 409));
    if (!tolerated) throw error;
  }
  return placed;
}

function checkLedgers(placed: Placed, status: string, participants: LedgerParticipant[]): void {
  const [first, second] = participants;
  const ops = placed.mode === 'saga' ? { forward: 'action', undo: 'compensate', commit: null } : { forward: 'try', undo: 'cancel', commit: 'confirm' };
  for (const [participant, branchId] of [[first, '01'], [second, '02']] as const) {
    const forward = participant.effects(placed.gid, branchId, ops.forward);
    const undo = participant.effects(placed.gid, branchId, ops.undo);
    assert.ok(forward <= 1 && undo <= 1, `${placed.gid}/${branchId}: an effect applied twice (forward ${forward}, undo ${undo})`);
    if (status === 'succeeded') {
      assert.equal(forward, 1, `${placed.gid}/${branchId}: succeeded without its ${ops.forward}`);
      assert.equal(undo, 0, `${placed.gid}/${branchId}: succeeded but undone`);
      if (ops.commit) assert.equal(participant.effects(placed.gid, branchId, ops.commit), 1, `${placed.gid}/${branchId}: confirm not applied once`);
    } else {
      assert.equal(forward, undo, `${placed.gid}/${branchId}: failed but ${ops.forward} ${forward} vs ${ops.undo} ${undo}`);
      if (ops.commit) assert.equal(participant.effects(placed.gid, branchId, ops.commit), 0, `${placed.gid}/${branchId}: failed yet confirmed`);
    }
  }
}

describe('several coordinators on one store', () => {
  for (const backend of backends) {
    test(`three coordinators on ${backend.name}: one killed mid-run, every transaction ends once`, { timeout: 180_000 }, async (t) => {
      if (!(await requireService(t, backend.service))) return;
      const storeUrl = await backend.url();
      const participants = await startLedgerParticipants(t, 2);
      const coordinators = await startCluster(t, storeUrl, 3);
      const [victim, ...survivors] = coordinators;

      let effectsSeen = 0;
      let killed: Promise<unknown> | null = null;
      const firstWave = 240;
      for (const participant of participants) {
        participant.onApplied(() => {
          effectsSeen += 1;
          // Kill once a fair share of the first wave has shown effects: mid-flight by count, not by time.
          if (!killed && effectsSeen >= firstWave / 2) killed = victim.kill();
        });
      }

      const work: Array<Promise<Placed | null>> = [];
      for (let index = 0; index < firstWave; index++) {
        const client = coordinators[index % 3].client;
        work.push(index % 3 === 2 ? runTcc(client, participants, index) : submitSaga(client, participants, index));
      }
      const firstResults = await Promise.all(work);
      await (killed ?? victim.kill());
      // Keep submitting to the survivors while the victim's share moves over.
      const secondWave: Array<Promise<Placed | null>> = [];
      for (let index = firstWave; index < firstWave + 90; index++) {
        const client = survivors[index % 2].client;
        secondWave.push(index % 3 === 2 ? runTcc(client, participants, index) : submitSaga(client, participants, index));
      }
      const placed = [...firstResults, ...(await Promise.all(secondWave))].filter((item): item is Placed => item !== null);
      assert.ok(placed.length >= 250, `enough transactions were acknowledged (${placed.length})`);

      const reader = survivors[0].client;
      const ended = await Promise.all(placed.map((item) => reader.waitResult(item.gid, { timeoutMs: 60_000 })));
      const stuck = ended.filter((tx) => tx.status !== 'succeeded' && tx.status !== 'failed');
      assert.deepEqual(stuck.map((tx) => `${tx.gid}:${tx.status}`), [], 'every acknowledged transaction ended');

      for (const [index, item] of placed.entries()) {
        const status = ended[index].status;
        if (item.refuses) assert.equal(status, 'failed', `${item.gid} had a refusing branch`);
        if (item.mode === 'saga' && !item.refuses) assert.equal(status, 'succeeded', `${item.gid} should succeed`);
        if (item.mode === 'tcc' && item.appOutcome === 'submitted') assert.equal(status, 'succeeded', `${item.gid} was submitted`);
        checkLedgers(item, status, participants);
      }
      // The victim's unfinished work was taken over: some of its transactions got calls from survivors.
      const victimGids = firstResults.filter((item, index): item is Placed => item !== null && index % 3 === 0).map((item) => item.gid);
      const takenOver = victimGids.filter((gid) =>
        participants.some((participant) => participant.callersOf(gid).some((caller) => caller !== 'c1' && caller !== '')),
      );
      assert.ok(takenOver.length > 0, 'survivors finished some of the killed instance\'s transactions');
      t.diagnostic(`${backend.name}: ${takenOver.length} of the killed instance's ${victimGids.length} transactions finished by survivors`);
      const overlaps = participants.reduce((sum, participant) => sum + participant.overlaps, 0);
      assert.equal(overlaps, 0, 'no op was worked on by two coordinator instances at once');
      const byStatus = ended.reduce<Record<string, number>>((counts, tx) => ({ ...counts, [tx.status]: (counts[tx.status] ?? 0) + 1 }), {});
      t.diagnostic(`${backend.name}: ${placed.length} acknowledged, ${JSON.stringify(byStatus)}`);
    });
  }

  for (const backend of backends) {
    test(`${backend.name} going away: 503 while it is down, and the coordinator recovers by itself`, { timeout: 60_000 }, async (t) => {
      if (!(await requireService(t, backend.service))) return;
      const target = services[backend.service];
      const proxy = await new TcpProxy({ host: target.host, port: target.port }).start();
      t.after(() => proxy.stop());
      const direct = new URL(await backend.url());
      direct.port = String(proxy.port);
      const [coordinator] = await startCluster(t, direct.toString(), 1);
      const participants = await startLedgerParticipants(t, 2);
      const before = await submitSaga(coordinator.client, participants, 100_000, false);
      assert.ok(before);
      assert.equal((await coordinator.client.waitResult(before.gid, { timeoutMs: 30_000 })).status, 'succeeded');

      await proxy.stop();
      const refused = await submitSaga(coordinator.client, participants, 100_001, false).then(
        () => null,
        (error: unknown) => error,
      );
      assert.ok(refused instanceof TandemApiError, `a request while the store is down fails with a problem, got ${String(refused)}`);
      assert.equal(refused.status, 503);
      assert.match(JSON.stringify(refused.problem), /store is unavailable/);

      await proxy.start();
      // Reconnection is the coordinator's own business: retry the same request until it lands.
      let after: Placed | null = null;
      for (let attempt = 0; attempt < 100 && !after; attempt++) {
        after = await submitSaga(coordinator.client, participants, 100_002 + attempt, false).catch((error: unknown) => {
          if (error instanceof TandemApiError && error.status === 503) return null;
          throw error;
        });
        if (!after) await new Promise((resolve) => setTimeout(resolve, 100)); // bounded back-off between retries
      }
      assert.ok(after, 'the coordinator took requests again once the store was back');
      assert.equal((await coordinator.client.waitResult(after.gid, { timeoutMs: 30_000 })).status, 'succeeded');
    });
  }

  test('an unreachable or malformed store is a clear error at start', async (t) => {
    const bad = new ChildCoordinator({ storeUrl: 'postgres://postgres@127.0.0.1:1/test', env: { TANDEM_STORE_CONNECT_TIMEOUT_MS: '1000' } });
    t.after(() => bad.dispose());
    await assert.rejects(bad.start(), /cannot open PostgreSQL store/);
    const garbled = new ChildCoordinator({ storeUrl: 'mongodb://x' });
    t.after(() => garbled.dispose());
    await assert.rejects(garbled.start(), /not understood/);
  });
});
