// The last behaviours in which Tandem differed from DTM (issue 13, part 3), each driven with
// requests shaped as DTM's clients send them (Go dtmcli's TransBase marshalled by
// encoding/json, the admin console's {gid} posts), against a real coordinator and a real
// scripted participant.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { closeCoordinator, startCoordinator, type TestCoordinator } from './support/coordinator.js';
import { FakeParticipant, serverError, type RecordedCall } from './support/fake-participant.js';
import { classifyAnswer } from '../src/shared/protocol.js';

interface Answer {
  status: number;
  contentType: string;
  body: Record<string, unknown>;
}

let coordinator: TestCoordinator;
let participant: FakeParticipant;

before(async () => {
  coordinator = await startCoordinator();
  participant = await new FakeParticipant().start();
});

after(async () => {
  await participant?.stop();
  if (coordinator) await closeCoordinator(coordinator);
});

async function send(method: string, path: string, body?: unknown, base = coordinator.url): Promise<Answer> {
  const response = await fetch(`${base}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  return { status: response.status, contentType: response.headers.get('content-type') ?? '', body: (await response.json()) as Record<string, unknown> };
}

const dtm = (method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown) => send(method, `/api/dtmsvr/${path}`, body);

async function newGid(): Promise<string> {
  return (await dtm('GET', 'newGid')).body.gid as string;
}

function url(path: string): string {
  return `${participant.url}${path}`;
}

function callsOf(gid: string): RecordedCall[] {
  return participant.calls.filter((call) => call.gid === gid);
}

async function waitEnd(gid: string, timeoutMs = 20_000): Promise<string> {
  return (await coordinator.client.waitResult(gid, { timeoutMs })).status;
}

/** What Go's dtmcli sends for every transaction: TransBase with its options, zero when unset. */
function goTrans(gid: string, transType: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { gid, trans_type: transType, concurrent: false, protocol: '', ...extra };
}

/** Go dtmcli Tcc.CallBranch registers before calling Try: data is the marshalled body. */
function goTccBranch(gid: string, branchId: string, data: string, base: string): Record<string, unknown> {
  return { gid, trans_type: 'tcc', branch_id: branchId, data, confirm: url(`${base}/confirm${branchId}`), cancel: url(`${base}/cancel${branchId}`) };
}

describe('DTM differences: TCC and XA second phases', () => {
  test('Go TCC submit confirms one branch at a time, the last registered first; an error ends the round and the same branch is retried', async () => {
    const gid = await newGid();
    participant.on('/seq/confirm02', (_call, callsSoFar) => (callsSoFar === 0 ? serverError : undefined));
    assert.equal((await dtm('POST', 'prepare', goTrans(gid, 'tcc', { retry_interval: 1 }))).status, 200);
    for (const branchId of ['01', '02', '03']) {
      assert.equal((await dtm('POST', 'registerBranch', goTccBranch(gid, branchId, `{"b":"${branchId}"}`, '/seq'))).status, 200);
    }
    assert.deepEqual((await dtm('POST', 'submit', goTrans(gid, 'tcc'))).body, { dtm_result: 'SUCCESS' });
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.deepEqual(callsOf(gid).map((call) => `${call.branchId}/${call.op}`), ['03/confirm', '02/confirm', '02/confirm', '01/confirm'],
      '01 is called only after 02 acknowledged, never beside its failed call');
  });

  test('Go TCC abort cancels one branch at a time, the last registered first', async () => {
    const gid = await newGid();
    assert.equal((await dtm('POST', 'prepare', goTrans(gid, 'tcc'))).status, 200);
    for (const branchId of ['01', '02', '03']) await dtm('POST', 'registerBranch', goTccBranch(gid, branchId, '{}', '/seqc'));
    assert.deepEqual((await dtm('POST', 'abort', goTrans(gid, 'tcc', { rollback_reason: 'try 03 failed' }))).body, { dtm_result: 'SUCCESS' });
    assert.equal(await waitEnd(gid), 'failed');
    assert.deepEqual(callsOf(gid).map((call) => `${call.branchId}/${call.op}`), ['03/cancel', '02/cancel', '01/cancel']);
  });

  test('Go XA commits and rolls back in registration order, one at a time, always with POST', async () => {
    for (const [ending, op] of [['submit', 'commit'], ['abort', 'rollback']] as const) {
      const gid = await newGid();
      participant.on(`/xaseq/${ending}/02`, (_call, callsSoFar) => (callsSoFar === 0 ? serverError : undefined));
      assert.equal((await dtm('POST', 'prepare', goTrans(gid, 'xa', { retry_interval: 1 }))).status, 200);
      // dtmcli.XaLocalTransaction registers {gid, trans_type, branch_id, url}: no data.
      for (const branchId of ['01', '02', '03']) {
        assert.equal((await dtm('POST', 'registerBranch', { gid, trans_type: 'xa', branch_id: branchId, url: url(`/xaseq/${ending}/${branchId}`) })).status, 200);
      }
      assert.equal((await dtm('POST', ending, goTrans(gid, 'xa'))).status, 200);
      assert.equal(await waitEnd(gid), ending === 'submit' ? 'succeeded' : 'failed');
      const calls = callsOf(gid);
      assert.deepEqual(calls.map((call) => `${call.branchId}/${call.op}`), [`01/${op}`, `02/${op}`, `02/${op}`, `03/${op}`]);
      assert.deepEqual([...new Set(calls.map((call) => `${call.method} ${JSON.stringify(call.body)}`))], ['POST ""'], 'DTM POSTs every XA call, with an empty body');
    }
  });

  test('concurrent: true (a Tandem option) confirms every TCC branch at once', async () => {
    const gid = await newGid();
    // 01's confirm (called last in the sequential order) answers only once 02's was called.
    participant.on('/conc/confirm02', async () => {
      await participant.waitFor((call) => call.gid === gid && call.path === '/conc/confirm01');
      return undefined;
    });
    assert.equal((await dtm('POST', 'prepare', goTrans(gid, 'tcc', { concurrent: true }))).status, 200);
    for (const branchId of ['01', '02']) await dtm('POST', 'registerBranch', goTccBranch(gid, branchId, '{}', '/conc'));
    assert.equal((await dtm('POST', 'submit', goTrans(gid, 'tcc'))).status, 200);
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.equal((await coordinator.store.get(gid))?.options.concurrent, true);
  });

  test('a Go msg with concurrent: true (TransOptions.Concurrent) delivers its steps at once, as DTM does', async () => {
    const gid = await newGid();
    // Step 1 answers only once step 2 was called: sequential delivery would never call step 2.
    participant.on('/mconc/a', async () => {
      await participant.waitFor((call) => call.gid === gid && call.path === '/mconc/b');
      return undefined;
    });
    const submitted = await dtm('POST', 'submit', { ...goTrans(gid, 'msg', { steps: [{ action: url('/mconc/a') }, { action: url('/mconc/b') }], payloads: ['{}', '{}'] }), concurrent: true });
    assert.equal(submitted.status, 200, JSON.stringify(submitted.body));
    assert.equal(await waitEnd(gid), 'succeeded');
    const query = await dtm('GET', `query?gid=${gid}`);
    assert.equal((query.body.transaction as Record<string, unknown>).concurrent, true);
  });

  test('the native API takes concurrent for tcc and xa, and refuses it for 2pc', async () => {
    const opened = await send('POST', '/v1/transactions', { mode: 'xa', concurrent: true, timeoutToFailMs: 30_000 });
    assert.equal(opened.status, 201, JSON.stringify(opened.body));
    assert.equal((opened.body.options as Record<string, unknown>).concurrent, true);
    const twoPhase = await send('POST', '/v1/transactions', {
      mode: '2pc',
      concurrent: true,
      branches: [{ prepare: url('/p'), commit: url('/c'), rollback: url('/r') }],
    });
    assert.equal(twoPhase.status, 400);
    assert.equal((twoPhase.body.errors as Array<{ field: string }>)[0].field, 'concurrent');
  });
});

describe('DTM differences: how branches are called and how answers are read', () => {
  test('a TCC branch registered with empty data is called with GET; one with data with POST', async () => {
    const gid = await newGid();
    await dtm('POST', 'prepare', goTrans(gid, 'tcc'));
    await dtm('POST', 'registerBranch', goTccBranch(gid, '01', '', '/get'));
    await dtm('POST', 'registerBranch', goTccBranch(gid, '02', '{"n":2}', '/get'));
    await dtm('POST', 'submit', goTrans(gid, 'tcc'));
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.deepEqual(callsOf(gid).map((call) => [call.branchId, call.method, call.body]), [['02', 'POST', '{"n":2}'], ['01', 'GET', '']]);
  });

  test('saga steps with an empty payload are called with GET, as DTM does', async () => {
    const gid = await newGid();
    await dtm('POST', 'submit', goTrans(gid, 'saga', { steps: [{ action: url('/sg/a'), compensate: url('/sg/c') }, { action: url('/sg/b'), compensate: url('/sg/d') }], payloads: ['', '{"x":1}'] }));
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.deepEqual(callsOf(gid).map((call) => [call.path, call.method]), [['/sg/a', 'GET'], ['/sg/b', 'POST']]);
  });

  test('classifyAnswer follows DTM: ONGOING first, then FAILURE, anywhere in the body; only 200 is success', () => {
    const cases: Array<[number, string, string]> = [
      [200, '{"dtm_result":"SUCCESS"}', 'success'],
      [200, '', 'success'],
      [200, '{"error":"not enough stock: FAILURE"}', 'failure'],
      [500, 'FAILURE', 'failure'],
      [200, 'still ONGOING', 'ongoing'],
      [409, '{"dtm_result":"ONGOING"}', 'ongoing'],
      [409, '', 'failure'],
      [425, '{"dtm_result":"FAILURE"}', 'ongoing'],
      [201, '{"dtm_result":"SUCCESS"}', 'transient'],
      [204, '', 'transient'],
      [302, '', 'transient'],
      [400, 'bad', 'transient'],
      [500, 'failure in lower case is no word', 'transient'],
    ];
    for (const [status, body, outcome] of cases) assert.equal(classifyAnswer(status, body), outcome, `${status} ${JSON.stringify(body)}`);
  });

  test('a saga action answering 200 with FAILURE inside its body is a refusal: the saga compensates', async () => {
    const gid = await newGid();
    participant.on('/word/b', () => ({ status: 200, body: '{"error":"insufficient balance FAILURE"}' }));
    await dtm('POST', 'submit', goTrans(gid, 'saga', {
      steps: [{ action: url('/word/a'), compensate: url('/word/a-undo') }, { action: url('/word/b'), compensate: url('/word/b-undo') }],
      payloads: ['{}', '{}'],
    }));
    assert.equal(await waitEnd(gid), 'failed');
    assert.deepEqual(callsOf(gid).map((call) => call.path), ['/word/a', '/word/b', '/word/b-undo', '/word/a-undo']);
  });

  test('a 201 answer is retried until the branch answers 200, on the native API as on DTM\'s', async () => {
    participant.on('/created', (_call, callsSoFar) => (callsSoFar === 0 ? { status: 201, body: '{"dtm_result":"SUCCESS"}' } : undefined));
    const created = await send('POST', '/v1/transactions', { mode: 'saga', retryIntervalMs: 10, branches: [{ action: url('/created'), compensate: url('/created-undo') }] });
    const gid = created.body.gid as string;
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.deepEqual(callsOf(gid).map((call) => call.path), ['/created', '/created']);
    assert.equal((await coordinator.store.get(gid))?.branches[0].ops.action.attempts, 1, 'the 201 counted as an attempt that did not settle the action');
  });
});

describe('DTM differences: a message delay (Msg.SetDelay)', () => {
  test('Go msg.SetDelay(1).Submit(): the steps are held in the store until a second after the submit', async () => {
    const gid = await newGid();
    const firstCallAtMs: number[] = [];
    participant.on('/delay/a', () => {
      firstCallAtMs.push(Date.now());
      return undefined;
    });
    const submittedAtMs = Date.now();
    // BuildCustomOptions writes custom_data {"delay":1} on Submit only.
    const submitted = await dtm('POST', 'submit', goTrans(gid, 'msg', { steps: [{ action: url('/delay/a') }], payloads: ['{"order":1}'], custom_data: '{"delay":1}' }));
    assert.deepEqual(submitted.body, { dtm_result: 'SUCCESS' });
    const held = await coordinator.store.get(gid);
    assert.equal(held?.phase, 'delay');
    assert.ok(held?.notBeforeMs !== undefined && held.notBeforeMs >= submittedAtMs + 1000, 'the hold is a due time in the store');
    assert.equal(held?.nextAttemptAtMs, held?.notBeforeMs);
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.ok(firstCallAtMs[0] >= (held?.notBeforeMs ?? Infinity), 'no step was delivered before the hold ended');
  });

  test('a delay given at submit holds a prepared message too (DoAndSubmit: prepare, then submit with custom_data)', async () => {
    const gid = await newGid();
    const body = goTrans(gid, 'msg', { steps: [{ action: url('/delay/b') }], payloads: ['{}'], query_prepared: url('/delay/query') });
    assert.equal((await dtm('POST', 'prepare', body)).status, 200);
    assert.equal((await dtm('POST', 'submit', { ...body, custom_data: '{"delay":1}' })).status, 200);
    const held = await coordinator.store.get(gid);
    assert.equal(held?.phase, 'delay');
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.equal(callsOf(gid).length, 1);
  });

  test('the hold survives a restart of the coordinator', async () => {
    const own = await startCoordinator();
    const callsAtMs: number[] = [];
    participant.on('/delay/restart', () => {
      callsAtMs.push(Date.now());
      return undefined;
    });
    const created = await send('POST', '/v1/transactions', { mode: 'msg', delayMs: 1500, branches: [{ action: url('/delay/restart'), payload: { n: 1 } }] }, own.url);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const gid = created.body.gid as string;
    const notBeforeMs = (await own.store.get(gid))?.notBeforeMs;
    assert.ok(notBeforeMs !== undefined);
    await own.close();
    const restarted = await startCoordinator({ dbPath: own.dbPath });
    try {
      assert.equal((await restarted.client.waitResult(gid, { timeoutMs: 20_000 })).status, 'succeeded');
      assert.equal(callsAtMs.length, 1);
      assert.ok(callsAtMs[0] >= notBeforeMs);
    } finally {
      await closeCoordinator(restarted);
    }
  });

  test('a bad delay is a 400 naming custom_data.delay; a topic:// step and delayMs on a saga are refused', async () => {
    const bad = await dtm('POST', 'submit', goTrans(await newGid(), 'msg', { steps: [{ action: url('/delay/x') }], payloads: ['{}'], custom_data: '{"delay":-1}' }));
    assert.equal(bad.status, 400);
    assert.equal((bad.body.errors as Array<{ field: string }>)[0].field, 'custom_data.delay');
    const topic = await dtm('POST', 'submit', goTrans(await newGid(), 'msg', { steps: [{ action: 'topic://orders' }], payloads: ['{}'] }));
    assert.equal(topic.status, 400);
    assert.match((topic.body.errors as Array<{ field: string; message: string }>)[0].message, /no topic subscriptions/);
    const saga = await send('POST', '/v1/transactions', { mode: 'saga', delayMs: 10, branches: [{ action: url('/x'), compensate: url('/y') }] });
    assert.equal(saga.status, 400);
    assert.equal((saga.body.errors as Array<{ field: string }>)[0].field, 'delayMs');
  });
});

describe('DTM differences: the rest of DTM\'s HTTP API', () => {
  test('forceStop (the admin console posts {gid}) ends a retrying saga as failed without compensating; again is 409', async () => {
    const gid = await newGid();
    participant.on('/stop/a', () => serverError);
    await dtm('POST', 'submit', goTrans(gid, 'saga', { steps: [{ action: url('/stop/a'), compensate: url('/stop/a-undo') }], payloads: ['{}'], retry_interval: 1 }));
    await participant.waitFor((call) => call.gid === gid);
    const stopped = await dtm('POST', 'forceStop', { gid });
    assert.deepEqual([stopped.status, stopped.body], [200, { dtm_result: 'SUCCESS' }]);
    const query = await dtm('GET', `query?gid=${gid}`);
    assert.equal((query.body.transaction as Record<string, unknown>).status, 'failed');
    assert.match((query.body.transaction as Record<string, unknown>).rollback_reason as string, /forceStop/);
    assert.ok(!callsOf(gid).some((call) => call.op === 'compensate'), 'nothing is compensated');
    const again = await dtm('POST', 'forceStop', { gid });
    assert.deepEqual([again.status, again.body.dtm_result], [409, 'FAILURE']);
    const unknown = await dtm('POST', 'forceStop', { gid: 'never-created' });
    assert.deepEqual([unknown.status, unknown.body.dtm_result], [409, 'FAILURE']);
  });

  test('POST /v1/transactions/{gid}/force-stop is the native equivalent', async () => {
    const opened = await send('POST', '/v1/transactions', { mode: 'tcc', timeoutToFailMs: 60_000 });
    const gid = opened.body.gid as string;
    const stopped = await send('POST', `/v1/transactions/${gid}/force-stop`, { reason: 'settled by hand' });
    assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
    const transaction = stopped.body.transaction as Record<string, unknown>;
    assert.equal(transaction.status, 'failed');
    assert.match(transaction.reason as string, /settled by hand/);
    const again = await send('POST', `/v1/transactions/${gid}/force-stop`, { reason: 'again' });
    assert.equal(again.status, 409);
    assert.match(again.contentType, /problem\+json/);
  });

  test('prepare of a saga keeps its steps, calls nothing, and a later submit runs them; abort of it is refused', async () => {
    const gid = await newGid();
    const body = goTrans(gid, 'saga', { steps: [{ action: url('/prep/a'), compensate: url('/prep/c') }], payloads: ['{"p":1}'] });
    assert.deepEqual((await dtm('POST', 'prepare', body)).body, { dtm_result: 'SUCCESS' });
    assert.equal((await coordinator.store.get(gid))?.status, 'prepared');
    assert.equal(callsOf(gid).length, 0);
    const abort = await dtm('POST', 'abort', goTrans(gid, 'saga'));
    assert.deepEqual([abort.status, abort.body.dtm_result], [409, 'FAILURE']);
    assert.match(abort.body.message as string, /forceStop/);
    assert.deepEqual((await dtm('POST', 'submit', body)).body, { dtm_result: 'SUCCESS' });
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.deepEqual(callsOf(gid).map((call) => [call.path, call.body]), [['/prep/a', '{"p":1}']]);
  });

  test('resetNextCronTime (admin console, {gid}) retries a backed-off branch now', async () => {
    const gid = await newGid();
    participant.on('/reset/a', (_call, callsSoFar) => (callsSoFar === 0 ? serverError : undefined));
    // retry_interval 60 s: without the reset, the next attempt is at least 30 s away.
    const submitted = await dtm('POST', 'submit', goTrans(gid, 'saga', { steps: [{ action: url('/reset/a'), compensate: url('/reset/c') }], payloads: ['{}'], retry_interval: 60 }));
    assert.equal(submitted.status, 200, JSON.stringify(submitted.body));
    // The reset queues behind the round in flight, so it applies to the backed-off state.
    await participant.waitFor((call) => call.gid === gid);
    assert.deepEqual((await dtm('POST', 'resetNextCronTime', { gid })).body, { dtm_result: 'SUCCESS' });
    assert.equal(await waitEnd(gid, 10_000), 'succeeded');
  });

  test('resetCronTime retries every transaction whose next attempt is further than timeout seconds', async () => {
    const gid = await newGid();
    participant.on('/resetall/a', (_call, callsSoFar) => (callsSoFar === 0 ? serverError : undefined));
    const submitted = await dtm('POST', 'submit', goTrans(gid, 'saga', { steps: [{ action: url('/resetall/a'), compensate: url('/resetall/c') }], payloads: ['{}'], retry_interval: 60 }));
    assert.equal(submitted.status, 200, JSON.stringify(submitted.body));
    // From its first write on, the next attempt is a request timeout plus at least 30 s of backoff away.
    await participant.waitFor((call) => call.gid === gid);
    const reset = await dtm('GET', 'resetCronTime?timeout=10&limit=100');
    assert.equal(reset.status, 200);
    assert.equal(typeof reset.body.has_remaining, 'boolean');
    assert.ok((reset.body.succeed_count as number) >= 1);
    assert.equal(await waitEnd(gid, 10_000), 'succeeded');
  });

  test('version answers; DTM routes Tandem does not serve are 501 problems that say why and what to use', async () => {
    const openapi = (await send('GET', '/openapi.json')).body as { paths: Record<string, unknown> };
    for (const route of ['/v1/transactions/{gid}/force-stop', '/v1/transactions/{gid}/retry-now', '/api/dtmsvr/forceStop', '/api/dtmsvr/resetCronTime', '/api/dtmsvr/topic/{topicName}']) {
      assert.ok(route in openapi.paths, `${route} is in /openapi.json`);
    }
    const metrics = await fetch(`${coordinator.url}/api/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^# HELP tandem_/m, 'DTM\'s exporter path answers Tandem\'s metrics');
    const version = await dtm('GET', 'version');
    assert.equal(version.status, 200);
    assert.match(version.body.version as string, /^tandem-/);
    for (const [method, path, hint] of [
      ['GET', 'subscribe?topic=t&url=http://x', /broker target/],
      ['GET', 'unsubscribe?topic=t&url=http://x', /broker target/],
      ['DELETE', 'topic/orders', /no topic/],
      ['GET', 'scanKV?cat=topics', /\/v1\/kv/],
      ['GET', 'queryKV?cat=topics&key=k', /\/v1\/kv/],
    ] as const) {
      const refused = await dtm(method, path, undefined);
      assert.equal(refused.status, 501, path);
      assert.match(refused.contentType, /application\/problem\+json/);
      assert.equal(refused.body.dtm_result, 'FAILURE');
      assert.match(refused.body.detail as string, hint);
    }
  });

  test('all filters by createTimeStart and createTimeEnd (epoch ms, whole seconds, inclusive)', async () => {
    const gid = await newGid();
    await dtm('POST', 'prepare', goTrans(gid, 'tcc', { timeout_to_fail: 600 }));
    const createdAtMs = (await coordinator.store.get(gid))!.createdAtMs;
    const listed = async (query: string) => ((await dtm('GET', `all?transType=tcc&status=prepared&${query}`)).body.transactions as Array<{ gid: string }>).map((row) => row.gid);
    assert.ok((await listed(`createTimeStart=${createdAtMs}&createTimeEnd=${createdAtMs}`)).includes(gid));
    assert.ok(!(await listed(`createTimeStart=${createdAtMs + 1000}`)).includes(gid));
    assert.ok(!(await listed(`createTimeEnd=${createdAtMs - 1000}`)).includes(gid));
    const bad = await dtm('GET', 'all?createTimeStart=yesterday');
    assert.equal(bad.status, 400);
    assert.equal((bad.body.errors as Array<{ field: string }>)[0].field, 'createTimeStart');
    await dtm('POST', 'abort', goTrans(gid, 'tcc'));
  });
});
