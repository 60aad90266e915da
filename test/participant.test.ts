// Participant helpers served for real by node:http, fastify and express on 127.0.0.1, called
// the way a coordinator calls branches: POST with a JSON body and gid/trans_type/branch_id/op
// in the query string.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import Database from 'better-sqlite3';
import express from 'express';
import Fastify from 'fastify';
import { SqliteBarrier, type BranchRef } from '../src/sdk/barrier.js';
import {
  BusinessFailure,
  Ongoing,
  type Participant,
  barrierHandler,
  createParticipant,
  expressRouter,
  fastifyPlugin,
  nodeHttpHandler,
  requestBytesMax,
  routeByOp,
  threePhaseParticipant,
} from '../src/sdk/participant.js';
import { classifyAnswer } from '../src/shared/protocol.js';

/** A safety net for tests that await an event: a bug fails them instead of hanging the run. */
const awaitedEventMsMax = 10_000;

type RunningServer = { baseUrl: string; close(): Promise<void> };

async function listen(server: http.Server, prefix: string): Promise<RunningServer> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}${prefix}`,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

/** Express prints every error answer's stack unless its env is 'test'. */
function quietExpress(): express.Express {
  const app = express();
  app.set('env', 'test');
  return app;
}

/** Each adapter, serving the participant under its own prefix where it supports one. */
const adapters: Record<string, (participant: Participant) => Promise<RunningServer>> = {
  'node:http': (participant) => listen(http.createServer(nodeHttpHandler(participant)), ''),
  fastify: async (participant) => {
    const app = Fastify();
    await app.register(fastifyPlugin(participant), { prefix: '/svc' });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    return { baseUrl: `http://127.0.0.1:${port}/svc`, close: () => app.close() };
  },
  express: (participant) => {
    const app = quietExpress();
    app.use('/svc', expressRouter(participant));
    return listen(http.createServer(app), '/svc');
  },
  'express after express.json()': (participant) => {
    const app = quietExpress();
    app.use('/svc', express.json({ limit: requestBytesMax }), expressRouter(participant));
    return listen(http.createServer(app), '/svc');
  },
};

type Deferred<T> = { promise: Promise<T>; resolve: (value: T) => void };

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((done) => {
    resolve = done;
  });
  return { promise, resolve };
}

/** The 3PC side of the test participant: records every doCommit and lets tests await one. */
class ThreePhaseProbe {
  readonly doCommits: BranchRef[] = [];
  private readonly waiters = new Map<string, Deferred<BranchRef>>();

  doCommitted(gid: string): Promise<BranchRef> {
    return this.waiterFor(gid).promise;
  }

  record(branch: BranchRef): void {
    this.doCommits.push(branch);
    this.waiterFor(branch.gid).resolve(branch);
  }

  commitsOf(gid: string): number {
    return this.doCommits.filter((branch) => branch.gid === gid).length;
  }

  private waiterFor(gid: string): Deferred<BranchRef> {
    let waiter = this.waiters.get(gid);
    if (!waiter) {
      waiter = deferred<BranchRef>();
      this.waiters.set(gid, waiter);
    }
    return waiter;
  }
}

function testParticipant(probe: ThreePhaseProbe, shutdown: AbortSignal): Participant {
  const succeed = () => undefined;
  return createParticipant({
    '/ok': () => ({ reserved: 3, dtm_result: 'FAILURE' /* must not override the verdict */ }),
    '/value': () => 42,
    '/refuse': () => {
      throw new BusinessFailure('out of stock');
    },
    '/later': () => {
      throw new Ongoing();
    },
    '/boom': () => {
      throw new Error('disk on fire');
    },
    '/echo': (request) => ({ branch: request.branch, body: request.body, method: request.method, rawBytes: request.rawBody.length }),
    '/tcc': routeByOp({ try: succeed, confirm: succeed, cancel: succeed }),
    '/3pc': routeByOp(
      threePhaseParticipant({
        canCommit: succeed,
        preCommit: succeed,
        doCommit: (request) => probe.record(request.branch),
        abort: succeed,
        autoCommitAfterMs: 50,
        signal: shutdown,
      }),
    ),
    '/3pc-refusing': routeByOp(
      threePhaseParticipant({
        canCommit: succeed,
        preCommit: () => {
          throw new BusinessFailure('changed my mind');
        },
        doCommit: (request) => probe.record(request.branch),
        abort: succeed,
        autoCommitAfterMs: 50,
        signal: shutdown,
      }),
    ),
  });
}

type BranchQuery = { gid?: string; trans_type?: string; branch_id?: string; op?: string };
type CallOptions = { method?: 'GET' | 'POST'; body?: string; headers?: Record<string, string> };
type Answer = { status: number; text: string; json: Record<string, unknown> | undefined; outcome: string };

function query(gid: string, op: string, transType = 'saga'): BranchQuery {
  return { gid, trans_type: transType, branch_id: '01', op };
}

/** A JSON object of exactly `bytes` bytes. */
function jsonOfBytes(bytes: number): string {
  const overheadBytes = '{"pad":""}'.length;
  return JSON.stringify({ pad: 'x'.repeat(bytes - overheadBytes) });
}

async function call(baseUrl: string, path: string, branch: BranchQuery, options: CallOptions = {}): Promise<Answer> {
  const params = new URLSearchParams(Object.entries(branch).filter((entry): entry is [string, string] => entry[1] !== undefined));
  const method = options.method ?? 'POST';
  const body = method === 'POST' ? (options.body ?? '{"amount":30}') : undefined;
  const headers = { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...options.headers };
  const response = await fetch(`${baseUrl}${path}?${params}`, { method, body, headers });
  const text = await response.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: response.status, text, json, outcome: classifyAnswer(response.status, text) };
}

for (const [adapterName, serve] of Object.entries(adapters)) {
  describe(`participant over ${adapterName}`, () => {
    async function start(t: TestContext): Promise<{ baseUrl: string; probe: ThreePhaseProbe }> {
      const probe = new ThreePhaseProbe();
      const shutdown = new AbortController();
      const server = await serve(testParticipant(probe, shutdown.signal));
      t.after(async () => {
        shutdown.abort();
        await server.close();
      });
      return { baseUrl: server.baseUrl, probe };
    }

    test('a normal return answers 200 SUCCESS with the returned data', async (t) => {
      const { baseUrl } = await start(t);
      const ok = await call(baseUrl, '/ok', query('g-ok', 'action'));
      assert.equal(ok.status, 200);
      assert.deepEqual(ok.json, { dtm_result: 'SUCCESS', reserved: 3 });
      assert.equal(ok.outcome, 'success');
      const value = await call(baseUrl, '/value', query('g-ok', 'action'));
      assert.deepEqual(value.json, { dtm_result: 'SUCCESS', data: 42 });
    });

    test('BusinessFailure answers 409 FAILURE, Ongoing 425 ONGOING, other errors 500', async (t) => {
      const { baseUrl } = await start(t);
      const refused = await call(baseUrl, '/refuse', query('g-err', 'action'));
      assert.equal(refused.status, 409);
      assert.deepEqual(refused.json, { dtm_result: 'FAILURE', message: 'out of stock' });
      assert.equal(refused.outcome, 'failure');
      const later = await call(baseUrl, '/later', query('g-err', 'action'));
      assert.equal(later.status, 425);
      assert.deepEqual(later.json, { dtm_result: 'ONGOING' });
      assert.equal(later.outcome, 'ongoing');
      const broken = await call(baseUrl, '/boom', query('g-err', 'action'));
      assert.equal(broken.status, 500);
      assert.deepEqual(broken.json, { dtm_result: 'ERROR', message: 'disk on fire' });
      assert.equal(broken.outcome, 'transient');
    });

    test('the branch comes from the query, or from tandem-* headers', async (t) => {
      const { baseUrl } = await start(t);
      const posted = await call(baseUrl, '/echo', query('g-echo', 'compensate'), { body: '{"amount":30,"sku":"A-1"}' });
      assert.equal(posted.status, 200);
      assert.deepEqual(posted.json, {
        dtm_result: 'SUCCESS',
        branch: { gid: 'g-echo', branchId: '01', op: 'compensate', transType: 'saga' },
        body: { amount: 30, sku: 'A-1' },
        method: 'POST',
        rawBytes: 25,
      });
      const viaHeaders = await call(baseUrl, '/echo', {}, {
        method: 'GET',
        headers: { 'tandem-gid': 'g-head', 'tandem-trans-type': 'msg', 'tandem-branch-id': '00', 'tandem-op': 'queryPrepared' },
      });
      assert.equal(viaHeaders.status, 200);
      assert.deepEqual(viaHeaders.json, {
        dtm_result: 'SUCCESS',
        branch: { gid: 'g-head', branchId: '00', op: 'queryPrepared', transType: 'msg' },
        method: 'GET',
        rawBytes: 0,
      });
    });

    test('a call without a gid, or with broken JSON, is a 400 naming the problem', async (t) => {
      const { baseUrl } = await start(t);
      const noGid = await call(baseUrl, '/echo', { trans_type: 'saga', branch_id: '01', op: 'action' });
      assert.equal(noGid.status, 400);
      assert.equal(noGid.json?.field, 'gid');
      assert.match(String(noGid.json?.detail), /gid.*tandem-gid/);
      const badJson = await call(baseUrl, '/echo', query('g-bad', 'action'), { body: '{"amount":' });
      assert.equal(badJson.status, 400);
      // express.json() refuses the body itself, before the participant sees it.
      if (!adapterName.includes('express.json')) assert.equal(badJson.json?.field, 'body');
    });

    test('routeByOp dispatches on op and answers 400 for an op it does not serve', async (t) => {
      const { baseUrl } = await start(t);
      assert.equal((await call(baseUrl, '/tcc', query('g-tcc', 'try', 'tcc'))).status, 200);
      assert.equal((await call(baseUrl, '/tcc', query('g-tcc', 'cancel', 'tcc'))).status, 200);
      const unknown = await call(baseUrl, '/tcc', query('g-tcc', 'compensate', 'tcc'));
      assert.equal(unknown.status, 400);
      assert.match(String(unknown.json?.detail), /"compensate" is not served here; expected one of try, confirm, cancel/);
    });

    test('an unknown path is 404, a body over the limit is 413, one at the limit is served', async (t) => {
      const { baseUrl } = await start(t);
      assert.equal((await call(baseUrl, '/nowhere', query('g-404', 'action'))).status, 404);
      const tooBig = await call(baseUrl, '/echo', query('g-413', 'action'), { body: jsonOfBytes(requestBytesMax + 1) });
      assert.equal(tooBig.status, 413);
      const atLimit = await call(baseUrl, '/echo', query('g-413', 'action'), { body: jsonOfBytes(requestBytesMax) });
      assert.equal(atLimit.status, 200);
      assert.equal(atLimit.json?.rawBytes, requestBytesMax);
    });

    test('3PC: after preCommit with no word from the coordinator, the participant commits itself', { timeout: awaitedEventMsMax }, async (t) => {
      const { baseUrl, probe } = await start(t);
      assert.equal((await call(baseUrl, '/3pc', query('g-3pc', 'canCommit', '3pc'))).status, 200);
      assert.equal((await call(baseUrl, '/3pc', query('g-3pc', 'preCommit', '3pc'))).status, 200);
      const committed = await probe.doCommitted('g-3pc');
      assert.deepEqual(committed, { gid: 'g-3pc', branchId: '01', op: 'doCommit', transType: '3pc' });
      assert.equal(probe.commitsOf('g-3pc'), 1);
    });

    test('3PC: a preCommit handler that refuses answers an error to retry, not a FAILURE, and arms no commit', { timeout: awaitedEventMsMax }, async (t) => {
      const { baseUrl, probe } = await start(t);
      const refused = await call(baseUrl, '/3pc-refusing', query('g-refusing', 'preCommit', '3pc'));
      assert.equal(refused.status, 500);
      assert.notEqual(refused.outcome, 'failure');
      assert.match(refused.text, /preCommit cannot refuse/);
      // As in the test below: a later branch's automatic commit shows no timer was left armed.
      await call(baseUrl, '/3pc', query('g-after-refusal', 'preCommit', '3pc'));
      await probe.doCommitted('g-after-refusal');
      assert.equal(probe.commitsOf('g-refusing'), 0);
    });

    test('3PC: abort or doCommit after preCommit cancels the automatic commit', { timeout: awaitedEventMsMax }, async (t) => {
      const { baseUrl, probe } = await start(t);
      await call(baseUrl, '/3pc', query('g-aborted', 'preCommit', '3pc'));
      await call(baseUrl, '/3pc', query('g-aborted', 'abort', '3pc'));
      await call(baseUrl, '/3pc', query('g-told', 'preCommit', '3pc'));
      await call(baseUrl, '/3pc', query('g-told', 'doCommit', '3pc'));
      // Timers with one delay fire in the order they were set, so once this later branch has
      // committed on its own, the two above would have fired already had they been left armed.
      await call(baseUrl, '/3pc', query('g-witness', 'preCommit', '3pc'));
      await probe.doCommitted('g-witness');
      assert.equal(probe.commitsOf('g-aborted'), 0);
      assert.equal(probe.commitsOf('g-told'), 1);
    });
  });
}

describe('barrierHandler over node:http with a SQLite barrier', () => {
  test('duplicates answer success once applied, null compensation succeeds, hanging is a 409', async (t) => {
    const db = new Database(':memory:');
    const barrier = new SqliteBarrier(db);
    await barrier.ensureSchema();
    db.exec('CREATE TABLE stock (sku TEXT PRIMARY KEY, reserved INTEGER NOT NULL)');
    db.exec("INSERT INTO stock VALUES ('A-1', 0)");
    const reserve = (delta: number) =>
      barrierHandler(barrier, async (tx) => {
        tx.prepare("UPDATE stock SET reserved = reserved + ? WHERE sku = 'A-1'").run(delta);
        return { delta };
      });
    const participant = createParticipant({ '/stock': routeByOp({ try: reserve(1), cancel: reserve(-1) }) });
    const server = await listen(http.createServer(nodeHttpHandler(participant)), '');
    t.after(async () => {
      await server.close();
      db.close();
    });
    const reserved = () => (db.prepare("SELECT reserved FROM stock WHERE sku = 'A-1'").get() as { reserved: number }).reserved;

    const first = await call(server.baseUrl, '/stock', query('g-1', 'try', 'tcc'));
    assert.deepEqual(first.json, { dtm_result: 'SUCCESS', delta: 1 });
    const again = await call(server.baseUrl, '/stock', query('g-1', 'try', 'tcc'));
    assert.deepEqual(again.json, { dtm_result: 'SUCCESS' });
    assert.equal(reserved(), 1);

    const nullCompensation = await call(server.baseUrl, '/stock', query('g-2', 'cancel', 'tcc'));
    assert.deepEqual(nullCompensation.json, { dtm_result: 'SUCCESS' });
    const hanging = await call(server.baseUrl, '/stock', query('g-2', 'try', 'tcc'));
    assert.equal(hanging.status, 409);
    assert.equal(hanging.json?.dtm_result, 'FAILURE');
    assert.match(String(hanging.json?.message), /try refused: its cancel already ran/);
    assert.equal(reserved(), 1);

    // tandem-fence: the coordinator now holding the lease (fence 7) called first; a call from
    // the one that lost it (fence 3) is answered 503, unapplied; a malformed fence is a 400.
    const current = await call(server.baseUrl, '/stock', query('g-3', 'try', 'tcc'), { headers: { 'tandem-fence': '7' } });
    assert.equal(current.status, 200);
    const stale = await call(server.baseUrl, '/stock', query('g-3', 'cancel', 'tcc'), { headers: { 'tandem-fence': '3' } });
    assert.equal(stale.status, 503);
    assert.equal(stale.outcome, 'transient');
    assert.match(String(stale.json?.message), /lease has passed to another coordinator/);
    assert.equal(reserved(), 2, 'the stale cancel did not run');
    const malformed = await call(server.baseUrl, '/stock', query('g-3', 'cancel', 'tcc'), { headers: { 'tandem-fence': 'seven' } });
    assert.equal(malformed.status, 400);
  });
});
