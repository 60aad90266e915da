// The DTM-compatible API, driven with request bodies shaped exactly as DTM's SDKs send them
// (Go dtmcli, Java, C#, Python, Node), against a real coordinator and a real scripted
// participant.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startCoordinator, type TestCoordinator } from './support/coordinator.js';
import { FakeParticipant, refuse, serverError, type RecordedCall } from './support/fake-participant.js';

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
  await coordinator?.close();
});

async function dtm(method: 'GET' | 'POST', path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(`${coordinator.url}/api/dtmsvr/${path}`, {
    method,
    ...(body === undefined ? { headers } : { headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  return { status: response.status, contentType: response.headers.get('content-type') ?? '', body: (await response.json()) as Record<string, unknown> };
}

async function newGid(): Promise<string> {
  const answer = await dtm('GET', 'newGid');
  assert.equal(answer.status, 200);
  assert.equal(answer.body.dtm_result, 'SUCCESS');
  assert.equal(typeof answer.body.gid, 'string');
  return answer.body.gid as string;
}

function url(path: string): string {
  return `${participant.url}${path}`;
}

function callsOf(gid: string): RecordedCall[] {
  return participant.calls.filter((call) => call.gid === gid);
}

async function waitEnd(gid: string): Promise<string> {
  return (await coordinator.client.waitResult(gid, { timeoutMs: 20_000 })).status;
}

function assertProblemNaming(answer: Answer, field: string, messagePart?: string): void {
  assert.equal(answer.status, 400, JSON.stringify(answer.body));
  assert.match(answer.contentType, /application\/problem\+json/);
  assert.equal(answer.body.dtm_result, 'FAILURE');
  const errors = answer.body.errors as Array<{ field: string; message: string }>;
  const named = errors.find((error) => error.field === field);
  assert.ok(named, `expected a problem naming ${field}, got ${JSON.stringify(errors)}`);
  if (messagePart) assert.match(named.message, new RegExp(messagePart));
}

describe('DTM-compatible API', () => {
  test('a Go dtmcli saga runs its actions in order with the payloads as bodies, and query shows it', async () => {
    const gid = await newGid();
    // dtmcli.NewSaga(...).Add(...).Add(...).Submit(): TransBase marshalled by encoding/json.
    const submitted = await dtm('POST', 'submit', {
      gid,
      trans_type: 'saga',
      concurrent: false,
      protocol: '',
      steps: [
        { action: url('/go/out'), compensate: url('/go/out-undo') },
        { action: url('/go/in'), compensate: url('/go/in-undo') },
      ],
      payloads: ['{"amount":30}', '{"amount":30,"to":"b"}'],
      timeout_to_fail: 60,
      retry_interval: 2,
      branch_headers: { 'x-tenant': 't1' },
      passthrough_headers: ['X-Request-Id'],
    }, { 'x-request-id': 'req-7', 'x-not-passed': 'no' });
    assert.deepEqual(submitted, { status: 200, contentType: submitted.contentType, body: { dtm_result: 'SUCCESS' } });
    assert.equal(await waitEnd(gid), 'succeeded');

    const calls = callsOf(gid);
    assert.deepEqual(calls.map((call) => [call.path, call.method, call.branchId, call.op, call.transType, call.body]), [
      ['/go/out', 'POST', '01', 'action', 'saga', '{"amount":30}'],
      ['/go/in', 'POST', '02', 'action', 'saga', '{"amount":30,"to":"b"}'],
    ]);
    for (const call of calls) {
      assert.deepEqual([call.headers['x-tenant'], call.headers['x-request-id'], call.headers['x-not-passed']], ['t1', 'req-7', undefined]);
    }
    const options = (await coordinator.store.get(gid))?.options;
    assert.deepEqual([options?.timeoutToFailMs, options?.retryIntervalMs], [60_000, 2_000], 'DTM seconds become milliseconds');

    const query = await dtm('GET', `query?gid=${gid}`);
    assert.equal(query.status, 200);
    const transaction = query.body.transaction as Record<string, unknown>;
    assert.equal(transaction.gid, gid);
    assert.equal(transaction.trans_type, 'saga');
    assert.equal(transaction.status, 'succeed');
    assert.equal(typeof transaction.finish_time, 'string');
    assert.deepEqual([transaction.timeout_to_fail, transaction.retry_interval], [60, 2]);
    assert.ok(!Object.values(transaction).includes(null), 'absent values are left out, not null (C# reads them as non-nullable)');
    const branches = query.body.branches as Array<Record<string, unknown>>;
    assert.deepEqual(branches.map((branch) => [branch.branch_id, branch.op, branch.status, branch.url]), [
      ['01', 'compensate', 'prepared', url('/go/out-undo')],
      ['01', 'action', 'succeed', url('/go/out')],
      ['02', 'compensate', 'prepared', url('/go/in-undo')],
      ['02', 'action', 'succeed', url('/go/in')],
    ]);
    assert.equal(Buffer.from(branches[1].bin_data as string, 'base64').toString(), '{"amount":30}');
  });

  test('a Java saga whose third action is refused ends failed, compensating in reverse and skipping an empty compensate', async () => {
    const gid = await newGid();
    participant.on('/java/c', () => refuse);
    // The Java client's SagaOperatorParam: nulls and zeros for unset options, and its subType tag.
    const submitted = await dtm('POST', 'submit', {
      gid,
      trans_type: 'saga',
      subType: 'saga',
      steps: [
        { action: url('/java/a'), compensate: '' },
        { action: url('/java/b'), compensate: url('/java/b-undo') },
        { action: url('/java/c'), compensate: url('/java/c-undo') },
      ],
      payloads: ['{"n":1}', '{"n":2}', '{"n":3}'],
      custom_data: null,
      wait_result: false,
      timeout_to_fail: 0,
      retry_interval: 0,
      passthrough_headers: [],
      branch_headers: {},
    });
    assert.equal(submitted.status, 200, JSON.stringify(submitted.body));
    assert.equal(await waitEnd(gid), 'failed');

    assert.deepEqual(callsOf(gid).map((call) => `${call.branchId}/${call.op}`), ['01/action', '02/action', '03/action', '03/compensate', '02/compensate']);
    const query = await dtm('GET', `query?gid=${gid}`);
    const transaction = query.body.transaction as Record<string, unknown>;
    assert.equal(transaction.status, 'failed');
    assert.match(transaction.rollback_reason as string, /03/);
    assert.equal(typeof transaction.rollback_time, 'string');
    const action3 = (query.body.branches as Array<Record<string, unknown>>).find((row) => row.branch_id === '03' && row.op === 'action');
    assert.equal(action3?.status, 'failed');
  });

  test('a C# concurrent saga with orders runs independent steps together and a dependent step after them', async () => {
    const gid = await newGid();
    // Step 0 answers only once step 1 has been called: that proves 0 and 1 run concurrently.
    participant.on('/cs/a0', async () => {
      await participant.waitFor((call) => call.gid === gid && call.path === '/cs/a1');
      return undefined;
    });
    const submitted = await dtm('POST', 'submit', {
      gid,
      trans_type: 'saga',
      custom_data: JSON.stringify({ orders: { 2: [0, 1] }, concurrent: true }),
      wait_result: false,
      timeout_to_fail: 0,
      retry_interval: 0,
      passthrough_headers: null,
      branch_headers: null,
      steps: [0, 1, 2].map((index) => ({ action: url(`/cs/a${index}`), compensate: url(`/cs/c${index}`) })),
      payloads: ['"zero"', '"one"', '"two"'],
      query_prepared: null,
    });
    assert.equal(submitted.status, 200, JSON.stringify(submitted.body));
    assert.equal(await waitEnd(gid), 'succeeded');

    const paths = callsOf(gid).map((call) => call.path);
    assert.deepEqual([...paths].sort(), ['/cs/a0', '/cs/a1', '/cs/a2']);
    assert.equal(paths[2], '/cs/a2', 'step 2 waits for steps 0 and 1');
    const stored = await coordinator.store.get(gid);
    assert.deepEqual(stored?.branches.map((branch) => branch.dependsOn ?? []), [[], [], ['01', '02']]);
    const query = await dtm('GET', `query?gid=${gid}`);
    const transaction = query.body.transaction as Record<string, unknown>;
    assert.equal(transaction.concurrent, true);
    assert.equal(transaction.custom_data, JSON.stringify({ orders: { 2: [0, 1] }, concurrent: true }));
  });

  test('an old Python saga with steps[i].data works', async () => {
    const gid = await newGid();
    const submitted = await dtm('POST', 'submit', {
      gid,
      trans_type: 'saga',
      steps: [{ data: '{"py":true}', action: url('/py/a'), compensate: url('/py/c') }],
    });
    assert.equal(submitted.status, 200, JSON.stringify(submitted.body));
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.deepEqual(callsOf(gid).map((call) => [call.path, call.body]), [['/py/a', '{"py":true}']]);
  });

  test('Go TCC: prepare, registerBranch twice, submit calls both confirms with the registered data', async () => {
    const gid = await newGid();
    const base = { gid, trans_type: 'tcc', concurrent: false, protocol: '' };
    assert.deepEqual((await dtm('POST', 'prepare', base)).body, { dtm_result: 'SUCCESS' });
    assert.deepEqual((await dtm('POST', 'prepare', base)).body, { dtm_result: 'SUCCESS' }, 'prepare again while prepared is fine');
    for (const [branchId, data] of [['01', '{"amount":30}'], ['02', '{"amount":40}']]) {
      const registered = await dtm('POST', 'registerBranch', {
        gid,
        trans_type: 'tcc',
        data,
        branch_id: branchId,
        confirm: url(`/tcc/confirm${branchId}`),
        cancel: url(`/tcc/cancel${branchId}`),
      });
      assert.deepEqual(registered.body, { dtm_result: 'SUCCESS' });
    }
    // The SDK retrying a registration is a no-op, as in DTM.
    const again = await dtm('POST', 'registerBranch', { gid, trans_type: 'tcc', data: '{}', branch_id: '01', confirm: url('/tcc/other'), cancel: url('/tcc/other') });
    assert.equal(again.status, 200);
    const prepared = await dtm('GET', `query?gid=${gid}`);
    assert.equal((prepared.body.transaction as Record<string, unknown>).status, 'prepared');

    assert.deepEqual((await dtm('POST', 'submit', base)).body, { dtm_result: 'SUCCESS' });
    assert.equal(await waitEnd(gid), 'succeeded');
    const calls = callsOf(gid).map((call) => [call.path, call.op, call.transType, call.method, call.body]).sort();
    assert.deepEqual(calls, [
      ['/tcc/confirm01', 'confirm', 'tcc', 'POST', '{"amount":30}'],
      ['/tcc/confirm02', 'confirm', 'tcc', 'POST', '{"amount":40}'],
    ]);
    const query = await dtm('GET', `query?gid=${gid}`);
    assert.deepEqual((query.body.branches as Array<Record<string, unknown>>).map((row) => `${row.branch_id}/${row.op}/${row.status}`), [
      '01/cancel/prepared',
      '01/confirm/succeed',
      '02/cancel/prepared',
      '02/confirm/succeed',
    ]);
    const late = await dtm('POST', 'registerBranch', { gid, trans_type: 'tcc', data: '', branch_id: '03', confirm: url('/x'), cancel: url('/x') });
    assert.equal(late.status, 409);
    assert.equal(late.body.dtm_result, 'FAILURE');
  });

  test('Node TCC through registerTccBranch, then abort with a reason calls the cancels', async () => {
    const gid = await newGid();
    const base = { gid, trans_type: 'tcc' };
    assert.equal((await dtm('POST', 'prepare', base)).status, 200);
    const registered = await dtm('POST', 'registerTccBranch', {
      gid,
      branch_id: '01',
      trans_type: 'tcc',
      status: 'prepared',
      data: '{"sku":7}',
      try: url('/node/try'),
      confirm: url('/node/confirm'),
      cancel: url('/node/cancel'),
    });
    assert.equal(registered.status, 200, JSON.stringify(registered.body));
    const aborted = await dtm('POST', 'abort', { ...base, rollback_reason: 'try of 01 failed' });
    assert.deepEqual(aborted.body, { dtm_result: 'SUCCESS' });
    assert.equal(await waitEnd(gid), 'failed');
    assert.deepEqual(callsOf(gid).map((call) => [call.path, call.op, call.body]), [['/node/cancel', 'cancel', '{"sku":7}']]);
    const query = await dtm('GET', `query?gid=${gid}`);
    assert.equal((query.body.transaction as Record<string, unknown>).rollback_reason, 'try of 01 failed');
    // A finished transaction can be neither submitted nor aborted again.
    const resubmitted = await dtm('POST', 'submit', base);
    assert.deepEqual([resubmitted.status, resubmitted.body.dtm_result], [409, 'FAILURE']);
    assert.match(resubmitted.body.message as string, /failed/);
    const reaborted = await dtm('POST', 'abort', base);
    assert.deepEqual([reaborted.status, reaborted.body.dtm_result], [409, 'FAILURE']);
  });

  test('wait_result answers after the branches ran: SUCCESS, or 409 FAILURE with the reason', async () => {
    const okGid = await newGid();
    const ok = await dtm('POST', 'submit', {
      gid: okGid,
      trans_type: 'saga',
      wait_result: true,
      steps: [{ action: url('/wait/a'), compensate: url('/wait/c') }],
      payloads: ['{}'],
    });
    assert.deepEqual(ok.body, { dtm_result: 'SUCCESS' });
    assert.equal(callsOf(okGid).length, 1, 'the action ran before the answer');
    assert.equal((await coordinator.store.get(okGid))?.status, 'succeeded');

    participant.on('/wait/refuse', () => refuse);
    const failGid = await newGid();
    const failed = await dtm('POST', 'submit', {
      gid: failGid,
      trans_type: 'saga',
      wait_result: true,
      steps: [
        { action: url('/wait/a'), compensate: url('/wait/c') },
        { action: url('/wait/refuse'), compensate: url('/wait/c') },
      ],
      payloads: ['{}', '{}'],
    });
    assert.equal(failed.status, 409);
    assert.equal(failed.body.dtm_result, 'FAILURE');
    assert.match(failed.body.message as string, /02/);
    assert.equal((await coordinator.store.get(failGid))?.status, 'failed');

    // A transient error leaves the saga running: 425 ONGOING, and it succeeds on retry.
    participant.on('/wait/flaky', (_call, callsSoFar) => (callsSoFar === 0 ? serverError : undefined));
    const flakyGid = await newGid();
    const flaky = await dtm('POST', 'submit', {
      gid: flakyGid,
      trans_type: 'saga',
      wait_result: true,
      steps: [{ action: url('/wait/flaky'), compensate: url('/wait/c') }],
      payloads: ['{}'],
    });
    assert.deepEqual([flaky.status, flaky.body.dtm_result], [425, 'ONGOING']);
    assert.equal(await waitEnd(flakyGid), 'succeeded');
  });

  test('submit again: accepted while submitted, refused once finished; prepare and abort refusals', async () => {
    const gid = await newGid();
    const body = { gid, trans_type: 'saga', steps: [{ action: url('/again/a'), compensate: url('/again/c') }], payloads: ['{}'] };
    assert.equal((await dtm('POST', 'submit', body)).status, 200);
    assert.equal(await waitEnd(gid), 'succeeded');
    const again = await dtm('POST', 'submit', body);
    assert.deepEqual([again.status, again.body.dtm_result], [409, 'FAILURE']);
    assert.match(again.body.message as string, /succeed/);
    assert.equal(callsOf(gid).length, 1, 'nothing ran twice');

    const prepared = await dtm('POST', 'prepare', { gid, trans_type: 'tcc' });
    assert.deepEqual([prepared.status, prepared.body.dtm_result], [409, 'FAILURE']);
    const abortSaga = await dtm('POST', 'abort', { gid, trans_type: 'saga' });
    assert.deepEqual([abortSaga.status, abortSaga.body.dtm_result], [409, 'FAILURE']);
    // As in DTM, submitting a tcc gid never prepared opens and decides an empty transaction.
    const emptyTcc = await newGid();
    assert.deepEqual((await dtm('POST', 'submit', { gid: emptyTcc, trans_type: 'tcc' })).body, { dtm_result: 'SUCCESS' });
    assert.equal(await waitEnd(emptyTcc), 'succeeded');
    const unknown = await dtm('POST', 'registerBranch', { gid: 'no-such-gid', trans_type: 'tcc', branch_id: '01', data: '', confirm: '', cancel: '' });
    assert.deepEqual([unknown.status, unknown.body.dtm_result], [409, 'FAILURE']);
  });

  test('query of an unknown gid answers a null transaction; without gid it is a 400', async () => {
    const unknown = await dtm('GET', 'query?gid=never-created');
    assert.deepEqual(unknown, { status: 200, contentType: unknown.contentType, body: { transaction: null, branches: [] } });
    assertProblemNaming(await dtm('GET', 'query'), 'gid');
  });

  test('malformed requests are 400 problems naming the DTM field, and nothing is written', async () => {
    const steps = [
      { action: url('/bad/a'), compensate: url('/bad/c') },
      { action: url('/bad/b'), compensate: url('/bad/d') },
    ];
    assertProblemNaming(await dtm('POST', 'submit', { trans_type: 'saga', steps, payloads: ['{}', '{}'] }), 'gid', 'required');
    const cases: Array<[Record<string, unknown>, string, string?]> = [
      [{ trans_type: 'bogus', steps, payloads: ['{}', '{}'] }, 'trans_type'],
      // DTM's workflow protocol submits with req_extra (see dtm-workflow.test.ts); steps are no workflow.
      [{ trans_type: 'workflow', steps, payloads: ['{}', '{}'] }, 'req_extra'],
      [{ trans_type: 'msg', steps: [{ action: 'rabbitmq:orders/created' }], payloads: ['{}'] }, 'steps[0].action', 'no rabbitmq connection'],
      [{ trans_type: 'msg', steps: [{ action: url('/bad/m') }], payloads: ['{}'], query_prepared: 'nope' }, 'query_prepared'],
      [{ trans_type: 'saga', steps, payloads: ['{}'] }, 'payloads'],
      [{ trans_type: 'saga', steps: [steps[0], { action: 'not a url', compensate: url('/bad/d') }], payloads: ['{}', '{}'] }, 'steps[1].action'],
      [{ trans_type: 'saga', steps: [steps[0], { compensate: url('/bad/d') }], payloads: ['{}', '{}'] }, 'steps[1].action'],
      [{ trans_type: 'saga', steps, payloads: ['{}', '{}'], timeout_to_fail: -1 }, 'timeout_to_fail'],
      [{ trans_type: 'saga', steps, payloads: ['{}', '{}'], custom_data: '{"concurrent":true,"orders":{"1":[5]}}' }, 'custom_data.orders.1'],
      [{ trans_type: 'saga', steps, payloads: ['{}', '{}'], custom_data: '{"concurrent":true,"orders":{"0":[1],"1":[0]}}' }, 'custom_data.orders', 'cycle'],
      [{ trans_type: 'saga', steps: [], payloads: [] }, 'steps'],
    ];
    for (const [body, field, message] of cases) {
      const gid = await newGid();
      assertProblemNaming(await dtm('POST', 'submit', { gid, ...body }), field, message);
      const query = await dtm('GET', `query?gid=${gid}`);
      assert.equal(query.body.transaction, null, `nothing written for a bad ${field}`);
    }
    assertProblemNaming(await dtm('POST', 'prepare', { gid: 'saga-prepare', trans_type: 'saga' }), 'steps');
    assertProblemNaming(await dtm('POST', 'registerBranch', { gid: 'x', trans_type: 'tcc', data: '' , confirm: '', cancel: '' }), 'branch_id');
    assertProblemNaming(await dtm('POST', 'registerXaBranch', { gid: 'x', trans_type: 'xa', branch_id: '01', url: 'not a url' }), 'url');
    assertProblemNaming(await dtm('POST', 'prepare', { gid: 'msg-prepare', trans_type: 'msg', steps: [{ action: url('/bad/m') }], payloads: ['{}'] }), 'query_prepared');
    assert.equal(participant.calls.filter((call) => call.path.startsWith('/bad/')).length, 0);
  });

  test('Go msg: prepare with query_prepared, then submit with the same body delivers the steps in order', async () => {
    const gid = await newGid();
    // dtmcli.NewMsg(server, gid).Add(url, payload).Add(...).Prepare(queryPrepared), then Submit().
    const body = {
      gid,
      trans_type: 'msg',
      steps: [{ action: url('/msg/a') }, { action: url('/msg/b') }],
      payloads: ['{"amount":30}', '{"amount":30}'],
      query_prepared: url('/msg/query'),
      custom_data: '',
      wait_result: false,
      timeout_to_fail: 0,
      request_timeout: 0,
      retry_interval: 0,
      retry_limit: 0,
    };
    assert.equal((await dtm('POST', 'prepare', body)).body.dtm_result, 'SUCCESS');
    const prepared = await dtm('GET', `query?gid=${gid}`);
    assert.equal((prepared.body.transaction as Record<string, unknown>).status, 'prepared');
    assert.equal((prepared.body.transaction as Record<string, unknown>).query_prepared, url('/msg/query'));
    assert.equal((await dtm('POST', 'submit', body)).body.dtm_result, 'SUCCESS');
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.deepEqual(callsOf(gid).map((call) => [call.path, call.branchId, call.op, call.transType, call.body]), [
      ['/msg/a', '01', 'action', 'msg', '{"amount":30}'],
      ['/msg/b', '02', 'action', 'msg', '{"amount":30}'],
    ]);
  });

  test('msg prepared and never submitted: the coordinator asks query_prepared (branch 00, op msg) and delivers on SUCCESS', async () => {
    const gid = await newGid();
    const body = { gid, trans_type: 'msg', steps: [{ action: url('/msg2/a') }], payloads: ['{}'], query_prepared: url('/msg2/query'), timeout_to_fail: 1 };
    assert.equal((await dtm('POST', 'prepare', body)).body.dtm_result, 'SUCCESS');
    assert.equal(await waitEnd(gid), 'succeeded');
    assert.deepEqual(callsOf(gid).map((call) => [call.path, call.branchId, call.op]), [
      ['/msg2/query', '00', 'msg'],
      ['/msg2/a', '01', 'action'],
    ]);
  });

  test('Go XA: prepare, registerBranch with url, submit calls op=commit on each branch; abort calls op=rollback', async () => {
    for (const ending of ['submit', 'abort'] as const) {
      const gid = await newGid();
      assert.equal((await dtm('POST', 'prepare', { gid, trans_type: 'xa', timeout_to_fail: 30 })).body.dtm_result, 'SUCCESS');
      for (const branchId of ['01', '02']) {
        const registered = await dtm('POST', 'registerBranch', { gid, branch_id: branchId, trans_type: 'xa', url: url(`/xa/${branchId}`), data: '{"x":1}' });
        assert.equal(registered.body.dtm_result, 'SUCCESS');
      }
      assert.equal((await dtm('POST', ending, { gid, trans_type: 'xa' })).body.dtm_result, 'SUCCESS');
      assert.equal(await waitEnd(gid), ending === 'submit' ? 'succeeded' : 'failed');
      const op = ending === 'submit' ? 'commit' : 'rollback';
      assert.deepEqual(callsOf(gid).map((call) => [call.path, call.op, call.transType]).sort(), [[`/xa/01`, op, 'xa'], [`/xa/02`, op, 'xa']]);
      const query = await dtm('GET', `query?gid=${gid}`);
      assert.deepEqual((query.body.branches as Array<{ op: string }>).map((branch) => branch.op), ['rollback', 'commit', 'rollback', 'commit']);
    }
  });

  test('all pages newest first with position and limit; ping answers pong', async () => {
    const gids: string[] = [];
    for (let index = 0; index < 3; index += 1) {
      const gid = await newGid();
      gids.push(gid);
      const answer = await dtm('POST', 'prepare', { gid, trans_type: 'tcc', timeout_to_fail: 600 });
      assert.equal(answer.status, 200);
    }
    const seen: string[] = [];
    let position = '';
    for (let pageCount = 0; pageCount < 50; pageCount += 1) {
      const page = await dtm('GET', `all?status=prepared&transType=tcc&limit=1${position ? `&position=${encodeURIComponent(position)}` : ''}`);
      assert.equal(page.status, 200, JSON.stringify(page.body));
      const transactions = page.body.transactions as Array<Record<string, unknown>>;
      assert.ok(transactions.length <= 1);
      for (const transaction of transactions) {
        assert.deepEqual([transaction.trans_type, transaction.status], ['tcc', 'prepared']);
        seen.push(transaction.gid as string);
      }
      position = page.body.next_position as string;
      if (position === '') break;
    }
    assert.deepEqual(seen.filter((gid) => gids.includes(gid)), [...gids].reverse());
    const one = await dtm('GET', `all?gid=${gids[0]}`);
    assert.deepEqual((one.body.transactions as Array<Record<string, unknown>>).map((transaction) => transaction.gid), [gids[0]]);
    assertProblemNaming(await dtm('GET', 'all?limit=abc'), 'limit');
    assertProblemNaming(await dtm('GET', 'all?status=done'), 'status');

    const ping = await fetch(`${coordinator.url}/api/ping`);
    assert.deepEqual(await ping.json(), { msg: 'pong' });
    for (const gid of gids) assert.equal((await dtm('POST', 'abort', { gid, trans_type: 'tcc' })).status, 200);
  });
});
