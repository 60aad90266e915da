// The operator's API without a browser: force-stop with and without compensation, retry-now,
// the audit log (who, with authentication on; its file across a restart), the stuck view, and
// the console's metric parsing.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { closeCoordinator, endOf, startCoordinator, tempDir, type TestCoordinator } from './support/coordinator.js';
import { serverError, startParticipant } from './support/fake-participant.js';
import { serve } from '../src/server/serve.js';
import { newToken, tokenEntryLine } from '../src/server/auth.js';
import { AuditLog } from '../src/server/audit.js';
import { parsePrometheus, quantileBetween, total, buckets } from '../src/console/prometheus.js';
import { groupByUrl, stuckOps } from '../src/tx/stuck.js';
import { openStore } from '../src/store/open.js';
import { requireService, services } from './support/services.js';
import { Redis } from 'ioredis';
import type { Tx } from '../src/tx/types.js';

async function call(base: string, method: string, route: string, body?: unknown, bearer?: string) {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const response = await fetch(`${base}${route}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await response.text();
  return { status: response.status, body: (text ? JSON.parse(text) : null) as Record<string, any> };
}

/** A saga whose first branch succeeds and whose second answers 500 to every call. */
async function stuckSaga(coordinator: Pick<TestCoordinator, 'url'>, participantUrl: string, options: Record<string, unknown> = {}, bearer?: string): Promise<string> {
  const branch = (action: string) => ({ action: `${participantUrl}${action}`, compensate: `${participantUrl}/refund` });
  const created = await call(coordinator.url, 'POST', '/v1/transactions', { mode: 'saga', branches: [branch('/reserve'), branch('/pay')], ...options }, bearer);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  return created.body.gid as string;
}

test('force-stop needs a reason, ends a stuck saga at once, and is refused (and audited) on an ended one', async (t) => {
  const coordinator = await startCoordinator();
  t.after(() => closeCoordinator(coordinator));
  const participant = await startParticipant(t);
  participant.on('/pay', () => serverError);
  const gid = await stuckSaga(coordinator, participant.url);
  await participant.waitFor((c) => c.path === '/pay');

  assert.deepEqual((await call(coordinator.url, 'GET', '/v1/transaction-counts')).body.unfinished, { prepared: 0, submitted: 1, aborting: 0 });
  const noReason = await call(coordinator.url, 'POST', `/v1/transactions/${gid}/force-stop`, {});
  assert.equal(noReason.status, 400);
  assert.equal(noReason.body.errors[0].field, 'reason');
  const tooLong = await call(coordinator.url, 'POST', `/v1/transactions/${gid}/force-stop`, { reason: 'x'.repeat(1001) });
  assert.equal(tooLong.status, 400);
  assert.match(tooLong.body.detail, /operatorReasonLengthMax/);
  assert.equal((await call(coordinator.url, 'GET', '/v1/audit')).body.items.length, 0, 'invalid requests are not actions');

  const stopped = await call(coordinator.url, 'POST', `/v1/transactions/${gid}/force-stop`, { reason: 'pay is down' });
  assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
  assert.equal(stopped.body.transaction.status, 'failed');
  assert.equal(stopped.body.transaction.phase, 'force-stopped');
  const ended = await endOf(coordinator.client, gid);
  assert.equal(ended.reason, 'force-stopped by an operator: pay is down');
  assert.equal(participant.callsTo('/refund').length, 0, 'without compensation nothing is called');

  assert.deepEqual((await call(coordinator.url, 'GET', '/v1/transaction-counts')).body.unfinished, { prepared: 0, submitted: 0, aborting: 0 });
  const again = await call(coordinator.url, 'POST', `/v1/transactions/${gid}/force-stop`, { reason: 'twice' });
  assert.equal(again.status, 409);
  const missing = await call(coordinator.url, 'POST', '/v1/transactions/no-such-gid/force-stop', { reason: 'typo' });
  assert.equal(missing.status, 404);
  const audit = (await call(coordinator.url, 'GET', '/v1/audit')).body.items as Array<Record<string, unknown>>;
  assert.deepEqual(audit.map((entry) => [entry.seq, entry.outcome, entry.gid]), [[3, 'not-found', 'no-such-gid'], [2, 'refused', gid], [1, 'applied', gid]]);
  assert.equal(audit[2].detail, 'failed/force-stopped');
  assert.equal(audit[2].reason, 'pay is down');
  assert.equal(typeof audit[2].at, 'string');
});

test('force-stop with compensation rolls a saga back through its compensations', async (t) => {
  const coordinator = await startCoordinator();
  t.after(() => closeCoordinator(coordinator));
  const participant = await startParticipant(t);
  participant.on('/pay', () => serverError);
  const gid = await stuckSaga(coordinator, participant.url);
  await participant.waitFor((c) => c.path === '/pay');
  const stopped = await call(coordinator.url, 'POST', `/v1/transactions/${gid}/force-stop`, { reason: 'roll it back', compensate: true });
  assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
  assert.equal(stopped.body.transaction.status, 'aborting');
  const ended = await endOf(coordinator.client, gid);
  assert.equal(ended.status, 'failed');
  assert.equal(ended.phase, 'done');
  // Both branches may have run (branch 02's action was called), so both are compensated.
  assert.deepEqual(participant.callsTo('/refund').map((c) => c.branchId).sort(), ['01', '02']);
  const audit = (await call(coordinator.url, 'GET', '/v1/audit')).body.items as Array<Record<string, unknown>>;
  assert.equal(audit[0].compensate, true);
});

test('retry-now calls a pending branch at once instead of after its backoff', async (t) => {
  const coordinator = await startCoordinator();
  t.after(() => closeCoordinator(coordinator));
  const participant = await startParticipant(t);
  participant.on('/pay', () => serverError);
  // The first retry would come 30 to 60 s later; the test times out long before.
  const gid = await stuckSaga(coordinator, participant.url, { retryIntervalMs: 60_000 });
  await participant.waitFor((c) => c.path === '/pay');
  const retried = await call(coordinator.url, 'POST', `/v1/transactions/${gid}/retry-now`, { reason: 'pay is back' });
  assert.equal(retried.status, 200, JSON.stringify(retried.body));
  await participant.waitFor((c) => c.path === '/pay' && participant.callsTo('/pay').length >= 2);
  assert.equal((await call(coordinator.url, 'GET', '/v1/audit')).body.items[0].action, 'retry-now');
  // A TCC still prepared waits for its application: retry-now has nothing to call and says so.
  const tcc = await call(coordinator.url, 'POST', '/v1/transactions', { mode: 'tcc', timeoutToFailMs: 600_000 });
  assert.equal(tcc.status, 201);
  const waiting = await call(coordinator.url, 'POST', `/v1/transactions/${tcc.body.gid}/retry-now`, {});
  assert.equal(waiting.status, 409);
  assert.match(waiting.body.detail, /nothing to call now/);
  await call(coordinator.url, 'POST', `/v1/transactions/${gid}/force-stop`, { reason: 'cleanup' });
  const afterEnd = await call(coordinator.url, 'POST', `/v1/transactions/${gid}/retry-now`, {});
  assert.equal(afterEnd.status, 409);
});

test('stuck transactions are grouped by branch URL; bad thresholds are 400s naming the field', { timeout: 30_000 }, async (t) => {
  const coordinator = await startCoordinator();
  t.after(() => closeCoordinator(coordinator));
  const participant = await startParticipant(t);
  participant.on('/pay', () => serverError);
  const gid = await stuckSaga(coordinator, participant.url, { retryIntervalMs: 100 });
  // The second call goes out only after the first one's failure is stored.
  await participant.waitFor((c) => c.path === '/pay' && participant.callsTo('/pay').length >= 2);
  const stuck = await call(coordinator.url, 'GET', '/v1/stuck?retryingForMs=0&attemptsMin=1000');
  assert.equal(stuck.status, 200);
  assert.equal(stuck.body.complete, true);
  assert.equal(stuck.body.groups.length, 1);
  assert.equal(stuck.body.groups[0].url, `${participant.url}/pay`);
  assert.equal(stuck.body.groups[0].ops[0].gid, gid);
  assert.deepEqual(stuck.body.groups[0].ops[0].kinds, ['retrying']);
  const quiet = await call(coordinator.url, 'GET', '/v1/stuck?attemptsMin=1000');
  assert.equal(quiet.body.groups.length, 0, 'not retrying for 60 s yet, nor failed 1000 times');
  const bad = await call(coordinator.url, 'GET', '/v1/stuck?retryingForMs=-1');
  assert.equal(bad.status, 400);
  assert.equal(bad.body.errors[0].field, 'retryingForMs');
});

test('with authentication on, force-stop needs admin, the audit entry names the token, and /ui stays open', async (t) => {
  const adminToken = newToken();
  const clientToken = newToken();
  const dir = tempDir();
  const auditPath = path.join(dir, 'audit.jsonl');
  const running = await serve({
    host: '127.0.0.1',
    port: 0,
    storeUrl: `sqlite:${path.join(dir, 'tandem.db')}`,
    sqliteSync: 'normal',
    logLevel: 'silent',
    limits: { recoveryIntervalMs: 100 },
    tokens: `${tokenEntryLine('ops-alice', 'admin', adminToken)},${tokenEntryLine('shop', 'client', clientToken)}`,
    auditLogPath: auditPath,
  });
  t.after(async () => {
    await running.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const participant = await startParticipant(t);
  participant.on('/pay', () => serverError);
  const gid = await stuckSaga(running, participant.url, {}, clientToken);
  assert.equal((await call(running.url, 'POST', `/v1/transactions/${gid}/force-stop`, { reason: 'x' }, clientToken)).status, 403);
  assert.equal((await call(running.url, 'GET', '/v1/audit')).status, 401);
  const ui = await fetch(`${running.url}/ui/`);
  assert.equal(ui.status, 200);
  assert.match(ui.headers.get('content-security-policy') ?? '', /script-src 'self' 'sha256-/);
  assert.equal((await fetch(`${running.url}/ui/vendor/preact.js`)).status, 200);
  assert.equal((await fetch(`${running.url}/ui/app/..%2Fserver%2Fserve.js`)).status, 404, 'only console modules are served');
  const stopped = await call(running.url, 'POST', `/v1/transactions/${gid}/force-stop`, { reason: 'by hand' }, adminToken);
  assert.equal(stopped.status, 200, JSON.stringify(stopped.body));
  const audit = await call(running.url, 'GET', '/v1/audit', undefined, adminToken);
  assert.equal(audit.body.items[0].actor, 'ops-alice');
  assert.equal(audit.body.file, true);
  const line = JSON.parse(fs.readFileSync(auditPath, 'utf8').trim()) as Record<string, unknown>;
  assert.equal(line.actor, 'ops-alice');
  assert.equal(line.gid, gid);
});

test('the audit file refills the ring after a restart, the numbering goes on, and the ring is bounded', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'audit.jsonl');
  const first = new AuditLog(2, file);
  for (const gid of ['a', 'b', 'c']) await first.record({ actor: null, remoteAddress: '127.0.0.1', action: 'force-stop', gid, reason: 'r', outcome: 'applied', detail: 'failed/force-stopped' });
  assert.deepEqual(first.page(10).items.map((entry) => entry.gid), ['c', 'b'], 'the ring keeps auditEntriesMax entries');
  fs.appendFileSync(file, '{"seq": 99, "cut by a cra');
  const second = new AuditLog(10, file);
  assert.deepEqual(second.page(10).items.map((entry) => entry.seq), [3, 2, 1], 'a torn last line is skipped');
  const next = await second.record({ actor: 'x', remoteAddress: '127.0.0.1', action: 'retry-now', gid: 'd', reason: '', outcome: 'applied', detail: 'submitted/action' });
  assert.equal(next.seq, 4);
  const older = second.page(2);
  assert.deepEqual(older.items.map((entry) => entry.seq), [4, 3]);
  assert.deepEqual(second.page(2, older.nextBefore ?? undefined).items.map((entry) => entry.seq), [2, 1]);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the console parses the coordinator\'s Prometheus text and interpolates quantiles', async (t) => {
  const coordinator = await startCoordinator();
  t.after(() => closeCoordinator(coordinator));
  const participant = await startParticipant(t);
  for (let index = 0; index < 2; index++) {
    const created = await call(coordinator.url, 'POST', '/v1/transactions', { mode: 'saga', branches: [{ action: `${participant.url}/a`, compensate: `${participant.url}/c` }] });
    await endOf(coordinator.client, created.body.gid as string);
  }
  const samples = parsePrometheus(await (await fetch(`${coordinator.url}/metrics`)).text());
  assert.equal(total(samples, 'tandem_transactions_ended_total', { outcome: 'succeeded' }), 2);
  assert.equal(total(samples, 'tandem_branch_call_duration_seconds_count'), 2);
  assert.equal(buckets(samples, 'tandem_branch_call_duration_seconds').at(-1)?.count, 2);
  const before = [{ le: 0.1, count: 0 }, { le: 1, count: 0 }, { le: Infinity, count: 0 }];
  const after = [{ le: 0.1, count: 50 }, { le: 1, count: 100 }, { le: Infinity, count: 100 }];
  assert.equal(quantileBetween(before, after, 0.5), 0.1);
  assert.ok(Math.abs((quantileBetween(before, after, 0.75) ?? 0) - 0.55) < 1e-9);
  assert.equal(quantileBetween(after, after, 0.5), null, 'nothing observed between two equal scrapes');
  assert.deepEqual(parsePrometheus('# HELP x\nx{a="q\\"uote"} 3\nbad line\ny +Inf'), [{ name: 'x', labels: { a: 'q"uote' }, value: 3 }, { name: 'y', labels: {}, value: Infinity }]);
});

test('stuck rule: aborting and repeated failures by threshold, ended and untried transactions never', () => {
  const tx = (status: Tx['status'], attempts: number): Tx => ({
    gid: `g-${status}-${attempts}`,
    mode: 'saga',
    status,
    phase: status === 'aborting' ? 'compensate' : 'action',
    branches: [{ branchId: '01', ops: { action: { url: 'http://127.0.0.1:1/a', status: 'pending', attempts }, compensate: { url: 'http://127.0.0.1:1/c', status: 'pending', attempts } } }],
    options: { timeoutToFailMs: 0, requestTimeoutMs: 1000, retryIntervalMs: 100, retryIntervalMsMax: 1000, retryLimit: null, branchHeaders: {}, concurrent: false },
    createdAtMs: 0,
    updatedAtMs: 0,
    nextAttemptAtMs: status === 'succeeded' ? null : 10,
    roundsWithoutProgress: 0,
    version: 1,
  });
  const thresholds = { retryingForMs: 1000, abortingForMs: 500, attemptsMin: 3 };
  assert.deepEqual(stuckOps(tx('aborting', 1), 0, 600, thresholds)[0]?.kinds, ['aborting']);
  assert.deepEqual(stuckOps(tx('submitted', 1), 0, 600, thresholds), [], 'retrying, but not for long');
  assert.deepEqual(stuckOps(tx('submitted', 3), 0, 600, thresholds)[0]?.kinds, ['failing-repeatedly']);
  assert.deepEqual(stuckOps(tx('submitted', 0), 0, 5000, thresholds), [], 'never called, so not failing');
  assert.deepEqual(stuckOps(tx('succeeded', 9), 0, 5000, thresholds), []);
  const ops = [...stuckOps(tx('aborting', 4), 0, 600, thresholds), ...stuckOps(tx('submitted', 5), 100, 600, thresholds)];
  const groups = groupByUrl(ops, 1);
  assert.deepEqual(groups.map((group) => [group.url, group.count, group.ops.length]), [['http://127.0.0.1:1/a', 2, 1], ['http://127.0.0.1:1/c', 2, 1]]);
});

test('the list\'s createdBefore starts at an age, on the first page only', async (t) => {
  const coordinator = await startCoordinator();
  t.after(() => closeCoordinator(coordinator));
  const participant = await startParticipant(t);
  const gids: string[] = [];
  for (let index = 0; index < 3; index++) {
    const created = await call(coordinator.url, 'POST', '/v1/transactions', { mode: 'saga', branches: [{ action: `${participant.url}/a`, compensate: `${participant.url}/c` }] });
    gids.push(created.body.gid as string);
  }
  const stored = await call(coordinator.url, 'GET', `/v1/transactions/${gids[1]}`);
  const createdMs = Date.parse(stored.body.createdAt as string);
  const all = await call(coordinator.url, 'GET', `/v1/transactions?createdBefore=${new Date(Date.now() + 86_400_000).toISOString()}`);
  assert.equal(all.body.items.length, 3);
  const older = await call(coordinator.url, 'GET', `/v1/transactions?createdBefore=${new Date(createdMs).toISOString()}`);
  assert.ok(older.body.items.every((item: { createdAt: string }) => Date.parse(item.createdAt) < createdMs), 'only transactions created before the instant');
  assert.ok(!older.body.items.some((item: { gid: string }) => item.gid === gids[1]));
  const none = await call(coordinator.url, 'GET', '/v1/transactions?createdBefore=2000-01-01T00:00:00Z');
  assert.deepEqual(none.body.items, []);
  const bad = await call(coordinator.url, 'GET', '/v1/transactions?createdBefore=yesterday');
  assert.equal(bad.status, 400);
  assert.equal(bad.body.errors[0].field, 'createdBefore');
  const page = await call(coordinator.url, 'GET', '/v1/transactions?limit=1');
  const both = await call(coordinator.url, 'GET', `/v1/transactions?cursor=${page.body.nextCursor}&createdBefore=2000-01-01T00:00:00Z`);
  assert.equal(both.status, 400);
  assert.equal(both.body.errors[0].field, 'createdBefore');
});

test('Redis counts unfinished transactions from its status sets', async (t) => {
  if (!(await requireService(t, 'redis'))) return;
  const prefix = `tandem-h12-counts:${process.pid}:${Date.now()}:`;
  const store = await openStore(`${services.redis.url}/0?prefix=${encodeURIComponent(prefix)}`, { sqliteSync: 'normal', postgresPoolSizeMax: 2, postgresFlushesInFlightMax: 1, storeConnectTimeoutMs: 3000, storeCommandTimeoutMs: 5000 });
  t.after(async () => {
    await store.close();
    const redis = new Redis(services.redis.url);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });
  const base: Tx = {
    gid: 'c1', mode: 'saga', status: 'submitted', phase: 'action', branches: [],
    options: { timeoutToFailMs: 0, requestTimeoutMs: 1000, retryIntervalMs: 100, retryIntervalMsMax: 1000, retryLimit: null, branchHeaders: {}, concurrent: false },
    createdAtMs: 1, updatedAtMs: 1, nextAttemptAtMs: 5, roundsWithoutProgress: 0, version: 1,
  };
  assert.ok(await store.insert(base, []));
  assert.ok(await store.insert({ ...base, gid: 'c2', status: 'aborting', phase: 'compensate' }, []));
  assert.ok(await store.insert({ ...base, gid: 'c3', status: 'succeeded', phase: 'done', nextAttemptAtMs: null }, []));
  assert.deepEqual(await store.countUnfinished?.(), { prepared: 0, submitted: 1, aborting: 1 });
  assert.ok(await store.update({ ...base, status: 'failed', phase: 'done', nextAttemptAtMs: null, version: 2 }, 1, []));
  assert.deepEqual(await store.countUnfinished?.(), { prepared: 0, submitted: 0, aborting: 1 });
});
