// The versioned key-value store over real HTTP: versions and conflicts, listing by prefix,
// validation, read-modify-write under contention (no lost updates), and a restart.
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { KvClient, KvConflictError } from '../src/sdk/kv.js';
import { decide, prefixEnd } from '../src/kv/kv.js';
import { startCoordinator, type TestCoordinator } from './support/coordinator.js';

async function coordinatorFor(t: TestContext, options: Parameters<typeof startCoordinator>[0] = {}): Promise<TestCoordinator> {
  const coordinator = await startCoordinator(options);
  t.after(() => coordinator.close());
  return coordinator;
}

async function send(url: string, method: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(url, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

describe('kv: pure decisions', () => {
  test('expected versions, create-only, and no reuse of a deleted key\'s version', () => {
    const context = { nextRevision: 8, keyCount: 1, keysMax: 10 };
    assert.equal(decide(null, { type: 'put', key: 'k', valueJson: '1', expectedVersion: 0 }, context).apply, 'upsert');
    assert.deepEqual(decide(3, { type: 'put', key: 'k', valueJson: '1', expectedVersion: 0 }, context).outcome, { ok: false, reason: 'conflict', key: 'k', currentVersion: 3 });
    assert.deepEqual(decide(3, { type: 'put', key: 'k', valueJson: '1', expectedVersion: 3 }, context).outcome, { ok: true, type: 'put', key: 'k', version: 8, created: false });
    assert.deepEqual(decide(null, { type: 'delete', key: 'k', expectedVersion: null }, context).outcome, { ok: false, reason: 'not-found', key: 'k' });
    assert.deepEqual(decide(null, { type: 'put', key: 'k', valueJson: '1', expectedVersion: null }, { ...context, keyCount: 10 }).outcome, { ok: false, reason: 'full', key: 'k' });
    assert.equal(prefixEnd('a/'), 'a0');
    assert.equal(prefixEnd(''), null);
  });
});

describe('kv: HTTP API and SDK', () => {
  test('get returns value and version; put and delete with a stale version answer 409', async (t) => {
    const coordinator = await coordinatorFor(t);
    const kv = new KvClient({ url: coordinator.url });
    assert.equal(await kv.get('config/limits'), null);
    const created = await kv.put('config/limits', { rps: 10 }, { expectedVersion: 0 });
    assert.equal(created.created, true);
    assert.deepEqual(await kv.get('config/limits'), { key: 'config/limits', value: { rps: 10 }, version: created.version });
    await assert.rejects(kv.put('config/limits', { rps: 20 }, { expectedVersion: 0 }), (error: unknown) => error instanceof KvConflictError && error.currentVersion === created.version);
    const updated = await kv.put('config/limits', { rps: 20 }, { expectedVersion: created.version });
    assert.ok(updated.version > created.version);
    const stale = await send(`${coordinator.url}/v1/kv/config/limits`, 'PUT', { value: 1, expectedVersion: created.version });
    assert.equal(stale.status, 409);
    assert.equal(stale.json.type, 'urn:tandem:problem:version-conflict');
    assert.equal(stale.json.currentVersion, updated.version);
    await assert.rejects(kv.delete('config/limits', { expectedVersion: created.version }), KvConflictError);
    assert.equal(await kv.delete('config/limits', { expectedVersion: updated.version }), true);
    assert.equal(await kv.delete('config/limits'), false);
    // Created again, the key never gets a version an old reader could still hold.
    const reborn = await kv.put('config/limits', { rps: 5 });
    assert.ok(reborn.version > updated.version);
    await assert.rejects(kv.put('config/limits', 0, { expectedVersion: created.version }), KvConflictError);
  });

  test('lists by prefix in key order, a page at a time', async (t) => {
    const coordinator = await coordinatorFor(t);
    const kv = new KvClient({ url: coordinator.url });
    for (const key of ['users/3', 'users/1', 'users/2', 'usersx', 'user', 'orders/1', 'users/€']) await kv.put(key, key.length);
    const first = await kv.list({ prefix: 'users/', limit: 2 });
    assert.deepEqual(first.items.map((item) => item.key), ['users/1', 'users/2']);
    assert.ok(first.nextCursor);
    const second = await kv.list({ prefix: 'users/', limit: 2, cursor: first.nextCursor! });
    assert.deepEqual(second.items.map((item) => item.key), ['users/3', 'users/€']);
    assert.equal(second.nextCursor, null);
    assert.equal((await kv.list()).items.length, 7);
  });

  test('bad input gets 400 naming the field; an oversized value 413', async (t) => {
    const coordinator = await coordinatorFor(t, { limits: { kvKeyBytesMax: 16, kvValueBytesMax: 100, kvListLimitMax: 50 } });
    const base = `${coordinator.url}/v1/kv`;
    const cases: Array<[string, string, unknown, string]> = [
      ['PUT', `${base}/`, { value: 1 }, 'key'],
      ['PUT', `${base}/${'k'.repeat(17)}`, { value: 1 }, 'key'],
      ['PUT', `${base}/k`, {}, 'value'],
      ['PUT', `${base}/k`, { value: 1, expectedVersion: -1 }, 'expectedVersion'],
      ['PUT', `${base}/k`, { value: 1, expectedVersion: 'one' }, 'expectedVersion'],
      ['PUT', `${base}/k`, { value: 1, version: 2 }, 'version'],
      ['GET', `${base}/`, undefined, 'key'],
      ['DELETE', `${base}/k?expectedVersion=-3`, undefined, 'expectedVersion'],
      ['GET', `${base}?limit=51`, undefined, 'limit'],
      ['GET', `${base}?limit=0`, undefined, 'limit'],
    ];
    for (const [method, url, body, field] of cases) {
      const answer = await send(url, method, body);
      assert.equal(answer.status, 400, `${method} ${url} ${JSON.stringify(body)}`);
      const fields = (answer.json.errors as Array<{ field: string }>).map((error) => error.field);
      assert.ok(fields.includes(field), `expected ${field} among ${fields.join(', ')}`);
    }
    const large = await send(`${base}/k`, 'PUT', { value: 'x'.repeat(200) });
    assert.equal(large.status, 413);
    assert.equal((await send(`${base}/k`, 'GET')).status, 404, 'nothing was half written');
  });

  test('read-modify-write from many clients at once loses no update', async (t) => {
    const coordinator = await coordinatorFor(t);
    const kv = new KvClient({ url: coordinator.url });
    const clients = 8;
    const incrementsEach = 10;
    let retried = 0;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        for (let index = 0; index < incrementsEach; index++) {
          const result = await kv.readModifyWrite<number>('counter', (current) => (current ?? 0) + 1, { attemptsMax: 200 });
          if (result.attempts > 1) retried += 1;
        }
      }),
    );
    assert.equal((await kv.get<number>('counter'))?.value, clients * incrementsEach);
    assert.ok(retried > 0, 'the clients should have collided at least once');
  });

  test('keys and the revision counter survive a restart', async (t) => {
    const first = await startCoordinator();
    const kv = new KvClient({ url: first.url });
    const written = await kv.put('durable', { ok: true });
    await kv.put('gone', 1);
    await kv.delete('gone');
    await first.close();
    const second = await coordinatorFor(t, { dbPath: first.dbPath });
    const again = new KvClient({ url: second.url });
    assert.deepEqual(await again.get('durable'), { key: 'durable', value: { ok: true }, version: written.version });
    const next = await again.put('fresh', 1);
    assert.ok(next.version > written.version + 1, 'versions keep increasing across the restart');
  });
});
