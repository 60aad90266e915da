// DTM's workflow protocol, with requests shaped as DTM's Go client (client/workflow) sends them:
// prepareWorkflow with the TransBase (custom_data {name, data}, query_prepared = the callback),
// registerBranch with data/branch_id/op/status, submit with req_extra {status, rollback_reason,
// result}. The application dies between branches; the coordinator calls the workflow back,
// and the resumed run sees its progresses and finishes.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { closeCoordinator, startCoordinator, type TestCoordinator } from './support/coordinator.js';

let coordinator: TestCoordinator;

before(async () => {
  // The callback comes one retry interval (1 s, with jitter) after the last report; a quick scan finds it.
  coordinator = await startCoordinator({ limits: { recoveryIntervalMs: 50 } });
});

after(async () => {
  await closeCoordinator(coordinator);
});

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

async function dtm<T>(path: string, body: unknown): Promise<{ status: number; body: T }> {
  const response = await request(`${coordinator.url}/api/dtmsvr/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await response.body.text();
  return { status: response.statusCode, body: JSON.parse(text) as T };
}

interface Progresses {
  transaction: { gid: string; status: string; rollback_reason: string; result: string };
  progresses: Array<{ branch_id: string; op: string; status: string; bin_data: string }>;
}

/** The TransBase the Go client posts to prepareWorkflow. */
function transBase(gid: string, name: string, data: string, callback: string) {
  return {
    gid,
    trans_type: 'workflow',
    custom_data: JSON.stringify({ name, data: b64(data) }),
    steps: null,
    payloads: null,
    query_prepared: callback,
    protocol: 'http',
    concurrent: false,
  };
}

test('prepareWorkflow, registerBranch with op and status, the callback on recovery, and submit', async () => {
  const callbacks: Array<{ query: URLSearchParams; body: string }> = [];
  let resumed: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (resumed = resolve));
  let callbackUrl = '';
  // The application's workflow endpoint: on the callback it resumes the workflow as the Go
  // client does (prepareWorkflow for the progresses, the missing branch, submit).
  const app = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      void (async () => {
        const query = new URL(req.url ?? '/', 'http://x').searchParams;
        callbacks.push({ query, body });
        const gid = query.get('gid') ?? '';
        const progress = await dtm<Progresses>('prepareWorkflow', transBase(gid, 'transfer', body, callbackUrl));
        const done = new Set(progress.body.progresses.map((item) => `${item.branch_id}-${item.op}`));
        if (!done.has('02-action')) {
          await dtm('registerBranch', { gid, trans_type: 'workflow', data: '{"credited":30}', branch_id: '02', op: 'action', status: 'succeed' });
        }
        await dtm('submit', { gid, trans_type: 'workflow', req_extra: { status: 'succeed', rollback_reason: '', result: b64('"transferred"') } });
        res.end(JSON.stringify({ dtm_result: 'SUCCESS' }));
        resumed();
      })();
    });
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  const address = app.address();
  callbackUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/api/workflow/resume`;
  try {
    const gid = 'dtm-wf-1';
    const first = await dtm<Progresses>('prepareWorkflow', transBase(gid, 'transfer', '{"amount":30}', callbackUrl));
    assert.equal(first.status, 200);
    assert.deepEqual(first.body, { transaction: { gid, status: 'prepared', rollback_reason: '', result: '' }, progresses: [] });
    const registered = await dtm<{ dtm_result: string }>('registerBranch', { gid, trans_type: 'workflow', data: '{"debited":30}', branch_id: '01', op: 'action', status: 'succeed' });
    assert.deepEqual(registered.body, { dtm_result: 'SUCCESS' });
    // The application dies here. The coordinator calls the workflow back, and it finishes.
    await finished;
    assert.equal(callbacks.length, 1);
    assert.equal(callbacks[0].query.get('trans_type'), 'workflow');
    assert.equal(callbacks[0].query.get('branch_id'), '00');
    assert.equal(callbacks[0].query.get('op'), 'transfer');
    assert.equal(callbacks[0].body, '{"amount":30}');
    const view = await request(`${coordinator.url}/v1/workflows/${gid}?waitMs=10000`).then((response) => response.body.json() as Promise<{ status: string; steps: Array<{ name: string }> }>);
    assert.equal(view.status, 'succeeded');
    assert.deepEqual(view.steps.map((step) => step.name), ['01', '02']);
    const last = await dtm<Progresses>('prepareWorkflow', transBase(gid, 'transfer', '{"amount":30}', callbackUrl));
    assert.deepEqual(last.body.transaction, { gid, status: 'succeed', rollback_reason: '', result: b64('"transferred"') });
    assert.deepEqual(last.body.progresses, [
      { branch_id: '01', op: 'action', status: 'succeed', bin_data: b64('{"debited":30}') },
      { branch_id: '02', op: 'action', status: 'succeed', bin_data: b64('{"credited":30}') },
    ]);
    // Ended: no more branches.
    const late = await dtm<{ dtm_result: string }>('registerBranch', { gid, trans_type: 'workflow', data: '', branch_id: '03', op: 'action', status: 'succeed' });
    assert.equal(late.status, 409);
    assert.equal(late.body.dtm_result, 'FAILURE');
  } finally {
    await new Promise<void>((resolve) => app.close(() => resolve()));
  }
});

test('a failed DTM workflow keeps its rollback reason and its rollback branches', async () => {
  const gid = 'dtm-wf-2';
  const callback = 'http://127.0.0.1:9/never';
  await dtm('prepareWorkflow', transBase(gid, 'transfer', '{}', callback));
  await dtm('registerBranch', { gid, trans_type: 'workflow', data: '', branch_id: '01', op: 'action', status: 'succeed' });
  await dtm('registerBranch', { gid, trans_type: 'workflow', data: 'insufficient balance', branch_id: '02', op: 'action', status: 'failed' });
  await dtm('registerBranch', { gid, trans_type: 'workflow', data: '', branch_id: '01', op: 'rollback', status: 'succeed' });
  const submitted = await dtm<{ dtm_result: string }>('submit', { gid, trans_type: 'workflow', req_extra: { status: 'failed', rollback_reason: 'insufficient balance', result: '' } });
  assert.deepEqual(submitted.body, { dtm_result: 'SUCCESS' });
  const again = await dtm<Progresses>('prepareWorkflow', transBase(gid, 'transfer', '{}', callback));
  assert.equal(again.body.transaction.status, 'failed');
  assert.equal(again.body.transaction.rollback_reason, 'insufficient balance');
  assert.deepEqual(again.body.progresses.map((item) => [item.branch_id, item.op, item.status]), [['01', 'action', 'succeed'], ['01', 'rollback', 'succeed'], ['02', 'action', 'failed']]);
  const bad = await dtm<{ errors?: Array<{ field: string }> }>('registerBranch', { gid, trans_type: 'workflow', branch_id: '03', op: 'action', status: 'maybe' });
  assert.equal(bad.status, 400);
  assert.ok(bad.body.errors?.some((item) => item.field === 'status'));
});
