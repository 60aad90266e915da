// XA crashes between prepare and commit, on the real PostgreSQL and MariaDB: a participant
// killed with SIGKILL after its action prepared, a coordinator killed right after its commit
// decision became durable, and a participant that was down when the coordinator decided and
// that resolves its in-doubt xids itself (recoverInDoubt) when it comes back. Every test
// moves money from a PostgreSQL account to a MariaDB account and checks at the end that the
// outcome happened exactly once, the total is conserved and nothing with this file's xid
// prefix is left prepared.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test, type TestContext } from 'node:test';
import type { XaTransaction } from '../src/sdk/client.js';
import { BusinessFailure, createParticipant, nodeHttpHandler } from '../src/sdk/participant.js';
import { coordinatorStatusOf } from '../src/sdk/xa/index.js';
import { isConnectionError, startChildCoordinator } from './support/child-coordinator.js';
import { startCoordinator, type TestCoordinator } from './support/coordinator.js';
import { requirePostgresPreparedTransactions, requireService } from './support/services.js';
import { XaChildParticipant } from './support/xa-child.js';
import { isMove, openXaFixture, xaNames, type XaFixture } from './support/xa-fixtures.js';

const testTimeoutMs = 90_000;
const resultWaitMs = 30_000;
/** Small intervals so that retries after a restart come quickly. */
const txOptions = { requestTimeoutMs: 2000, retryIntervalMs: 20 };
/** Caps the coordinator's backoff while a participant is down, so its retry soon follows the restart. */
const coordinatorLimits = { retryIntervalMsMax: 200 };
const startBalance = 100;
const moved = 30;

const names = { postgres: xaNames('crash'), mariadb: xaNames('crash') };
let fixtures: { pg: XaFixture; maria: XaFixture } | undefined;

/** Both servers and this file's tables; skips (or fails in CI) without the servers. */
async function ready(t: TestContext): Promise<{ pg: XaFixture; maria: XaFixture } | undefined> {
  if (!(await requirePostgresPreparedTransactions(t)) || !(await requireService(t, 'mariadb'))) return undefined;
  fixtures ??= { pg: await openXaFixture('postgres', names.postgres), maria: await openXaFixture('mariadb', names.mariadb) };
  return fixtures;
}

after(async () => {
  if (!fixtures) return;
  await fixtures.pg.close();
  await fixtures.maria.close();
});

let pairCount = 0;
async function openPair(both: { pg: XaFixture; maria: XaFixture }): Promise<{ from: string; to: string }> {
  pairCount += 1;
  const pair = { from: `pg-${pairCount}`, to: `maria-${pairCount}` };
  await both.pg.open(pair.from, startBalance);
  await both.maria.open(pair.to, startBalance);
  return pair;
}

/** Both actions: take `moved` from the PostgreSQL account, give it to the MariaDB one. */
async function moveMoney(xa: XaTransaction, baseUrl: string, pair: { from: string; to: string }): Promise<void> {
  await xa.callBranch({ account: pair.from, amount: -moved }, `${baseUrl}/pg/xa`);
  await xa.callBranch({ account: pair.to, amount: moved }, `${baseUrl}/maria/xa`);
}

async function preparedCounts(both: { pg: XaFixture; maria: XaFixture }): Promise<[number, number]> {
  return [(await both.pg.rawPrepared()).length, (await both.maria.rawPrepared()).length];
}

/** Balances as the outcome requires (moved once or not at all), the sum conserved, nothing prepared. */
async function assertOutcome(both: { pg: XaFixture; maria: XaFixture }, pair: { from: string; to: string }, committed: boolean): Promise<void> {
  const balances = [await both.pg.balance(pair.from), await both.maria.balance(pair.to)];
  const expected = committed ? [startBalance - moved, startBalance + moved] : [startBalance, startBalance];
  assert.deepEqual(balances, expected, committed ? 'moved exactly once' : 'not moved');
  assert.equal(balances[0] + balances[1], 2 * startBalance, 'the total is conserved');
  assert.deepEqual(await preparedCounts(both), [0, 0], 'nothing with this prefix is left prepared');
}

async function startInProcessCoordinator(t: TestContext): Promise<TestCoordinator> {
  const coordinator = await startCoordinator({ limits: coordinatorLimits });
  t.after(() => coordinator.close());
  return coordinator;
}

async function startChildParticipant(t: TestContext): Promise<XaChildParticipant> {
  const participant = new XaChildParticipant(names);
  t.after(() => participant.dispose());
  await participant.start();
  return participant;
}

/** The XA handlers served from this process, for tests where only the coordinator crashes. */
async function startInProcessParticipant(t: TestContext, both: { pg: XaFixture; maria: XaFixture }): Promise<string> {
  const actionOf = (fixture: XaFixture) =>
    fixture.xa.handler(async (tx, request) => {
      if (!isMove(request.body)) throw new BusinessFailure('payload must be {account, amount}');
      await fixture.move(tx, request.body);
    });
  const server = http.createServer(nodeHttpHandler(createParticipant({ '/pg/xa': actionOf(both.pg), '/maria/xa': actionOf(both.maria) })));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('XA crashes between prepare and commit', { timeout: testTimeoutMs * 5 }, () => {
  test('participant killed after prepare: the prepared work survives, the retried commit lands once', { timeout: testTimeoutMs }, async (t) => {
    const both = await ready(t);
    if (!both) return;
    const coordinator = await startInProcessCoordinator(t);
    const participant = await startChildParticipant(t);
    const pair = await openPair(both);
    const xa = await coordinator.client.beginXa(txOptions);
    await moveMoney(xa, participant.url, pair);
    await participant.kill();
    assert.deepEqual(await preparedCounts(both), [1, 1], 'both prepared transactions survive the process');
    // The decision is durable; the commit calls fail while the participant is down.
    await xa.submit();
    await participant.start();
    const ended = await coordinator.client.waitResult(xa.gid, { timeoutMs: resultWaitMs });
    assert.equal(ended.status, 'succeeded', participant.stderrText);
    await assertOutcome(both, pair, true);
  });

  test('coordinator killed right after the commit decision is durable: the restart commits every branch', { timeout: testTimeoutMs }, async (t) => {
    const both = await ready(t);
    if (!both) return;
    const failpoint = 'after-persist:submitted/commit';
    const participantUrl = await startInProcessParticipant(t, both);
    const coordinator = await startChildCoordinator(t, { failpoints: failpoint }, { env: { TANDEM_RETRY_INTERVAL_MS_MAX: String(coordinatorLimits.retryIntervalMsMax) } });
    const pair = await openPair(both);
    const xa = await coordinator.client.beginXa(txOptions);
    await moveMoney(xa, participantUrl, pair);
    try {
      await xa.submit();
    } catch (error) {
      if (!isConnectionError(error)) throw error;
    }
    const exit = await coordinator.waitForExit();
    assert.equal(exit.signal, 'SIGKILL', `the coordinator should have killed itself; stderr:\n${coordinator.stderrText}`);
    assert.deepEqual(coordinator.durableState(xa.gid), { status: 'submitted', phase: 'commit' });
    assert.deepEqual(await preparedCounts(both), [1, 1], 'no commit was sent before the kill');
    await coordinator.restart();
    const ended = await coordinator.client.waitResult(xa.gid, { timeoutMs: resultWaitMs });
    assert.equal(ended.status, 'succeeded');
    assert.deepEqual(coordinator.errorLogs(), []);
    await assertOutcome(both, pair, true);
  });

  for (const decision of ['abort', 'submit'] as const) {
    const outcome = decision === 'abort' ? 'rolls back' : 'commits';
    test(`participant down when the coordinator decided (${decision}): its recoverInDoubt ${outcome} by the durable decision`, { timeout: testTimeoutMs }, async (t) => {
      const both = await ready(t);
      if (!both) return;
      const coordinator = await startInProcessCoordinator(t);
      const participant = await startChildParticipant(t);
      const pair = await openPair(both);
      const xa = await coordinator.client.beginXa(txOptions);
      await moveMoney(xa, participant.url, pair);
      await participant.kill();
      const decided = decision === 'abort' ? await xa.abort() : await xa.submit();
      assert.equal(decided.status, decision === 'abort' ? 'aborting' : 'submitted');
      // The coordinator's calls cannot reach the participant; it comes back and resolves its
      // in-doubt xids by asking the coordinator, before it serves anything.
      await participant.start({ recoverFrom: coordinator.url });
      const expected = decision === 'abort' ? { committed: 0, rolledBack: 1, leftInDoubt: 0 } : { committed: 1, rolledBack: 0, leftInDoubt: 0 };
      assert.deepEqual(participant.recovered, { postgres: expected, mariadb: expected }, participant.stderrText);
      await assertOutcome(both, pair, decision === 'submit');
      // The coordinator's retried call then finds the work done and the transaction ends.
      const ended = await coordinator.client.waitResult(xa.gid, { timeoutMs: resultWaitMs });
      assert.equal(ended.status, decision === 'abort' ? 'failed' : 'succeeded');
      await assertOutcome(both, pair, decision === 'submit');
    });
  }

  test('the coordinator status lookup: a gid it never recorded is not-found; a foreign 404 is not', { timeout: testTimeoutMs }, async (t) => {
    const coordinator = await startInProcessCoordinator(t);
    assert.equal(await coordinatorStatusOf(coordinator.url)('never-recorded-gid'), 'not-found');
    const foreign = http.createServer((_request, response) => {
      response.writeHead(404, { 'content-type': 'text/plain' });
      response.end('no such page');
    });
    await new Promise<void>((resolve) => foreign.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => foreign.close(() => resolve())));
    const foreignUrl = `http://127.0.0.1:${(foreign.address() as AddressInfo).port}`;
    await assert.rejects(coordinatorStatusOf(foreignUrl)('any-gid'), /404/);
  });
});
