// Hostile input at the HTTP boundary: branch headers the HTTP client would refuse, JSON nested
// deep enough to overflow a recursive parser, header values shown back to readers, router
// errors, the released-lease count of a closed session, and branch URLs that point at
// link-local or metadata addresses. Every refusal is a 400 problem+json naming the field and
// writes nothing. No test here lets the coordinator call anything but 127.0.0.1: every URL
// outside loopback is refused before it could be stored, and the transactions that do get
// stored are TCC/XA ones that are never submitted, with loopback branches only.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { request } from 'undici';
import { limitDefaults } from '../src/config.js';
import { closeCoordinator, startCoordinator, type TestCoordinator } from './support/coordinator.js';
import { FakeParticipant } from './support/fake-participant.js';
import { jsonDeeperThan, refusedAddressOf, refusedHeaderReason } from '../src/server/validation.js';

const cliPath = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const runFile = promisify(execFile);
// Nothing listens on port 9; and no test here lets the coordinator call it anyway.
const loopback = 'http://127.0.0.1:9';
const farFutureMs = 3_600_000;

interface Answer {
  status: number;
  contentType: string;
  text: string;
  body: unknown;
}

interface ProblemBody {
  status: number;
  detail: string;
  errors?: Array<{ field: string; message: string }>;
}

async function send(base: string, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: string | object, headers: Record<string, string> = {}): Promise<Answer> {
  const text = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const response = await request(`${base}${path}`, {
    method,
    headers: text === undefined ? headers : { 'content-type': 'application/json', ...headers },
    body: text,
  });
  const raw = await response.body.text();
  let parsed: unknown = raw;
  try {
    parsed = JSON.parse(raw);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.statusCode, contentType: String(response.headers['content-type'] ?? ''), text: raw, body: parsed };
}

function assertProblem(answer: Answer, status: number, field?: string, pattern?: RegExp): ProblemBody {
  assert.equal(answer.status, status, `expected ${status}, got ${answer.status}: ${answer.text.slice(0, 300)}`);
  assert.match(answer.contentType, /^application\/problem\+json/, `problem+json, got ${answer.contentType}`);
  const problem = answer.body as ProblemBody;
  assert.equal(problem.status, status);
  if (field !== undefined) {
    const named = (problem.errors ?? []).filter((error) => error.field === field);
    assert.ok(named.length > 0, `the problem names ${field}: ${JSON.stringify(problem.errors)}`);
    if (pattern) assert.ok(named.some((error) => pattern.test(error.message)), `a message for ${field} matches ${pattern}: ${JSON.stringify(named)}`);
  }
  return problem;
}

function deep(depth: number): string {
  return `${'['.repeat(depth)}${']'.repeat(depth)}`;
}

const saga = (gid: string, extra: Record<string, unknown> = {}) => ({
  gid,
  mode: 'saga',
  branches: [{ action: `${loopback}/a`, compensate: `${loopback}/c` }],
  ...extra,
});

describe('input hardening: the pure checks', () => {
  test('jsonDeeperThan counts nesting outside strings, escapes included', () => {
    assert.equal(jsonDeeperThan('[[[]]]', 3), false);
    assert.equal(jsonDeeperThan('[[[[]]]]', 3), true);
    assert.equal(jsonDeeperThan('{"a":"[[[[[[","b":[{}]}', 3), false);
    assert.equal(jsonDeeperThan('{"a":"\\\\","b":[[[]]]}', 3), true, 'an escaped backslash does not escape the closing quote');
    assert.equal(jsonDeeperThan('{"a":"\\"[[[[","b":1}', 3), false, 'an escaped quote does not end the string');
    assert.equal(jsonDeeperThan(deep(100_000), 64), true);
  });

  test('refusedAddressOf matches literal link-local and metadata addresses only', () => {
    assert.equal(refusedAddressOf('http://169.254.169.254/x'), '169.254.169.254');
    assert.equal(refusedAddressOf('http://[::ffff:169.254.1.2]/'), '::ffff:a9fe:102');
    assert.equal(refusedAddressOf('http://[64:ff9b::169.254.169.254]/'), '64:ff9b::a9fe:a9fe');
    for (const fine of ['http://127.0.0.1/', 'http://169.255.0.1/', 'http://metadata.example/', 'http://[::1]/', 'not a url']) assert.equal(refusedAddressOf(fine), null, fine);
  });

  test('refusedHeaderReason ignores letter case', () => {
    for (const name of ['HOST', 'Transfer-Encoding', 'Tandem-Gid', 'CONTENT-TYPE']) assert.ok(refusedHeaderReason(name), name);
    for (const name of ['authorization', 'x-tandem-trace', 'content-language']) assert.equal(refusedHeaderReason(name), null, name);
  });
});

describe('input hardening', () => {
  let coordinator: TestCoordinator;
  let base: string;
  let counter = 0;
  const gidOf = (label: string) => `h2-${label}-${++counter}`;
  const stored = async (gid: string) => coordinator.store.get(gid);

  before(async () => {
    coordinator = await startCoordinator();
    base = coordinator.url;
  });
  after(() => closeCoordinator(coordinator));

  describe('A: branch headers the HTTP client refuses or Tandem sets itself', () => {
    const refusedNames = [
      'transfer-encoding',
      'Content-Length',
      'expect',
      'upgrade',
      'keep-alive',
      'connection',
      'host',
      'proxy-connection',
      'te',
      'trailer',
      'content-type',
      'Tandem-Gid',
      'TANDEM-OP',
      'tandem-fence',
      'tandem-anything',
    ];
    for (const name of refusedNames) {
      test(`native API refuses branchHeaders ${name}`, async () => {
        const gid = gidOf('hdr');
        const answer = await send(base, 'POST', '/v1/transactions', saga(gid, { branchHeaders: { 'x-fine': 'ok', [name]: 'chunked' } }));
        assertProblem(answer, 400, `branchHeaders.${name}`);
        assert.equal(await stored(gid), null, 'nothing is stored');
      });
    }

    for (const [label, value] of [['CR', 'a\rb'], ['LF', 'a\nb'], ['NUL', 'a\u0000b'], ['CRLF injection', 'v\r\nx-injected: 1']] as const) {
      test(`native API refuses a header value with ${label}`, async () => {
        const gid = gidOf('hdrval');
        const answer = await send(base, 'POST', '/v1/transactions', saga(gid, { branchHeaders: { 'x-trace': value } }));
        assertProblem(answer, 400, 'branchHeaders.x-trace');
        assert.equal(await stored(gid), null);
      });
    }

    test('a TCC transaction with refused headers is refused too (every mode shares the check)', async () => {
      const gid = gidOf('hdrtcc');
      const answer = await send(base, 'POST', '/v1/transactions', { gid, mode: 'tcc', timeoutToFailMs: farFutureMs, branchHeaders: { Upgrade: 'websocket' } });
      assertProblem(answer, 400, 'branchHeaders.Upgrade');
      assert.equal(await stored(gid), null);
    });

    test('DTM API refuses them in branch_headers, naming the DTM field', async () => {
      for (const name of ['transfer-encoding', 'Host', 'tandem-branch-id', 'Content-Type']) {
        const gid = gidOf('dtmhdr');
        const answer = await send(base, 'POST', '/api/dtmsvr/prepare', { gid, trans_type: 'tcc', timeout_to_fail: 3600, branch_headers: { [name]: 'x' } });
        const problem = assertProblem(answer, 400, `branch_headers.${name}`);
        assert.equal((problem as unknown as { dtm_result: string }).dtm_result, 'FAILURE');
        assert.equal(await stored(gid), null);
      }
    });

    test('DTM API refuses passthrough_headers that name such a header', async () => {
      const gid = gidOf('dtmpass');
      const answer = await send(base, 'POST', '/api/dtmsvr/prepare', { gid, trans_type: 'tcc', timeout_to_fail: 3600, passthrough_headers: ['x-request-id', 'Connection'] }, { 'x-request-id': 'r1' });
      assertProblem(answer, 400, 'passthrough_headers[1]');
      assert.equal(await stored(gid), null);
    });

    test('ordinary headers are still accepted', async () => {
      const gid = gidOf('hdrok');
      const answer = await send(base, 'POST', '/v1/transactions', { gid, mode: 'tcc', timeoutToFailMs: farFutureMs, branchHeaders: { Authorization: 'Bearer x', 'x-tenant': 't1', 'X-Tandem-Like': 'fine' } });
      assert.equal(answer.status, 201, answer.text);
      await send(base, 'POST', `/v1/transactions/${gid}/abort`);
    });
  });

  describe('B: JSON nested deeper than jsonDepthMax', () => {
    const depth = 10_000;

    test('branch payloads on create', async () => {
      const gid = gidOf('deep');
      const text = `{"gid":"${gid}","mode":"saga","branches":[{"action":"${loopback}/a","compensate":"${loopback}/c","payload":${deep(depth)}}]}`;
      assertProblem(await send(base, 'POST', '/v1/transactions', text), 400, 'body', /jsonDepthMax/);
      assert.equal(await stored(gid), null);
    });

    test('batch creation', async () => {
      const gid = gidOf('deepbatch');
      const text = `{"transactions":[{"gid":"${gid}","mode":"saga","branches":[{"action":"${loopback}/a","compensate":"${loopback}/c","payload":${deep(depth)}}]}]}`;
      assertProblem(await send(base, 'POST', '/v1/transactions/batch', text), 400, 'body', /jsonDepthMax/);
      assert.equal(await stored(gid), null);
    });

    test('TCC and XA registration', async () => {
      for (const mode of ['tcc', 'xa'] as const) {
        const gid = gidOf(`deep${mode}`);
        assert.equal((await send(base, 'POST', '/v1/transactions', { gid, mode, timeoutToFailMs: farFutureMs })).status, 201);
        const urls = mode === 'tcc' ? `"confirm":"${loopback}/c","cancel":"${loopback}/x"` : `"url":"${loopback}/xa"`;
        const answer = await send(base, 'POST', `/v1/transactions/${gid}/branches`, `{${urls},"payload":${deep(depth)}}`);
        assertProblem(answer, 400, 'body', /jsonDepthMax/);
        assert.equal((await stored(gid))?.branches.length, 0, 'nothing was registered');
        await send(base, 'POST', `/v1/transactions/${gid}/abort`);
      }
    });

    test('key-value values', async () => {
      const answer = await send(base, 'PUT', '/v1/kv/h2-deep-key', `{"value":${deep(depth)}}`);
      assertProblem(answer, 400, 'body', /jsonDepthMax/);
      assert.equal((await send(base, 'GET', '/v1/kv/h2-deep-key')).status, 404);
    });

    test('DTM API and the lock API', async () => {
      const gid = gidOf('deepdtm');
      const dtm = `{"gid":"${gid}","trans_type":"saga","steps":[{"action":"${loopback}/a","compensate":"${loopback}/c"}],"payloads":["{}"],"extra":${deep(depth)}}`;
      assertProblem(await send(base, 'POST', '/api/dtmsvr/submit', dtm), 400, 'body', /jsonDepthMax/);
      assert.equal(await stored(gid), null);
      const branch = `{"gid":"${gid}","trans_type":"tcc","branch_id":"01","confirm":"${loopback}/c","cancel":"${loopback}/x","data":"","x":${deep(depth)}}`;
      assertProblem(await send(base, 'POST', '/api/dtmsvr/registerBranch', branch), 400, 'body', /jsonDepthMax/);
      assertProblem(await send(base, 'POST', '/v1/locks/h2-deep/acquire', `{"ttlMs":1000,"owner":${deep(depth)}}`), 400, 'body', /jsonDepthMax/);
    });

    test('the limit is exact: a body at jsonDepthMax passes, one deeper is refused', async () => {
      // A registration body is one object, so its payload may nest jsonDepthMax - 1 levels.
      const body = (payloadDepth: number) => `{"confirm":"${loopback}/c","cancel":"${loopback}/x","payload":${deep(payloadDepth)}}`;
      const gid = gidOf('deepedge');
      assert.equal((await send(base, 'POST', '/v1/transactions', { gid, mode: 'tcc', timeoutToFailMs: farFutureMs })).status, 201);
      assertProblem(await send(base, 'POST', `/v1/transactions/${gid}/branches`, body(limitDefaults.jsonDepthMax)), 400, 'body', /jsonDepthMax/);
      const ok = await send(base, 'POST', `/v1/transactions/${gid}/branches`, body(limitDefaults.jsonDepthMax - 1));
      assert.equal(ok.status, 200, ok.text);
      // Brackets inside strings are text, not nesting.
      const gid2 = gidOf('deepstr');
      const inString = await send(base, 'POST', '/v1/transactions', `{"gid":"${gid2}","mode":"tcc","timeoutToFailMs":${farFutureMs},"branchHeaders":{"x-a":"${'['.repeat(500)}\\"${'{'.repeat(500)}"}}`);
      assert.equal(inString.status, 201, inString.text);
      for (const done of [gid, gid2]) await send(base, 'POST', `/v1/transactions/${done}/abort`);
    });

    test('a deeply nested DTM payload string is shown as text, not a 500', async () => {
      const gid = gidOf('deepview');
      const prepared = await send(base, 'POST', '/api/dtmsvr/prepare', {
        gid,
        trans_type: 'msg',
        timeout_to_fail: 3600,
        query_prepared: `${loopback}/query`,
        steps: [{ action: `${loopback}/a` }],
        payloads: [deep(depth)],
      });
      assert.equal(prepared.status, 200, prepared.text);
      const view = await send(base, 'GET', `/v1/transactions/${gid}`);
      assert.equal(view.status, 200, view.text.slice(0, 300));
      assert.equal((view.body as { branches: Array<{ payload: unknown }> }).branches[0].payload, deep(depth));
      await send(base, 'POST', '/api/dtmsvr/abort', { gid, trans_type: 'msg' });
    });
  });

  describe('C: header values are never shown', () => {
    const secret = 'Bearer h2-secret-token-41';

    test('native view, DTM query, DTM all and the CLI show header names only', async () => {
      const gid = gidOf('names');
      const created = await send(base, 'POST', '/v1/transactions', { gid, mode: 'tcc', timeoutToFailMs: farFutureMs, branchHeaders: { Authorization: secret, 'x-tenant': 't-secret-9' } });
      assert.equal(created.status, 201, created.text);
      assert.ok(!created.text.includes('h2-secret'), `the create answer hides values: ${created.text}`);
      const view = await send(base, 'GET', `/v1/transactions/${gid}`);
      assert.equal(view.status, 200);
      assert.ok(!view.text.includes('h2-secret') && !view.text.includes('t-secret-9'), `the view hides values: ${view.text}`);
      assert.deepEqual((view.body as { options: { branchHeaderNames: string[] } }).options.branchHeaderNames, ['Authorization', 'x-tenant']);
      for (const path of [`/api/dtmsvr/query?gid=${gid}`, `/api/dtmsvr/all?gid=${gid}`]) {
        const answer = await send(base, 'GET', path);
        assert.equal(answer.status, 200);
        assert.ok(!answer.text.includes('h2-secret') && !answer.text.includes('t-secret-9'), `${path} hides values: ${answer.text}`);
      }
      const query = (await send(base, 'GET', `/api/dtmsvr/query?gid=${gid}`)).body as { transaction: { branch_headers?: Record<string, string> } };
      assert.deepEqual(Object.keys(query.transaction.branch_headers ?? {}), ['Authorization', 'x-tenant'], 'DTM query keeps the names');
      for (const args of [['tx', 'show', gid], ['tx', 'show', gid, '--json'], ['tx', 'list', '--json']]) {
        const out = await runFile(process.execPath, [cliPath, ...args, '--url', base], { timeout: 20_000 });
        assert.ok(!out.stdout.includes('h2-secret') && !out.stdout.includes('t-secret-9'), `tandem ${args.join(' ')} hides values`);
      }
      const shown = await runFile(process.execPath, [cliPath, 'tx', 'show', gid, '--url', base], { timeout: 20_000 });
      assert.match(shown.stdout, /Authorization/, 'the CLI shows the header names');
      await send(base, 'POST', `/v1/transactions/${gid}/abort`);
    });
  });

  describe('D: router and framework errors are problem+json', () => {
    test('a bad percent-encoding in a path', async () => {
      assertProblem(await send(base, 'GET', '/v1/transactions/%ff'), 400, 'path');
      assertProblem(await send(base, 'POST', '/v1/transactions/%ff/submit'), 400, 'path');
    });

    test('an over-long path parameter', async () => {
      const answer = await send(base, 'GET', `/v1/locks/${'n'.repeat(8000)}`);
      assert.ok(answer.status >= 400 && answer.status < 500, `a 4xx, got ${answer.status}`);
      assertProblem(answer, answer.status, 'path');
      const gid = await send(base, 'GET', `/v1/transactions/${'g'.repeat(8000)}`);
      assertProblem(gid, gid.status);
      assert.ok(gid.status >= 400 && gid.status < 500);
    });

    test('a request the HTTP parser refuses', async () => {
      const raw = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(new URL(base).port as unknown as number, '127.0.0.1');
        let data = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk) => (data += chunk));
        socket.on('close', () => resolve(data));
        socket.on('error', reject);
        socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Line\r\n\r\n');
      });
      assert.match(raw, /^HTTP\/1\.1 400/);
      assert.match(raw, /content-type: application\/problem\+json/i);
      const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as ProblemBody;
      assert.equal(body.status, 400);
    });

    test('other framework refusals', async () => {
      assertProblem(await send(base, 'POST', '/v1/transactions', '{"mode":', {}), 400, 'body');
      assertProblem(await send(base, 'POST', '/v1/transactions', 'x', { 'content-type': 'text/xml' }), 400, 'content-type');
      assertProblem(await send(base, 'GET', '/nowhere'), 404);
    });
  });

  describe('E: closing a session reports the leases it released', () => {
    test('releasedLeases counts them', async () => {
      const opened = await send(base, 'POST', '/v1/sessions', { ttlMs: 60_000, owner: 'h2' });
      assert.equal(opened.status, 201, opened.text);
      const { sessionId } = opened.body as { sessionId: string };
      for (const name of ['h2-session-a', 'h2-session-b']) {
        const acquired = await send(base, 'POST', `/v1/locks/${name}/acquire`, { sessionId });
        assert.equal(acquired.status, 200, acquired.text);
      }
      const closed = await send(base, 'DELETE', `/v1/sessions/${sessionId}`);
      assert.equal(closed.status, 200, closed.text);
      assert.deepEqual(closed.body, { closed: true, releasedLeases: 2 });
      const lock = (await send(base, 'GET', '/v1/locks/h2-session-a')).body as { holders: unknown[] };
      assert.equal(lock.holders.length, 0);
    });
  });

  // Even if the URL check regressed, none of these requests could lead to a call outside
  // loopback: a refused URL sits only behind a step that never succeeds (the first branch's
  // call hangs at a participant the test owns, then fails), or in a confirm or queryPrepared
  // that only a submit or a far deadline would reach; transactions that might hold one are
  // never submitted nor aborted.
  describe('F: branch URLs', () => {
    const metadata = 'http://169.254.169.254/latest/meta-data/';
    let holder: FakeParticipant;
    let hold: string;

    before(async () => {
      holder = await new FakeParticipant().start();
      holder.on('/hold', () => 'hang');
      hold = `${holder.url}/hold`;
    });
    // Stopped before the coordinator: its hung calls then fail at once instead of holding the
    // coordinator's close until their request timeout.
    after(() => holder.stop());

    const refused = [
      metadata,
      'http://169.254.0.1:8080/x',
      'http://0xa9.0xfe.0xa9.0xfe/',
      'http://2852039166/',
      'http://[fe80::1]/x',
      'http://[FEBF::1]/x',
      'http://[fd00:ec2::254]/latest',
      'http://[::ffff:169.254.169.254]/',
      'file:///etc/passwd',
      'gopher://127.0.0.1:6379/_x',
    ];

    for (const url of refused) {
      test(`a saga refuses ${url}`, async () => {
        const gid = gidOf('url');
        const answer = await send(base, 'POST', '/v1/transactions', {
          gid,
          mode: 'saga',
          branches: [
            { action: hold, compensate: hold },
            { action: `${loopback}/a`, compensate: url },
          ],
        });
        assertProblem(answer, 400, 'branches[1].compensate');
        assert.equal(await stored(gid), null, 'nothing is stored');
      });
    }

    test('every branch field of every mode is checked', async () => {
      const never = { timeoutToFailMs: farFutureMs };
      const cases: Array<{ body: Record<string, unknown>; field: string }> = [
        { body: { mode: '2pc', ...never, branches: [{ prepare: hold, commit: metadata, rollback: `${loopback}/r` }] }, field: 'branches[0].commit' },
        { body: { mode: '3pc', ...never, branches: [{ canCommit: hold, preCommit: `${loopback}/b`, doCommit: metadata, abort: `${loopback}/d` }] }, field: 'branches[0].doCommit' },
        { body: { mode: 'msg', ...never, queryPrepared: hold, branches: [{ action: metadata }] }, field: 'branches[0].action' },
        { body: { mode: 'msg', ...never, branches: [{ action: hold }, { action: `${loopback}/a` }], queryPrepared: metadata }, field: 'queryPrepared' },
      ];
      for (const { body, field } of cases) {
        const gid = gidOf('urlmode');
        assertProblem(await send(base, 'POST', '/v1/transactions', { gid, ...body }), 400, field, /link-local|metadata/);
        assert.equal(await stored(gid), null);
      }
      const batchGid = gidOf('urlbatch');
      const batch = await send(base, 'POST', '/v1/transactions/batch', {
        transactions: [{ gid: batchGid, mode: 'saga', branches: [{ action: hold, compensate: hold }, { action: metadata, compensate: `${loopback}/c` }] }],
      });
      assertProblem(batch, 400, 'transactions[0].branches[1].action');
      assert.equal(await stored(batchGid), null);
    });

    test('TCC and XA registration refuse them; the loopback branch stays the only one', async () => {
      // Never submitted nor aborted: a confirm (TCC) or the one XA URL is then never called.
      for (const mode of ['tcc', 'xa'] as const) {
        const gid = gidOf(`urlreg${mode}`);
        assert.equal((await send(base, 'POST', '/v1/transactions', { gid, mode, timeoutToFailMs: farFutureMs })).status, 201);
        const good = mode === 'tcc' ? { confirm: `${loopback}/c`, cancel: `${loopback}/x` } : { url: `${loopback}/xa` };
        assert.equal((await send(base, 'POST', `/v1/transactions/${gid}/branches`, good)).status, 200);
        const bad = mode === 'tcc' ? { confirm: 'http://[fd00:ec2::254]/', cancel: `${loopback}/x` } : { url: metadata };
        assertProblem(await send(base, 'POST', `/v1/transactions/${gid}/branches`, bad), 400, mode === 'tcc' ? 'confirm' : 'url');
        assert.equal((await stored(gid))?.branches.length, 1, 'only the loopback branch is registered');
      }
    });

    test('the DTM API refuses them in steps, registerBranch and query_prepared', async () => {
      const sagaGid = gidOf('dtmurl');
      const saga = { gid: sagaGid, trans_type: 'saga', steps: [{ action: hold, compensate: hold }, { action: metadata, compensate: `${loopback}/c` }], payloads: ['{}', '{}'] };
      assertProblem(await send(base, 'POST', '/api/dtmsvr/submit', saga), 400, 'steps[1].action');
      assert.equal(await stored(sagaGid), null);
      const msgGid = gidOf('dtmurlmsg');
      const msg = { gid: msgGid, trans_type: 'msg', timeout_to_fail: 3600, query_prepared: metadata, steps: [{ action: hold }], payloads: ['{}'] };
      assertProblem(await send(base, 'POST', '/api/dtmsvr/prepare', msg), 400, 'query_prepared');
      assert.equal(await stored(msgGid), null);
      const tccGid = gidOf('dtmurltcc');
      assert.equal((await send(base, 'POST', '/api/dtmsvr/prepare', { gid: tccGid, trans_type: 'tcc', timeout_to_fail: 3600 })).status, 200);
      const branch = { gid: tccGid, trans_type: 'tcc', branch_id: '01', confirm: metadata, cancel: `${loopback}/x`, data: '' };
      assertProblem(await send(base, 'POST', '/api/dtmsvr/registerBranch', branch), 400, 'confirm');
      assert.equal((await stored(tccGid))?.branches.length, 0);
    });

    test('ordinary addresses still pass', async () => {
      const gid = gidOf('urlok');
      assert.equal((await send(base, 'POST', '/v1/transactions', { gid, mode: 'tcc', timeoutToFailMs: farFutureMs })).status, 201);
      for (const url of [`${loopback}/a`, 'http://[::1]:9/a', 'http://localhost:9/a', 'https://10.0.0.9:9/a', 'http://169.253.255.255:9/', 'http://[fec0::1]:9/']) {
        const answer = await send(base, 'POST', `/v1/transactions/${gid}/branches`, { confirm: url, cancel: `${loopback}/x` });
        assert.equal(answer.status, 200, `${url}: ${answer.text}`);
      }
      // Never submitted, so no confirm is called.
    });
  });
});
