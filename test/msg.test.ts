// Two-phase messages end to end over real HTTP: an in-process coordinator on SQLite, scripted
// participants for the steps, and a real queryPrepared endpoint backed by the SDK's barrier.
// Ends are awaited with the result long poll, never with sleeps.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteBarrier, msgBranchRef } from '../src/sdk/barrier.js';
import { TandemApiError, TandemClient } from '../src/sdk/client.js';
import { BusinessFailure, createParticipant, nodeHttpHandler, queryPreparedHandler } from '../src/sdk/participant.js';
import type { TxView } from '../src/shared/views.js';
import { closeCoordinator, endOf, startCoordinator, tempDir, type TestCoordinator } from './support/coordinator.js';
import { ongoing, refuse, serverError, startParticipant } from './support/fake-participant.js';

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

/** An app with its own SQLite database: an orders table, the barrier, and queryPrepared. */
async function app(t: TestContext): Promise<{ db: Database.Database; barrier: SqliteBarrier; queryPreparedUrl: string; orders(): number }> {
  const dir = tempDir('tandem-msg-app-');
  const db = new Database(path.join(dir, 'app.db'));
  db.exec('CREATE TABLE orders (gid TEXT PRIMARY KEY)');
  const barrier = new SqliteBarrier(db);
  await barrier.ensureSchema();
  const server = http.createServer(nodeHttpHandler(createParticipant({ '/query-prepared': queryPreparedHandler(barrier) })));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    db,
    barrier,
    queryPreparedUrl: `http://127.0.0.1:${port}/query-prepared`,
    orders: () => (db.prepare('SELECT count(*) AS n FROM orders').get() as { n: number }).n,
  };
}

describe('two-phase messages', () => {
  test('a message submitted at once delivers its steps in order, once each, with the DTM protocol', async (t) => {
    const p = await participant(t);
    const tx = await client.msg().add(`${p.url}/s1`, { n: 1 }).add(`${p.url}/s2`).add(`${p.url}/s3`, { n: 3 }).submit();
    assert.equal(tx.status, 'submitted');
    const done = await ended(tx.gid);
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(p.calls.map((call) => call.path), ['/s1', '/s2', '/s3']);
    assert.deepEqual(p.calls.map((call) => [call.transType, call.branchId, call.op]), [['msg', '01', 'action'], ['msg', '02', 'action'], ['msg', '03', 'action']]);
    assert.deepEqual(JSON.parse(p.calls[0].body), { n: 1 });
    assert.equal(p.calls[1].method, 'GET');
  });

  test('a failing step is retried with backoff, refusals included, and later steps wait for it', async (t) => {
    const p = await participant(t);
    const answers = [serverError, refuse, ongoing];
    p.on('/s1', (_call, callsSoFar) => answers[callsSoFar]);
    const tx = await client.msg({ retryIntervalMs: 10 }).add(`${p.url}/s1`).add(`${p.url}/s2`).submit();
    const done = await ended(tx.gid);
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(p.calls.map((call) => call.path), ['/s1', '/s1', '/s1', '/s1', '/s2']);
  });

  test('a concurrent message calls every step without waiting for the others', async (t) => {
    const p = await participant(t);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    p.on('/s1', async () => {
      await held;
      return undefined;
    });
    const tx = await client.msg().concurrent().add(`${p.url}/s1`).add(`${p.url}/s2`).submit();
    await p.waitFor((call) => call.path === '/s2');
    release();
    assert.equal((await ended(tx.gid)).status, 'succeeded');
  });

  test('doAndSubmit: the local transaction commits with its barrier row, then the message is delivered', async (t) => {
    const p = await participant(t);
    const a = await app(t);
    const { gid } = await client.msg().add(`${p.url}/ship`, { order: 1 }).doAndSubmit(a.queryPreparedUrl, a.barrier, async (db) => {
      db.prepare('INSERT INTO orders (gid) VALUES (?)').run('o1');
    });
    assert.equal((await ended(gid)).status, 'succeeded');
    assert.equal(a.orders(), 1);
    assert.equal(p.callsTo('/ship').length, 1);
  });

  test('doAndSubmit: a local transaction that refuses aborts the message and nothing is delivered', async (t) => {
    const p = await participant(t);
    const a = await app(t);
    const gid = await client.newGid();
    await assert.rejects(
      client.msg({ gid }).add(`${p.url}/ship`).doAndSubmit(a.queryPreparedUrl, a.barrier, async (db) => {
        db.prepare('INSERT INTO orders (gid) VALUES (?)').run('o1');
        throw new BusinessFailure('out of stock');
      }),
      BusinessFailure,
    );
    const failed = await client.get(gid);
    assert.equal(failed.status, 'failed');
    assert.equal(failed.reason, 'aborted by the application');
    assert.equal(a.orders(), 0);
    assert.equal(p.calls.length, 0);
  });

  test('an app that committed but died before submit: queryPrepared says committed, and the message is delivered', async (t) => {
    const p = await participant(t);
    const a = await app(t);
    const prepared = await client.msg({ timeoutToFailMs: 50 }).add(`${p.url}/ship`).prepare(a.queryPreparedUrl);
    assert.equal(prepared.status, 'prepared');
    const local = await a.barrier.call(msgBranchRef(prepared.gid), async (db) => db.prepare('INSERT INTO orders (gid) VALUES (?)').run(prepared.gid));
    assert.ok(local.applied);
    // No submit: the app "died" here.
    const done = await ended(prepared.gid);
    assert.equal(done.status, 'succeeded');
    assert.equal(p.callsTo('/ship').length, 1);
    const history = (await client.get(prepared.gid)).history?.map((entry) => `${entry.status}/${entry.phase}`);
    assert.deepEqual(history?.slice(0, 2), ['prepared/prepared', 'prepared/query-prepared']);
  });

  test('an app that died before its local commit: queryPrepared says rolled back, the message fails, and a late local transaction cannot commit', async (t) => {
    const p = await participant(t);
    const a = await app(t);
    const prepared = await client.msg({ timeoutToFailMs: 50 }).add(`${p.url}/ship`).prepare(a.queryPreparedUrl);
    const done = await ended(prepared.gid);
    assert.equal(done.status, 'failed');
    assert.match(done.reason ?? '', /rolled back/);
    assert.equal(p.calls.length, 0);
    const late = await a.barrier.call(msgBranchRef(prepared.gid), async (db) => db.prepare('INSERT INTO orders (gid) VALUES (?)').run(prepared.gid));
    assert.equal(late.applied, false, 'the local transaction that arrives after the rollback answer does not run');
    assert.equal(a.orders(), 0);
    await assert.rejects(client.submit(prepared.gid), (error: unknown) => error instanceof TandemApiError && error.status === 409);
  });

  test('queryPrepared answering ONGOING or failing is asked again until it decides', async (t) => {
    const p = await participant(t);
    const q = await participant(t);
    const answers = [ongoing, serverError, ongoing];
    q.on('/query', (_call, callsSoFar) => answers[callsSoFar]);
    const prepared = await client.msg({ timeoutToFailMs: 50, retryIntervalMs: 10 }).add(`${p.url}/ship`).prepare(`${q.url}/query`);
    assert.equal((await ended(prepared.gid)).status, 'succeeded');
    assert.deepEqual(q.calls.map((call) => [call.method, call.branchId, call.op, call.transType]), Array(4).fill(['GET', '00', 'msg', 'msg']));
    assert.equal(p.callsTo('/ship').length, 1);
  });

  test('bad input is refused with 400 naming the field, and nothing is written', async () => {
    const cases: Array<{ body: Record<string, unknown>; field: string }> = [
      { body: { mode: 'msg', branches: [{ action: 'rabbitmq:orders/created' }] }, field: 'branches[0].action' },
      { body: { mode: 'msg', branches: [{ action: 'jetstream:orders.*' }] }, field: 'branches[0].action' },
      { body: { mode: 'msg', branches: [{ action: 'ftp://x/y' }] }, field: 'branches[0].action' },
      { body: { mode: 'msg', retryLimit: 3, branches: [{ action: 'http://127.0.0.1:1/a' }] }, field: 'retryLimit' },
      { body: { mode: 'msg', queryPrepared: 'http://127.0.0.1:1/q', timeoutToFailMs: 0, branches: [{ action: 'http://127.0.0.1:1/a' }] }, field: 'timeoutToFailMs' },
      { body: { mode: 'msg', queryPrepared: 'not a url', branches: [{ action: 'http://127.0.0.1:1/a' }] }, field: 'queryPrepared' },
      { body: { mode: 'saga', queryPrepared: 'http://127.0.0.1:1/q', branches: [{ action: 'http://127.0.0.1:1/a', compensate: 'http://127.0.0.1:1/c' }] }, field: 'queryPrepared' },
      { body: { mode: 'msg', branches: [] }, field: 'branches' },
    ];
    // `..` as a gid would resolve away in a URL path (GET /v1/transactions/.. is another route).
    await assert.rejects(client.create({ mode: 'msg', gid: '..', branches: [{ action: 'http://127.0.0.1:1/a' }] }), (error: unknown) => {
      assert.ok(error instanceof TandemApiError && error.status === 400);
      assert.match(JSON.stringify(error.problem), /"field":"gid"/);
      return true;
    });
    for (const { body, field } of cases) {
      const gid = `bad-msg-${field.replace(/[^a-z0-9]/gi, '')}-${Math.random().toString(36).slice(2, 8)}`;
      await assert.rejects(client.create({ gid, ...body }), (error: unknown) => {
        assert.ok(error instanceof TandemApiError, String(error));
        assert.equal(error.status, 400);
        const problem = error.problem as { errors?: Array<{ field: string }> };
        assert.ok(problem.errors?.some((entry) => entry.field === field), `expected field ${field} in ${JSON.stringify(problem)}`);
        return true;
      });
      await assert.rejects(client.get(gid), (error: unknown) => error instanceof TandemApiError && error.status === 404);
    }
  });
});

describe('xa (coordinator side)', () => {
  test('registered branches are committed on submit, through the one URL each registered', async (t) => {
    const p = await participant(t);
    const { gid } = await client.xa({}, async (xa) => {
      await xa.callBranch({ amount: 5 }, `${p.url}/xa1`);
      await xa.callBranch({ amount: 5 }, `${p.url}/xa2`);
    });
    assert.equal((await ended(gid)).status, 'succeeded');
    const byOp = (op: string) => p.calls.filter((call) => call.op === op).map((call) => `${call.path}:${call.branchId}`).sort();
    assert.deepEqual(byOp('action'), ['/xa1:01', '/xa2:02']);
    assert.deepEqual(byOp('commit'), ['/xa1:01', '/xa2:02']);
    assert.deepEqual(byOp('rollback'), []);
    assert.ok(p.calls.every((call) => call.transType === 'xa'));
  });

  test('a refused action aborts: every registered branch is rolled back, none committed', async (t) => {
    const p = await participant(t);
    p.on('/xa2', (call) => (call.op === 'action' ? refuse : undefined));
    let gid = '';
    await assert.rejects(
      client.xa({}, async (xa) => {
        gid = xa.gid;
        await xa.callBranch({}, `${p.url}/xa1`);
        await xa.callBranch({}, `${p.url}/xa2`);
      }),
    );
    assert.equal((await ended(gid)).status, 'failed');
    assert.deepEqual(p.calls.filter((call) => call.op === 'rollback').map((call) => call.path).sort(), ['/xa1', '/xa2']);
    assert.equal(p.calls.filter((call) => call.op === 'commit').length, 0);
  });

  test('an xa transaction not submitted within timeoutToFailMs is rolled back', async (t) => {
    const p = await participant(t);
    const xa = await client.beginXa({ timeoutToFailMs: 50 });
    await xa.callBranch({}, `${p.url}/xa1`);
    const done = await ended(xa.gid);
    assert.equal(done.status, 'failed');
    assert.deepEqual(p.calls.map((call) => call.op), ['action', 'rollback']);
  });

  test('xa branch registration names its bad fields', async () => {
    const xa = await client.beginXa();
    await assert.rejects(client.call('POST', `/v1/transactions/${xa.gid}/branches`, { url: 'nope' }), (error: unknown) => {
      assert.ok(error instanceof TandemApiError && error.status === 400);
      assert.match(JSON.stringify(error.problem), /"field":"url"/);
      return true;
    });
    await assert.rejects(client.call('POST', `/v1/transactions/${xa.gid}/branches`, { confirm: 'http://127.0.0.1:1/x' }), (error: unknown) => error instanceof TandemApiError && error.status === 400);
    await xa.abort();
  });
});

describe('batch creation', () => {
  test('POST /v1/transactions/batch creates every item; a taken gid fails alone, with its problem', async (t) => {
    const p = await participant(t);
    const taken = (await client.msg().add(`${p.url}/x`).submit()).gid;
    const answer = await client.createBatch([
      { mode: 'msg', branches: [{ action: `${p.url}/b1` }] },
      { mode: 'msg', gid: taken, branches: [{ action: `${p.url}/b2` }] },
      { mode: 'saga', branches: [{ action: `${p.url}/b3`, compensate: `${p.url}/c3` }] },
    ]);
    assert.equal(answer.items.length, 3);
    const [first, second, third] = answer.items;
    assert.ok(!('problem' in first) && first.status === 'submitted');
    assert.ok('problem' in second && second.problem.status === 409 && second.gid === taken);
    assert.ok(!('problem' in third) && third.mode === 'saga');
    assert.equal((await ended(first.gid)).status, 'succeeded');
    assert.equal((await ended(third.gid)).status, 'succeeded');
  });

  test('one bad item fails the whole batch with 400 naming it, and nothing is written', async () => {
    const gids = [`batch-ok-${Math.random().toString(36).slice(2, 8)}`, `batch-bad-${Math.random().toString(36).slice(2, 8)}`];
    await assert.rejects(
      client.createBatch([
        { mode: 'msg', gid: gids[0], branches: [{ action: 'http://127.0.0.1:1/a' }] },
        { mode: 'msg', gid: gids[1], branches: [{ action: 'not a url' }] },
      ]),
      (error: unknown) => {
        assert.ok(error instanceof TandemApiError && error.status === 400);
        assert.match(JSON.stringify(error.problem), /"field":"transactions\[1\]\.branches\[0\]\.action"/);
        return true;
      },
    );
    for (const gid of gids) await assert.rejects(client.get(gid), (error: unknown) => error instanceof TandemApiError && error.status === 404);
    const duplicate = [{ mode: 'msg', gid: 'batch-dup', branches: [{ action: 'http://127.0.0.1:1/a' }] }, { mode: 'msg', gid: 'batch-dup', branches: [{ action: 'http://127.0.0.1:1/a' }] }];
    await assert.rejects(client.createBatch(duplicate), (error: unknown) => error instanceof TandemApiError && error.status === 400 && /transactions\[1\]\.gid/.test(JSON.stringify(error.problem)));
    await assert.rejects(client.createBatch([]), (error: unknown) => error instanceof TandemApiError && error.status === 400);
  });

  test('a client with batching gives every submit its own answer; a bad one is refused alone', async (t) => {
    const p = await participant(t);
    const batching = new TandemClient({ url: coordinator.url, batching: { sizeMax: 8 } });
    const submits = Array.from({ length: 20 }, (_unused, index) => batching.msg().add(`${p.url}/m${index}`, { index }).submit());
    const bad = batching.msg().add('not a url').submit();
    const views = await Promise.all(submits);
    await assert.rejects(bad, (error: unknown) => error instanceof TandemApiError && error.status === 400);
    assert.equal(new Set(views.map((view) => view.gid)).size, 20);
    for (const view of views) assert.equal((await ended(view.gid)).status, 'succeeded');
    assert.equal(p.calls.length, 20);
  });
});
