// XA participants on the real PostgreSQL and MariaDB. First the database level (no
// coordinator): prepare, commit, rollback, their idempotence, a rollback that overtook its
// action, races with an action still running, in-doubt recovery by a given status. Then
// through a real coordinator: money moved between a PostgreSQL and a MariaDB branch by
// submit, undone by abort, by a refusing action and by the deadline.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test, type TestContext } from 'node:test';
import { BranchRefusedError } from '../src/sdk/client.js';
import { BusinessFailure, Ongoing, createParticipant, nodeHttpHandler } from '../src/sdk/participant.js';
import { InvalidXid, type DecisionStatus, type XaLocalResult } from '../src/sdk/xa/index.js';
import { startCoordinator, type TestCoordinator } from './support/coordinator.js';
import { requirePostgresPreparedTransactions, requireService } from './support/services.js';
import { isMove, openXaFixture, testGid, xaBackends, xaBranch, xaNames, type XaBackend, type XaFixture } from './support/xa-fixtures.js';

const testTimeoutMs = 60_000;
const resultWaitMs = 30_000;

/** A promise with its resolve exposed, for handing events between the test and a handler. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((done) => (resolve = done));
  return { promise, resolve };
}

/** One fixture per backend for this file, created on first use and dropped at the end. */
const fixtures = new Map<XaBackend, Promise<XaFixture>>();
const names = { postgres: xaNames('unit'), mariadb: xaNames('unit') };

function fixtureFor(backend: XaBackend): Promise<XaFixture> {
  let fixture = fixtures.get(backend);
  if (!fixture) {
    fixture = openXaFixture(backend, names[backend]);
    fixtures.set(backend, fixture);
  }
  return fixture;
}

after(async () => {
  for (const fixture of fixtures.values()) await (await fixture).close();
});

/** Skips (or fails in CI) without the server; otherwise the backend's fixture. */
async function use(t: TestContext, backend: XaBackend): Promise<XaFixture | undefined> {
  if (!(await requireService(t, backend))) return undefined;
  if (backend === 'postgres' && !(await requirePostgresPreparedTransactions(t))) return undefined;
  return fixtureFor(backend);
}

let accountCount = 0;
async function newAccount(fixture: XaFixture, balance: number): Promise<string> {
  accountCount += 1;
  const account = `acct-${accountCount}`;
  await fixture.open(account, balance);
  return account;
}

async function assertNothingPrepared(fixture: XaFixture): Promise<void> {
  assert.deepEqual(await fixture.rawPrepared(), [], 'no prepared transaction with this file\'s prefix is left');
}

for (const backend of xaBackends) {
  describe(`XA participant on ${backend} (database level)`, { timeout: testTimeoutMs * 4 }, () => {
    test('local prepares: visible as prepared, invisible to others until commit; commit applies once', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      const account = await newAccount(fixture, 100);
      const gid = testGid('commit');
      const local = await fixture.xa.local(xaBranch(gid, '01', 'action'), async (tx) => {
        await fixture.move(tx, { account, amount: -30 });
        return 'moved';
      });
      assert.deepEqual(local, { applied: true, value: 'moved' });
      assert.equal((await fixture.rawPrepared()).length, 1, 'the server lists the prepared xid');
      assert.deepEqual(
        (await fixture.xa.listPrepared()).map((p) => p.branch),
        [{ gid, branchId: '01' }],
      );
      assert.equal(await fixture.balance(account), 100, 'prepared work is not visible yet');
      assert.equal(await fixture.xa.commit(xaBranch(gid, '01', 'commit')), 'committed');
      assert.equal(await fixture.balance(account), 70);
      assert.equal(await fixture.xa.commit(xaBranch(gid, '01', 'commit')), 'already-committed', 'a repeated commit succeeds');
      const again = await fixture.xa.local(xaBranch(gid, '01', 'action'), async (tx) => fixture.move(tx, { account, amount: -30 }));
      assert.deepEqual(again, { applied: false, reason: 'duplicate' }, 'a repeated action after the commit is a duplicate');
      assert.equal(await fixture.balance(account), 70, 'applied exactly once');
      await assertNothingPrepared(fixture);
    });

    test('rollback discards the prepared work; repeating it is harmless; a late action is refused', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      const account = await newAccount(fixture, 100);
      const gid = testGid('rollback');
      await fixture.xa.local(xaBranch(gid, '01', 'action'), (tx) => fixture.move(tx, { account, amount: -30 }));
      assert.equal(await fixture.xa.rollback(xaBranch(gid, '01', 'rollback')), 'rolled-back');
      assert.equal(await fixture.xa.rollback(xaBranch(gid, '01', 'rollback')), 'already-rolled-back');
      const late = await fixture.xa.local(xaBranch(gid, '01', 'action'), (tx) => fixture.move(tx, { account, amount: -30 }));
      assert.deepEqual(late, { applied: false, reason: 'hanging' });
      assert.equal(await fixture.balance(account), 100);
      await assertNothingPrepared(fixture);
    });

    test('a rollback that overtook its action makes the later action fail, and nothing stays prepared', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      const account = await newAccount(fixture, 100);
      const gid = testGid('hanging');
      assert.equal(await fixture.xa.rollback(xaBranch(gid, '01', 'rollback')), 'not-prepared');
      let ran = false;
      const late = await fixture.xa.local(xaBranch(gid, '01', 'action'), async (tx) => {
        ran = true;
        await fixture.move(tx, { account, amount: -30 });
      });
      assert.deepEqual(late, { applied: false, reason: 'hanging' });
      assert.equal(ran, false, 'the business function never ran');
      // Through the handler the same refusal is a business failure (HTTP 409).
      const participant = createParticipant({
        '/xa': fixture.xa.handler(async (tx, request) => {
          if (!isMove(request.body)) throw new BusinessFailure('payload must be {account, amount}');
          await fixture.move(tx, request.body);
        }),
      });
      const answer = await participant.handle({
        method: 'POST',
        url: `/xa?gid=${gid}&branch_id=01&op=action&trans_type=xa`,
        headers: { 'content-type': 'application/json' },
        rawBody: JSON.stringify({ account, amount: -30 }),
      });
      assert.equal(answer.status, 409, answer.body);
      assert.equal(await fixture.balance(account), 100);
      await assertNothingPrepared(fixture);
    });

    test('an error inside the action rolls back its work and its barrier row; a retry can prepare', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      const account = await newAccount(fixture, 100);
      const gid = testGid('error');
      await assert.rejects(
        fixture.xa.local(xaBranch(gid, '01', 'action'), async (tx) => {
          await fixture.move(tx, { account, amount: -30 });
          throw new Error('boom after the update');
        }),
        /boom/,
      );
      await assert.rejects(fixture.xa.local(xaBranch(gid, '01', 'action'), (tx) => fixture.move(tx, { account, amount: -300 })), BusinessFailure);
      await assertNothingPrepared(fixture);
      assert.equal(await fixture.balance(account), 100);
      const retried = await fixture.xa.local(xaBranch(gid, '01', 'action'), (tx) => fixture.move(tx, { account, amount: -30 }));
      assert.equal(retried.applied, true);
      assert.equal(await fixture.xa.commit(xaBranch(gid, '01', 'commit')), 'committed');
      assert.equal(await fixture.balance(account), 70);
    });

    test('a repeated action while the first is prepared is a duplicate and prepares nothing new', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      const account = await newAccount(fixture, 100);
      const gid = testGid('dup');
      await fixture.xa.local(xaBranch(gid, '01', 'action'), (tx) => fixture.move(tx, { account, amount: -10 }));
      const again = await fixture.xa.local(xaBranch(gid, '01', 'action'), (tx) => fixture.move(tx, { account, amount: -10 }));
      assert.deepEqual(again, { applied: false, reason: 'duplicate' });
      assert.equal((await fixture.rawPrepared()).length, 1);
      assert.equal(await fixture.xa.commit(xaBranch(gid, '01', 'commit')), 'committed');
      assert.equal(await fixture.balance(account), 90);
    });

    test('commit or rollback while the action still runs answers ongoing, then lands once it prepared', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      for (const decision of ['commit', 'rollback'] as const) {
        const account = await newAccount(fixture, 100);
        const gid = testGid(`race-${decision}`);
        const updated = deferred();
        const proceed = deferred();
        const running: Promise<XaLocalResult<void>> = fixture.xa.local(xaBranch(gid, '01', 'action'), async (tx): Promise<void> => {
          await fixture.move(tx, { account, amount: -40 });
          updated.resolve();
          await proceed.promise;
        });
        await updated.promise;
        const early = decision === 'commit' ? fixture.xa.commit(xaBranch(gid, '01', 'commit')) : fixture.xa.rollback(xaBranch(gid, '01', 'rollback'));
        await assert.rejects(early, Ongoing, `${decision} must wait for the running action`);
        proceed.resolve();
        assert.equal((await running).applied, true);
        if (decision === 'commit') {
          assert.equal(await fixture.xa.commit(xaBranch(gid, '01', 'commit')), 'committed');
          assert.equal(await fixture.balance(account), 60);
        } else {
          assert.equal(await fixture.xa.rollback(xaBranch(gid, '01', 'rollback')), 'rolled-back');
          assert.equal(await fixture.balance(account), 100);
        }
      }
      await assertNothingPrepared(fixture);
    });

    test('a commit for a branch that never prepared answers success and reports the anomaly', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      const gid = testGid('never');
      const warnings: string[] = [];
      t.mock.method(console, 'warn', (message: string) => warnings.push(message));
      assert.equal(await fixture.xa.commit(xaBranch(gid, '01', 'commit')), 'not-prepared');
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /never prepared/);
    });

    test('xids are validated: unsafe characters and lengths beyond the database limit are refused', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      const quoted = xaBranch("x'; DROP TABLE y; --", '01', 'action');
      await assert.rejects(fixture.xa.local(quoted, async () => undefined), InvalidXid);
      // 64 bytes fit the barrier (128) and PostgreSQL (199 with the prefix) but not MariaDB's gtrid (64 with the prefix).
      const longGid = 'g'.repeat(64);
      if (backend === 'mariadb') {
        await assert.rejects(fixture.xa.local(xaBranch(longGid, '01', 'action'), async () => undefined), /mysqlGtridBytesMax/);
      } else {
        const result = await fixture.xa.local(xaBranch(longGid, '01', 'action'), async () => undefined);
        assert.equal(result.applied, true);
        assert.equal(await fixture.xa.rollback(xaBranch(longGid, '01', 'rollback')), 'rolled-back');
        await assert.rejects(fixture.xa.local(xaBranch('g'.repeat(128), '9'.repeat(60), 'action'), async () => undefined), /postgresXidBytesMax/);
      }
      // A branch that can never have an xid has nothing to roll back: the rollback must not block the coordinator.
      assert.equal(await fixture.xa.rollback(xaBranch("x'y", '01', 'rollback')), 'not-prepared');
      await assertNothingPrepared(fixture);
    });

    test('recoverInDoubt applies each durable decision and leaves undecided ones prepared', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      const statuses: Record<string, DecisionStatus | 'error'> = {
        submitted: 'submitted',
        succeeded: 'succeeded',
        aborting: 'aborting',
        failed: 'failed',
        unknown: 'not-found',
        undecided: 'prepared',
        unreachable: 'error',
      };
      const accounts = new Map<string, string>();
      const gidOf = new Map<string, string>();
      for (const label of Object.keys(statuses)) {
        const account = await newAccount(fixture, 100);
        accounts.set(label, account);
        const gid = testGid(`rec-${label}`);
        gidOf.set(gid, label);
        await fixture.xa.local(xaBranch(gid, '01', 'action'), (tx) => fixture.move(tx, { account, amount: -25 }));
      }
      // A second branch of one gid in the same database: asked about once, both resolved.
      const submittedGid = [...gidOf].find(([, label]) => label === 'submitted')![0];
      const second = await newAccount(fixture, 100);
      await fixture.xa.local(xaBranch(submittedGid, '02', 'action'), (tx) => fixture.move(tx, { account: second, amount: -25 }));
      const asked: string[] = [];
      const errors: string[] = [];
      const counts = await fixture.xa.recoverInDoubt(
        async (gid) => {
          asked.push(gid);
          const status = statuses[gidOf.get(gid) ?? ''];
          if (status === undefined || status === 'error') throw new Error(`coordinator unreachable for ${gid}`);
          return status;
        },
        { onError: (error) => errors.push(String(error)) },
      );
      assert.deepEqual(counts, { committed: 3, rolledBack: 3, leftInDoubt: 2 });
      assert.equal(asked.length, Object.keys(statuses).length, 'one question per gid');
      assert.equal(errors.length, 1);
      const expected: Record<string, number> = { submitted: 75, succeeded: 75, aborting: 100, failed: 100, unknown: 100, undecided: 100, unreachable: 100 };
      for (const [label, account] of accounts) assert.equal(await fixture.balance(account), expected[label], label);
      assert.equal(await fixture.balance(second), 75);
      const left = (await fixture.xa.listPrepared()).map((p) => gidOf.get(p.branch?.gid ?? '')).sort();
      assert.deepEqual(left, ['undecided', 'unreachable']);
      // Once decided, a later pass resolves the rest.
      const later = await fixture.xa.recoverInDoubt(async () => 'failed');
      assert.deepEqual(later, { committed: 0, rolledBack: 2, leftInDoubt: 0 });
      await assertNothingPrepared(fixture);
    });

    test('startRecoveryLoop runs passes until stopped', async (t) => {
      const fixture = await use(t, backend);
      if (!fixture) return;
      const account = await newAccount(fixture, 100);
      const gid = testGid('loop');
      await fixture.xa.local(xaBranch(gid, '01', 'action'), (tx) => fixture.move(tx, { account, amount: -5 }));
      const firstPass = deferred<{ committed: number; rolledBack: number; leftInDoubt: number }>();
      const loop = fixture.xa.startRecoveryLoop(async () => 'succeeded', { intervalMs: 60_000, onPass: (counts) => firstPass.resolve(counts) });
      assert.deepEqual(await firstPass.promise, { committed: 1, rolledBack: 0, leftInDoubt: 0 });
      await loop.stop();
      assert.equal(await fixture.balance(account), 95);
      await assertNothingPrepared(fixture);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Through the coordinator

describe('XA through the coordinator: PostgreSQL and MariaDB branches', { timeout: testTimeoutMs * 6 }, () => {
  let coordinator: TestCoordinator | undefined;
  let server: http.Server | undefined;
  let pgFixture: XaFixture;
  let mariaFixture: XaFixture;
  let participantUrl = '';
  const branchNames = { postgres: xaNames('flow'), mariadb: xaNames('flow') };

  /** Starts everything once; a test without its servers skips before this. */
  async function ready(t: TestContext): Promise<boolean> {
    if (!(await requirePostgresPreparedTransactions(t)) || !(await requireService(t, 'mariadb'))) return false;
    if (coordinator) return true;
    pgFixture = await openXaFixture('postgres', branchNames.postgres);
    mariaFixture = await openXaFixture('mariadb', branchNames.mariadb);
    const action = (fixture: XaFixture) =>
      fixture.xa.handler(async (tx, request) => {
        if (!isMove(request.body)) throw new BusinessFailure('payload must be {account, amount}');
        await fixture.move(tx, request.body);
      });
    const participant = createParticipant({ '/pg/xa': action(pgFixture), '/maria/xa': action(mariaFixture) });
    server = http.createServer(nodeHttpHandler(participant));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    participantUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    coordinator = await startCoordinator();
    return true;
  }

  after(async () => {
    await coordinator?.close();
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server!.close(() => resolve()));
    }
    if (pgFixture) await pgFixture.close();
    if (mariaFixture) await mariaFixture.close();
  });

  let pairCount = 0;
  /** An account on each side: `from` on PostgreSQL, `to` on MariaDB. */
  async function accounts(balance: number): Promise<{ from: string; to: string }> {
    pairCount += 1;
    const from = `pg-${pairCount}`;
    const to = `maria-${pairCount}`;
    await pgFixture.open(from, balance);
    await mariaFixture.open(to, balance);
    return { from, to };
  }

  async function assertBalances(pair: { from: string; to: string }, expected: [number, number]): Promise<void> {
    assert.deepEqual([await pgFixture.balance(pair.from), await mariaFixture.balance(pair.to)], expected);
    assert.deepEqual(await pgFixture.rawPrepared(), []);
    assert.deepEqual(await mariaFixture.rawPrepared(), []);
  }

  const txOptions = { requestTimeoutMs: 2000, retryIntervalMs: 20 };

  test('submit commits both branches: money moves from PostgreSQL to MariaDB', async (t) => {
    if (!(await ready(t))) return;
    const pair = await accounts(100);
    const { gid } = await coordinator!.client.xa({ ...txOptions }, async (xa) => {
      await xa.callBranch({ account: pair.from, amount: -30 }, `${participantUrl}/pg/xa`);
      await xa.callBranch({ account: pair.to, amount: 30 }, `${participantUrl}/maria/xa`);
    });
    const ended = await coordinator!.client.waitResult(gid, { timeoutMs: resultWaitMs });
    assert.equal(ended.status, 'succeeded');
    await assertBalances(pair, [70, 130]);
  });

  test('abort after both actions prepared rolls both back', async (t) => {
    if (!(await ready(t))) return;
    const pair = await accounts(100);
    let gid = '';
    await assert.rejects(
      coordinator!.client.xa({ ...txOptions }, async (xa) => {
        gid = xa.gid;
        await xa.callBranch({ account: pair.from, amount: -30 }, `${participantUrl}/pg/xa`);
        await xa.callBranch({ account: pair.to, amount: 30 }, `${participantUrl}/maria/xa`);
        assert.equal((await pgFixture.rawPrepared()).length + (await mariaFixture.rawPrepared()).length, 2);
        throw new Error('the app changed its mind');
      }),
      /changed its mind/,
    );
    const ended = await coordinator!.client.waitResult(gid, { timeoutMs: resultWaitMs });
    assert.equal(ended.status, 'failed');
    await assertBalances(pair, [100, 100]);
  });

  test('a refusing action makes the app abort; the prepared branch is rolled back', async (t) => {
    if (!(await ready(t))) return;
    const pair = await accounts(100);
    let gid = '';
    await assert.rejects(
      coordinator!.client.xa({ ...txOptions }, async (xa) => {
        gid = xa.gid;
        await xa.callBranch({ account: pair.to, amount: 500 }, `${participantUrl}/maria/xa`);
        // PostgreSQL refuses: the account would go negative.
        await xa.callBranch({ account: pair.from, amount: -500 }, `${participantUrl}/pg/xa`);
      }),
      BranchRefusedError,
    );
    const ended = await coordinator!.client.waitResult(gid, { timeoutMs: resultWaitMs });
    assert.equal(ended.status, 'failed');
    await assertBalances(pair, [100, 100]);
  });

  test('when the deadline passes before submit, the coordinator rolls both back', async (t) => {
    if (!(await ready(t))) return;
    const pair = await accounts(100);
    const xa = await coordinator!.client.beginXa({ ...txOptions, timeoutToFailMs: 1500 });
    try {
      await xa.callBranch({ account: pair.from, amount: -30 }, `${participantUrl}/pg/xa`);
      await xa.callBranch({ account: pair.to, amount: 30 }, `${participantUrl}/maria/xa`);
    } catch {
      // A slow machine may pass the deadline already here; the outcome must be the same.
    }
    // No submit: the app went quiet. The deadline decides.
    const ended = await coordinator!.client.waitResult(xa.gid, { timeoutMs: resultWaitMs });
    assert.equal(ended.status, 'failed');
    await assertBalances(pair, [100, 100]);
  });
});
