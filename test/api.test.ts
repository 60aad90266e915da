// The native API over real HTTP: validation (every refusal is problem+json naming the field,
// and writes nothing), conflicts, reads, list filters and pagination, OpenAPI, metrics, and the
// CLI's `tx list` / `tx show` run as child processes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { request } from 'undici';
import type { TxListView, TxView } from '../src/shared/views.js';
import { startCoordinator, type TestCoordinator } from './support/coordinator.js';
import { FakeParticipant, refuse } from './support/fake-participant.js';

const endWaitMs = 15_000;
const cliPath = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const runFile = promisify(execFile);

interface Answer {
  status: number;
  contentType: string;
  body: unknown;
}

interface ProblemBody {
  type: string;
  status: number;
  detail: string;
  errors?: Array<{ field: string; message: string }>;
}

async function send(baseUrl: string, method: 'GET' | 'POST', pathAndQuery: string, body?: string | object): Promise<Answer> {
  const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const response = await request(`${baseUrl}${pathAndQuery}`, {
    method,
    headers: text === undefined ? {} : { 'content-type': 'application/json' },
    body: text,
  });
  const raw = await response.body.text();
  let parsed: unknown = raw;
  try {
    parsed = JSON.parse(raw);
  } catch {
    // not JSON (metrics): keep the text
  }
  return { status: response.statusCode, contentType: String(response.headers['content-type'] ?? ''), body: parsed };
}

function assertProblem(answer: Answer, status: number, field: string, messagePattern?: RegExp): void {
  assert.equal(answer.status, status, `expected ${status}, got ${answer.status}: ${JSON.stringify(answer.body)}`);
  assert.match(answer.contentType, /^application\/problem\+json/);
  const problem = answer.body as ProblemBody;
  assert.equal(problem.status, status);
  const named = (problem.errors ?? []).filter((error) => error.field === field);
  assert.ok(named.length > 0, `the problem names field ${field}: ${JSON.stringify(problem.errors)}`);
  if (messagePattern) assert.ok(named.some((error) => messagePattern.test(error.message)), `a message for ${field} matches ${messagePattern}: ${JSON.stringify(named)}`);
}

async function stopCoordinator(coordinator: TestCoordinator): Promise<void> {
  await coordinator.close();
  fs.rmSync(path.dirname(coordinator.dbPath), { recursive: true, force: true });
}

describe('refused requests', () => {
  let coordinator: TestCoordinator;
  // No branch is ever called: every request here is refused before anything is written.
  const unreachable = 'http://127.0.0.1:9';
  const sagaBranch = (extra: Record<string, unknown> = {}) => ({ action: `${unreachable}/a`, compensate: `${unreachable}/c`, ...extra });

  before(async () => {
    coordinator = await startCoordinator({ limits: { branchCountMax: 3, payloadBytesMax: 100, requestBodyBytesMax: 2000, branchHeadersBytesMax: 64 } });
  });
  after(() => stopCoordinator(coordinator));

  const cases: Array<{ name: string; body: Record<string, unknown>; field: string; message?: RegExp }> = [
    { name: 'unknown mode', body: { mode: 'xa-ish', branches: [sagaBranch()] }, field: 'mode' },
    { name: 'missing branches', body: { mode: 'saga' }, field: 'branches', message: /at least one/ },
    { name: 'a branch URL that is not a URL', body: { mode: 'saga', branches: [sagaBranch({ action: 'not a url' })] }, field: 'branches[0].action' },
    { name: 'a branch URL that is not http', body: { mode: 'saga', branches: [sagaBranch({ compensate: 'ftp://host/x' })] }, field: 'branches[0].compensate' },
    { name: 'a missing op URL', body: { mode: '2pc', branches: [{ prepare: `${unreachable}/p`, commit: `${unreachable}/c` }] }, field: 'branches[0].rollback' },
    { name: 'a negative timeout', body: { mode: 'saga', timeoutToFailMs: -1, branches: [sagaBranch()] }, field: 'timeoutToFailMs', message: /negative/ },
    { name: 'a timeout over its limit', body: { mode: 'saga', requestTimeoutMs: 1_000_000_000, branches: [sagaBranch()] }, field: 'requestTimeoutMs', message: /requestTimeoutMsMax/ },
    { name: 'a deadline over its limit', body: { mode: '2pc', timeoutToFailMs: 8 * 24 * 3600 * 1000, branches: [] }, field: 'timeoutToFailMs', message: /timeoutToFailMsMax/ },
    { name: 'a zero deadline for 2pc', body: { mode: '2pc', timeoutToFailMs: 0, branches: [{ prepare: `${unreachable}/p`, commit: `${unreachable}/c`, rollback: `${unreachable}/r` }] }, field: 'timeoutToFailMs' },
    { name: 'more branches than branchCountMax', body: { mode: 'saga', branches: [sagaBranch(), sagaBranch(), sagaBranch(), sagaBranch()] }, field: 'branches', message: /branchCountMax/ },
    { name: 'a payload over payloadBytesMax', body: { mode: 'saga', branches: [sagaBranch({ payload: { text: 'x'.repeat(120) } })] }, field: 'branches[0].payload', message: /payloadBytesMax/ },
    { name: 'branch headers over branchHeadersBytesMax', body: { mode: 'saga', branches: [sagaBranch()], branchHeaders: { 'x-big': 'y'.repeat(100) } }, field: 'branchHeaders', message: /branchHeadersBytesMax/ },
    { name: 'an invalid header name', body: { mode: 'saga', branches: [sagaBranch()], branchHeaders: { 'bad header': 'v' } }, field: 'branchHeaders.bad header' },
    { name: 'dependsOn naming no branch', body: { mode: 'saga', concurrent: true, branches: [sagaBranch(), sagaBranch({ dependsOn: ['99'] })] }, field: 'branches[1].dependsOn', message: /99/ },
    {
      name: 'dependsOn forming a cycle',
      body: { mode: 'saga', concurrent: true, branches: [sagaBranch({ branchId: 'a', dependsOn: ['b'] }), sagaBranch({ branchId: 'b', dependsOn: ['a'] })] },
      field: 'branches',
      message: /cycle/,
    },
    { name: 'dependsOn without concurrent', body: { mode: 'saga', branches: [sagaBranch(), sagaBranch({ dependsOn: ['01'] })] }, field: 'branches[1].dependsOn', message: /concurrent/ },
    { name: 'duplicate branch ids', body: { mode: 'saga', branches: [sagaBranch({ branchId: 'x' }), sagaBranch({ branchId: 'x' })] }, field: 'branches[1].branchId' },
    { name: 'concurrent outside a saga', body: { mode: '3pc', concurrent: true, branches: [] }, field: 'concurrent' },
    { name: 'an unknown field', body: { mode: 'saga', branches: [sagaBranch()], colour: 'red' }, field: 'colour' },
    { name: 'an unknown branch field', body: { mode: 'saga', branches: [sagaBranch({ colour: 'red' })] }, field: 'branches[0].colour' },
    { name: 'a bad gid', body: { gid: 'has space', mode: 'saga', branches: [sagaBranch()] }, field: 'gid' },
  ];

  cases.forEach(({ name, body, field, message }, index) => {
    test(`400 for ${name}, and nothing written`, async () => {
      const gid = typeof body.gid === 'string' ? body.gid : `refused-${index}`;
      const answer = await send(coordinator.url, 'POST', '/v1/transactions', { gid, ...body });
      assertProblem(answer, 400, field, message);
      await assertNothingWritten(gid);
    });
  });

  test('413 problem for a body over requestBodyBytesMax, and nothing written', async () => {
    const body = { gid: 'too-big', mode: 'saga', branches: [sagaBranch()], branchHeaders: { 'x-pad': 'p'.repeat(2100) } };
    const answer = await send(coordinator.url, 'POST', '/v1/transactions', body);
    assertProblem(answer, 413, 'body', /requestBodyBytesMax/);
    await assertNothingWritten('too-big');
  });

  test('400 problem for invalid JSON, and nothing written', async () => {
    const answer = await send(coordinator.url, 'POST', '/v1/transactions', '{"gid": "half", "mode": ');
    assertProblem(answer, 400, 'body', /JSON/);
    await assertNothingWritten('half');
  });

  test('submit, abort, read and register on an unknown gid answer 404 problems', async () => {
    for (const [method, suffix] of [['POST', '/submit'], ['POST', '/abort'], ['GET', ''], ['GET', '/result?timeoutMs=0']] as const) {
      const answer = await send(coordinator.url, method, `/v1/transactions/no-such-gid${suffix}`);
      assert.equal(answer.status, 404, `${method} ${suffix}`);
      assert.match(answer.contentType, /^application\/problem\+json/);
    }
    const register = await send(coordinator.url, 'POST', '/v1/transactions/no-such-gid/branches', { confirm: `${unreachable}/c`, cancel: `${unreachable}/x` });
    assert.equal(register.status, 404);
  });

  async function assertNothingWritten(gid: string): Promise<void> {
    const read = await send(coordinator.url, 'GET', `/v1/transactions/${encodeURIComponent(gid)}`);
    if (/^[A-Za-z0-9_.:-]+$/.test(gid)) assert.equal(read.status, 404, `${gid} was not written`);
    const list = await send(coordinator.url, 'GET', '/v1/transactions');
    assert.equal(list.status, 200);
    assert.deepEqual((list.body as TxListView).items, [], 'the store holds no transaction');
  }
});

describe('reads, conflicts and tools', () => {
  let coordinator: TestCoordinator;
  let participant: FakeParticipant;

  before(async () => {
    coordinator = await startCoordinator();
    participant = await new FakeParticipant().start();
    participant.on('/refuse', () => refuse);
  });
  after(async () => {
    await participant.stop();
    await stopCoordinator(coordinator);
  });

  const client = () => coordinator.client;

  async function endedSaga(gid: string, actionPath: string): Promise<TxView> {
    await client().create({ gid, mode: 'saga', branches: [{ action: `${participant.url}${actionPath}`, compensate: `${participant.url}/undo` }] });
    return client().waitResult(gid, { timeoutMs: endWaitMs });
  }

  test('a gid can be used once: the second create is 409 and changes nothing', async () => {
    const first = await endedSaga('dup-gid', '/ok');
    assert.equal(first.status, 'succeeded');
    const again = await send(coordinator.url, 'POST', '/v1/transactions', { gid: 'dup-gid', mode: 'tcc' });
    assert.equal(again.status, 409);
    assert.match(again.contentType, /^application\/problem\+json/);
    assert.match((again.body as ProblemBody).type, /gid-taken/);
    const stored = await client().get('dup-gid');
    assert.equal(stored.mode, 'saga');
    assert.equal(stored.status, 'succeeded');
  });

  test('list filters by status and mode, and pages with a cursor through every transaction once', async () => {
    const prepared = Array.from({ length: 25 }, (_, index) => `page-${String(index).padStart(2, '0')}`);
    for (const gid of prepared) await client().create({ gid, mode: 'tcc', branches: [] });
    assert.equal((await endedSaga('list-ok', '/ok')).status, 'succeeded');
    assert.equal((await endedSaga('list-refused', '/refuse')).status, 'failed');
    const twoPhase = await client().create({
      gid: 'list-2pc',
      mode: '2pc',
      branches: [{ prepare: `${participant.url}/p`, commit: `${participant.url}/c`, rollback: `${participant.url}/r` }],
    });
    assert.equal((await client().waitResult(twoPhase.gid, { timeoutMs: endWaitMs })).status, 'succeeded');

    const failed = await client().list({ status: 'failed' });
    assert.deepEqual(failed.items.map((item) => item.gid), ['list-refused']);
    const sagas = await client().list({ mode: 'saga', limit: 100 });
    assert.ok(sagas.items.every((item) => item.mode === 'saga'));
    assert.ok(['list-ok', 'list-refused'].every((gid) => sagas.items.some((item) => item.gid === gid)));
    const succeeded2pc = await client().list({ mode: '2pc', status: 'succeeded' });
    assert.deepEqual(succeeded2pc.items.map((item) => [item.gid, item.branchCount]), [['list-2pc', 1]]);

    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await client().list({ status: 'prepared', mode: 'tcc', limit: 10, cursor });
      assert.ok(page.items.length <= 10);
      seen.push(...page.items.map((item) => item.gid));
      cursor = page.nextCursor ?? undefined;
      pages += 1;
      assert.ok(pages <= 5, 'pagination ends');
    } while (cursor);
    assert.equal(pages, 3);
    assert.deepEqual([...seen].sort(), prepared, 'every prepared transaction seen exactly once');

    const badLimit = await send(coordinator.url, 'GET', '/v1/transactions?limit=1000');
    assertProblem(badLimit, 400, 'limit');
    const badStatus = await send(coordinator.url, 'GET', '/v1/transactions?status=done');
    assertProblem(badStatus, 400, 'status');
  });

  test('/openapi.json is an OpenAPI document', async () => {
    const answer = await send(coordinator.url, 'GET', '/openapi.json');
    assert.equal(answer.status, 200);
    assert.match(answer.contentType, /^application\/json/);
    const document = answer.body as { openapi?: unknown; paths?: Record<string, unknown> };
    assert.match(String(document.openapi), /^3\./);
    assert.ok(document.paths && '/v1/transactions' in document.paths);
    for (const route of ['/v1/services/{service}/instances', '/v1/locks/{name}/acquire', '/v1/kv/{key}', '/api/dtmsvr/submit', '/v1/transactions/{gid}/force-stop', '/v1/transactions/{gid}/retry-now', '/v1/audit', '/v1/stuck']) {
      assert.ok(route in document.paths, `${route} is missing from /openapi.json`);
    }
  });

  test('/metrics counts ended transactions in Prometheus text', async () => {
    assert.equal((await endedSaga('metrics-ok', '/ok')).status, 'succeeded');
    const answer = await send(coordinator.url, 'GET', '/metrics');
    assert.equal(answer.status, 200);
    assert.match(answer.contentType, /^text\/plain/);
    assert.match(String(answer.body), /^tandem_transactions_ended_total\{[^}]*mode="saga"[^}]*outcome="succeeded"[^}]*\} [1-9]/m);
  });

  test('the CLI lists and shows transactions of a running coordinator', async () => {
    assert.equal((await endedSaga('cli-failed', '/refuse')).status, 'failed');
    const list = await runFile(process.execPath, [cliPath, 'tx', 'list', '--status', 'failed', '--url', coordinator.url], { timeout: 20_000 });
    assert.match(list.stdout, /cli-failed\s+saga\s+failed/);
    const show = await runFile(process.execPath, [cliPath, 'tx', 'show', 'cli-failed', '--url', coordinator.url], { timeout: 20_000 });
    assert.match(show.stdout, /gid\s+cli-failed/);
    assert.match(show.stdout, /status\s+failed/);
    assert.match(show.stdout, /aborting\/compensate/, 'the history is shown');
    const json = await runFile(process.execPath, [cliPath, 'tx', 'show', 'cli-failed', '--json', '--url', coordinator.url], { timeout: 20_000 });
    assert.equal((JSON.parse(json.stdout) as TxView).status, 'failed');
    await assert.rejects(
      runFile(process.execPath, [cliPath, 'tx', 'show', 'no-such-gid', '--url', coordinator.url], { timeout: 20_000 }),
      (error: { code?: number; stderr?: string }) => error.code === 1 && /404/.test(error.stderr ?? ''),
    );
  });
});

describe('result long polls', () => {
  test('beyond resultWaitersMax a result wait answers 503; the open one still ends with its transaction', async (t) => {
    const coordinator = await startCoordinator({ limits: { resultWaitersMax: 1 } });
    t.after(() => coordinator.close());
    const opened = await coordinator.client.create({ mode: 'tcc', timeoutToFailMs: 60_000 });
    const waiting = coordinator.engine.waitForEnd(opened.gid, 30_000); // takes the only place at once
    const response = await request(`${coordinator.url}/v1/transactions/${opened.gid}/result?timeoutMs=1000`);
    assert.equal(response.statusCode, 503);
    assert.match(String(response.headers['content-type']), /application\/problem\+json/);
    assert.match(await response.body.text(), /resultWaitersMax/);
    await coordinator.client.abort(opened.gid);
    assert.equal((await waiting)?.status, 'failed');
  });
});
