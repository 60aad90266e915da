// Every transaction mode end to end over real HTTP: an in-process coordinator on SQLite and
// scripted participants. Ends are awaited with the result long poll, never with sleeps.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BranchRefusedError, TandemApiError, type TandemClient } from '../src/sdk/client.js';
import type { TxView } from '../src/shared/views.js';
import { closeCoordinator, endOf, startCoordinator, type TestCoordinator } from './support/coordinator.js';
import { ongoing, refuse, serverError, startParticipant, type FakeParticipant, type RecordedCall } from './support/fake-participant.js';

const endWaitMs = 15_000;

let coordinator: TestCoordinator;
let client: TandemClient;

before(async () => {
  coordinator = await startCoordinator();
  client = coordinator.client;
});

after(() => closeCoordinator(coordinator));

const participant = startParticipant;

function ended(gid: string): Promise<TxView> {
  return endOf(client, gid, endWaitMs);
}

function paths(p: FakeParticipant): string[] {
  return p.calls.map((call) => call.path);
}

function indexesOf(p: FakeParticipant, predicate: (call: RecordedCall) => boolean): number[] {
  return p.calls.flatMap((call, index) => (predicate(call) ? [index] : []));
}

/** Every call matching `earlier` was made before any call matching `later`. */
function assertAllBefore(p: FakeParticipant, earlier: string, later: string): void {
  const earlierIndexes = indexesOf(p, (call) => call.path.startsWith(earlier));
  const laterIndexes = indexesOf(p, (call) => call.path.startsWith(later));
  assert.ok(earlierIndexes.length > 0 && laterIndexes.length > 0, `calls to ${earlier} and ${later} were made: ${paths(p).join(' ')}`);
  assert.ok(Math.max(...earlierIndexes) < Math.min(...laterIndexes), `every ${earlier} before any ${later}: ${paths(p).join(' ')}`);
}

async function historyOf(gid: string): Promise<string[]> {
  const view = await client.get(gid);
  assert.ok(view.history, 'GET /v1/transactions/:gid includes the history');
  return view.history.map((entry) => `${entry.status}/${entry.phase}`);
}

describe('saga', () => {
  test('a sequential saga calls each action in order with the DTM protocol, then succeeds', async (t) => {
    const p = await participant(t);
    const tx = await client
      .saga({ branchHeaders: { 'x-trace-id': 'trace-42' } })
      .add(`${p.url}/a1`, `${p.url}/c1`, { sku: 'A1', qty: 2 })
      .add(`${p.url}/a2`, `${p.url}/c2`)
      .add(`${p.url}/a3`, `${p.url}/c3`, [1, 2, 3])
      .submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(paths(p), ['/a1', '/a2', '/a3']);

    const [first, second, third] = p.calls;
    assert.equal(first.method, 'POST');
    assert.deepEqual(JSON.parse(first.body), { sku: 'A1', qty: 2 });
    assert.match(String(first.headers['content-type']), /application\/json/);
    assert.equal(second.method, 'GET', 'a branch without payload is called with GET');
    assert.equal(second.body, '');
    assert.deepEqual(JSON.parse(third.body), [1, 2, 3]);
    p.calls.forEach((call, index) => {
      const branchId = String(index + 1).padStart(2, '0');
      assert.deepEqual([call.gid, call.transType, call.branchId, call.op], [tx.gid, 'saga', branchId, 'action']);
      assert.equal(call.headers['tandem-gid'], tx.gid);
      assert.equal(call.headers['tandem-trans-type'], 'saga');
      assert.equal(call.headers['tandem-branch-id'], branchId);
      assert.equal(call.headers['tandem-op'], 'action');
      assert.equal(call.headers['x-trace-id'], 'trace-42', 'branchHeaders reach the branch');
    });
    assert.deepEqual(await historyOf(tx.gid), ['prepared/prepared', 'submitted/action', 'succeeded/done']);
  });

  test('a refused action compensates in reverse order, the refusing branch included', async (t) => {
    const p = await participant(t);
    p.on('/a3', () => refuse);
    const tx = await client
      .saga()
      .add(`${p.url}/a1`, `${p.url}/c1`, { n: 1 })
      .add(`${p.url}/a2`, `${p.url}/c2`, { n: 2 })
      .add(`${p.url}/a3`, `${p.url}/c3`, { n: 3 })
      .submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'failed');
    assert.match(done.reason ?? '', /branch 03 refused/);
    assert.deepEqual(paths(p), ['/a1', '/a2', '/a3', '/c3', '/c2', '/c1']);
    const compensation = p.callsTo('/c2')[0];
    assert.equal(compensation.op, 'compensate');
    assert.deepEqual(JSON.parse(compensation.body), { n: 2 }, 'the compensation gets the branch payload too');
    assert.deepEqual(await historyOf(tx.gid), ['prepared/prepared', 'submitted/action', 'aborting/compensate', 'failed/done']);
  });

  test('transient errors and ONGOING answers are retried until success', async (t) => {
    const p = await participant(t);
    p.on('/a1', (_call, callsSoFar) => (callsSoFar < 2 ? serverError : undefined));
    p.on('/a2', (_call, callsSoFar) => (callsSoFar < 1 ? ongoing : undefined));
    const tx = await client.saga({ retryIntervalMs: 20 }).add(`${p.url}/a1`, `${p.url}/c1`).add(`${p.url}/a2`, `${p.url}/c2`).submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'succeeded');
    assert.equal(p.callsTo('/a1').length, 3);
    assert.equal(p.callsTo('/a2').length, 2);
    assert.deepEqual(paths(p).filter((call) => call.startsWith('/c')), [], 'nothing compensated');
    assert.equal(done.branches[0].ops.action.attempts, 2, 'two calls did not settle the first action');
    assert.equal(done.branches[1].ops.action.attempts, 1);
  });

  test('past retryLimit the action counts as refused: compensated and failed', async (t) => {
    const p = await participant(t);
    p.on('/a2', () => serverError);
    const tx = await client.saga({ retryIntervalMs: 20, retryLimit: 2 }).add(`${p.url}/a1`, `${p.url}/c1`).add(`${p.url}/a2`, `${p.url}/c2`).submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'failed');
    assert.match(done.reason ?? '', /retry limit 2/);
    assert.equal(p.callsTo('/a2').length, 3, 'the first call plus retryLimit retries');
    assert.deepEqual(paths(p).filter((call) => call.startsWith('/c')), ['/c2', '/c1']);
  });

  test('timeoutToFailMs aborts a saga whose action hangs', async (t) => {
    const p = await participant(t);
    p.on('/a1', () => 'hang');
    const tx = await client.saga({ retryIntervalMs: 20, requestTimeoutMs: 100, timeoutToFailMs: 400 }).add(`${p.url}/a1`, `${p.url}/c1`).submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'failed');
    assert.match(done.reason ?? '', /timeoutToFailMs 400/);
    assert.ok(p.callsTo('/a1').length >= 1);
    assert.equal(p.callsTo('/c1').length, 1, 'the hanging action may have run, so it is compensated');
    assert.match(done.branches[0].ops.action.lastError ?? '', /transient/);
  });

  test('a concurrent saga runs independent branches together and waits for dependencies', async (t) => {
    const p = await participant(t);
    // a answers only once b was called: a sequential coordinator would never get there.
    p.on('/a', async () => {
      await p.waitFor((call) => call.path === '/b');
      return undefined;
    });
    p.on('/b', (_call, callsSoFar) => (callsSoFar < 1 ? serverError : undefined));
    const tx = await client
      .saga({ retryIntervalMs: 20 })
      .concurrent()
      .addStep({ branchId: 'a', action: `${p.url}/a`, compensate: `${p.url}/ca` })
      .addStep({ branchId: 'b', action: `${p.url}/b`, compensate: `${p.url}/cb` })
      .addStep({ branchId: 'c', action: `${p.url}/c`, compensate: `${p.url}/cc`, dependsOn: ['a', 'b'] })
      .submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'succeeded');
    assert.equal(p.callsTo('/b').length, 2);
    const firstC = p.calls.findIndex((call) => call.path === '/c');
    const lastA = p.calls.map((call) => call.path).lastIndexOf('/a');
    const lastB = p.calls.map((call) => call.path).lastIndexOf('/b');
    assert.ok(firstC > lastA && firstC > lastB, `c starts after a and b succeeded: ${paths(p).join(' ')}`);
    assert.equal(p.callsTo('/c').length, 1);
  });
});

describe('tcc', () => {
  const urls = (p: FakeParticipant, n: number) => [`${p.url}/try${n}`, `${p.url}/confirm${n}`, `${p.url}/cancel${n}`] as const;

  test('tries by the app, then submit confirms each branch once', async (t) => {
    const p = await participant(t);
    const { gid, value } = await client.tcc({ timeoutToFailMs: 10_000 }, async (tcc) => {
      const first = await tcc.callBranch({ cents: 500 }, ...urls(p, 1));
      await tcc.callBranch({ sku: 'B2' }, ...urls(p, 2));
      return first;
    });
    assert.deepEqual(value, { dtm_result: 'SUCCESS' }, 'callBranch returns the Try answer');
    const done = await ended(gid);
    assert.equal(done.status, 'succeeded');
    assert.equal(p.callsTo('/confirm1').length, 1);
    assert.equal(p.callsTo('/confirm2').length, 1);
    assert.equal(p.calls.filter((call) => call.path.startsWith('/cancel')).length, 0);
    assertAllBefore(p, '/try', '/confirm');
    const confirm = p.callsTo('/confirm1')[0];
    assert.deepEqual([confirm.gid, confirm.transType, confirm.branchId, confirm.op], [gid, 'tcc', '01', 'confirm']);
    assert.deepEqual(JSON.parse(confirm.body), { cents: 500 });
    assert.deepEqual(await historyOf(gid), ['prepared/prepared', 'submitted/confirm', 'succeeded/done']);
  });

  test('a body that throws aborts: every registered branch is cancelled', async (t) => {
    const p = await participant(t);
    p.on('/try2', () => refuse);
    let gid = '';
    await assert.rejects(
      client.tcc({ timeoutToFailMs: 10_000 }, async (tcc) => {
        gid = tcc.gid;
        await tcc.callBranch({ n: 1 }, ...urls(p, 1));
        await tcc.callBranch({ n: 2 }, ...urls(p, 2));
      }),
      BranchRefusedError,
    );
    const done = await ended(gid);
    assert.equal(done.status, 'failed');
    assert.equal(p.callsTo('/cancel1').length, 1);
    assert.equal(p.callsTo('/cancel2').length, 1, 'the refused Try is cancelled too');
    assert.equal(p.calls.filter((call) => call.path.startsWith('/confirm')).length, 0);
  });

  test('a tcc not submitted within timeoutToFailMs is cancelled, and a late submit is refused', async (t) => {
    const p = await participant(t);
    const tcc = await client.beginTcc({ timeoutToFailMs: 300 });
    await tcc.callBranch({ n: 1 }, ...urls(p, 1));
    const done = await ended(tcc.gid);
    assert.equal(done.status, 'failed');
    assert.match(done.reason ?? '', /not submitted within timeoutToFailMs 300/);
    assert.equal(p.callsTo('/cancel1').length, 1);
    await assert.rejects(tcc.submit(), (error: unknown) => error instanceof TandemApiError && error.status === 409);
    assert.equal(p.callsTo('/confirm1').length, 0);
  });

  test('registering a branch after submit is refused with 409 and its Try is not called', async (t) => {
    const p = await participant(t);
    const tcc = await client.beginTcc({ timeoutToFailMs: 10_000 });
    await tcc.callBranch({ n: 1 }, ...urls(p, 1));
    await tcc.submit();
    await assert.rejects(tcc.callBranch({ n: 2 }, ...urls(p, 2)), (error: unknown) => error instanceof TandemApiError && error.status === 409);
    const done = await ended(tcc.gid);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.branches.length, 1);
    assert.equal(p.callsTo('/try2').length, 0);
    assert.equal(p.callsTo('/confirm1').length, 1);
  });
});

describe('2pc', () => {
  const branch = (p: FakeParticipant, n: number) => ({ prepare: `${p.url}/prepare${n}`, commit: `${p.url}/commit${n}`, rollback: `${p.url}/rollback${n}` });

  test('prepares every participant, then commits every participant', async (t) => {
    const p = await participant(t);
    const tx = await client.twoPhase({ timeoutToFailMs: 10_000 }).add(branch(p, 1), { n: 1 }).add(branch(p, 2), { n: 2 }).submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'succeeded');
    assertAllBefore(p, '/prepare', '/commit');
    assert.deepEqual(paths(p).sort(), ['/commit1', '/commit2', '/prepare1', '/prepare2']);
    assert.ok(p.calls.every((call) => call.transType === '2pc'));
    assert.deepEqual(await historyOf(tx.gid), ['prepared/prepared', 'submitted/prepare', 'submitted/commit', 'succeeded/done']);
  });

  test('one no vote rolls every participant back and commits none', async (t) => {
    const p = await participant(t);
    p.on('/prepare2', () => refuse);
    const tx = await client.twoPhase({ timeoutToFailMs: 10_000 }).add(branch(p, 1)).add(branch(p, 2)).add(branch(p, 3)).submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'failed');
    assert.match(done.reason ?? '', /branch 02 refused prepare/);
    for (const n of [1, 2, 3]) assert.equal(p.callsTo(`/rollback${n}`).length, 1, `rollback${n}`);
    assert.equal(p.calls.filter((call) => call.path.startsWith('/commit')).length, 0);
    assertAllBefore(p, '/prepare', '/rollback');
  });

  test('a commit that fails is retried until acknowledged, never rolled back', async (t) => {
    const p = await participant(t);
    p.on('/commit1', (_call, callsSoFar) => (callsSoFar < 3 ? serverError : undefined));
    const tx = await client.twoPhase({ timeoutToFailMs: 10_000, retryIntervalMs: 20 }).add(branch(p, 1)).add(branch(p, 2)).submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'succeeded');
    assert.equal(p.callsTo('/commit1').length, 4);
    assert.equal(p.callsTo('/commit2').length, 1, 'only the unacknowledged commit is retried');
    assert.equal(p.calls.filter((call) => call.path.startsWith('/rollback')).length, 0);
  });
});

describe('3pc', () => {
  const branch = (p: FakeParticipant, n: number) => ({
    canCommit: `${p.url}/canCommit${n}`,
    preCommit: `${p.url}/preCommit${n}`,
    doCommit: `${p.url}/doCommit${n}`,
    abort: `${p.url}/abort${n}`,
  });

  test('canCommit, preCommit and doCommit, each phase on every participant before the next', async (t) => {
    const p = await participant(t);
    const tx = await client.threePhase({ timeoutToFailMs: 10_000 }).add(branch(p, 1)).add(branch(p, 2)).submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'succeeded');
    assertAllBefore(p, '/canCommit', '/preCommit');
    assertAllBefore(p, '/preCommit', '/doCommit');
    assert.equal(p.calls.length, 6);
    assert.deepEqual(await historyOf(tx.gid), ['prepared/prepared', 'submitted/canCommit', 'submitted/preCommit', 'submitted/doCommit', 'succeeded/done']);
  });

  test('a no at canCommit aborts every participant', async (t) => {
    const p = await participant(t);
    p.on('/canCommit1', () => refuse);
    const tx = await client.threePhase({ timeoutToFailMs: 10_000 }).add(branch(p, 1)).add(branch(p, 2)).submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'failed');
    assert.deepEqual(paths(p).filter((call) => call.startsWith('/abort')).sort(), ['/abort1', '/abort2']);
    assert.equal(p.calls.filter((call) => call.path.startsWith('/preCommit') || call.path.startsWith('/doCommit')).length, 0);
  });

  test('preCommit refused until its deadline has passed is retried and commits: the decision was made when preCommit began', async (t) => {
    const p = await participant(t);
    const timeoutToFailMs = 500;
    // Refuse until the transaction's deadline has surely passed (its createdAt is before submit returned).
    let deadlinePassedAtMs = Number.POSITIVE_INFINITY;
    p.on('/preCommit2', () => (Date.now() <= deadlinePassedAtMs ? refuse : undefined));
    const tx = await client.threePhase({ timeoutToFailMs, retryIntervalMs: 20 }).add(branch(p, 1)).add(branch(p, 2)).submit();
    deadlinePassedAtMs = Date.now() + timeoutToFailMs;
    const done = await ended(tx.gid);
    assert.equal(done.status, 'succeeded');
    assert.ok(p.callsTo('/preCommit2').length >= 2, 'preCommit2 was refused at least once');
    assertAllBefore(p, '/preCommit', '/doCommit');
    assert.equal(p.calls.filter((call) => call.path.startsWith('/abort')).length, 0);
    assert.deepEqual(await historyOf(tx.gid), ['prepared/prepared', 'submitted/canCommit', 'submitted/preCommit', 'submitted/doCommit', 'succeeded/done']);
  });
});
