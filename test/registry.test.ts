// The service registry: registrations with TTLs, and sagas whose branch URLs name a service,
// surviving the death of one of the service's instances.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { request } from 'undici';
import { limitDefaults } from '../src/config.js';
import { ServiceRegistry } from '../src/registry/registry.js';
import { registerInstance } from '../src/sdk/registry.js';
import { startCoordinator } from './support/coordinator.js';
import { FakeParticipant } from './support/fake-participant.js';

describe('service registry (pure)', () => {
  test('registrations expire after their TTL; a heartbeat extends them; round robin over the live ones', () => {
    let nowMs = 1_000;
    const registry = new ServiceRegistry(limitDefaults, () => nowMs);
    registry.register({ service: 'stock', instanceId: 'a', url: 'http://127.0.0.1:1', weight: 1, ttlMs: 1000 });
    registry.register({ service: 'stock', instanceId: 'b', url: 'http://127.0.0.1:2', weight: 1, ttlMs: 1000 });
    assert.deepEqual([registry.pick('stock')?.instanceId, registry.pick('stock')?.instanceId, registry.pick('stock')?.instanceId], ['a', 'b', 'a']);
    nowMs = 1_800;
    registry.register({ service: 'stock', instanceId: 'a', url: 'http://127.0.0.1:1', weight: 1, ttlMs: 1000 });
    nowMs = 2_100;
    assert.deepEqual(registry.instancesOf('stock').map((instance) => instance.instanceId), ['a'], 'b expired, a was refreshed');
    assert.equal(registry.pick('stock', new Set(['a'])), undefined, 'nothing left once a is excluded');
    nowMs = 3_000;
    assert.equal(registry.has('stock'), false);
    registry.close();
  });

  test('consecutive failures eject an instance from picks', () => {
    const registry = new ServiceRegistry(limitDefaults);
    for (const id of ['a', 'b']) registry.register({ service: 'pay', instanceId: id, url: `http://127.0.0.1/${id}`, weight: 1, ttlMs: 60_000 });
    for (let index = 0; index < 3; index++) registry.report('pay', 'a', false);
    const picks = Array.from({ length: 4 }, () => registry.pick('pay')?.instanceId);
    assert.deepEqual(picks, ['b', 'b', 'b', 'b']);
    registry.close();
  });

  test('limits are enforced', () => {
    const registry = new ServiceRegistry({ ...limitDefaults, instancesPerServiceMax: 1 });
    registry.register({ service: 'one', instanceId: 'a', url: 'http://127.0.0.1:1', weight: 1, ttlMs: 60_000 });
    assert.throws(() => registry.register({ service: 'one', instanceId: 'b', url: 'http://127.0.0.1:2', weight: 1, ttlMs: 60_000 }), /instancesPerServiceMax/);
    registry.close();
  });
});

describe('service registry (coordinator)', () => {
  test('bad registrations get 400 problem+json naming the field', async (t) => {
    const coordinator = await startCoordinator();
    t.after(() => coordinator.close());
    const cases: Array<[string, unknown, string]> = [
      ['/v1/services/Bad_Name/instances', { url: 'http://127.0.0.1:1', ttlMs: 5000 }, 'service'],
      ['/v1/services/stock/instances', { url: 'ftp://x', ttlMs: 5000 }, 'url'],
      ['/v1/services/stock/instances', { url: 'http://127.0.0.1:1', ttlMs: 10 }, 'ttlMs'],
      ['/v1/services/stock/instances', { url: 'http://127.0.0.1:1' }, 'ttlMs'],
      ['/v1/services/stock/instances', { url: 'http://127.0.0.1:1', ttlMs: 5000, colour: 'red' }, 'colour'],
    ];
    for (const [path, body, field] of cases) {
      const response = await request(`${coordinator.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal(response.statusCode, 400, `${path} ${JSON.stringify(body)}`);
      assert.match(String(response.headers['content-type']), /application\/problem\+json/);
      const problem = (await response.body.json()) as { errors: Array<{ field: string }> };
      assert.ok(problem.errors.some((error) => error.field === field), `names ${field}: ${JSON.stringify(problem.errors)}`);
    }
    const listed = (await coordinator.client.call<{ services: Record<string, unknown> }>('GET', '/v1/services')).services;
    assert.deepEqual(listed, {}, 'nothing was registered');
  });

  test('a saga whose branch URLs name a service fails over when an instance is dead, and finishes', async (t) => {
    const coordinator = await startCoordinator();
    const dead = await new FakeParticipant().start();
    const alive = await new FakeParticipant().start();
    t.after(async () => {
      await coordinator.close();
      await alive.stop();
    });
    const deadUrl = dead.url;
    await dead.stop(); // registered below, but nobody listens any more
    const registrations = [
      await registerInstance({ coordinatorUrl: coordinator.url, service: 'stock', url: deadUrl, instanceId: 'dead', ttlMs: 60_000 }),
      await registerInstance({ coordinatorUrl: coordinator.url, service: 'stock', url: alive.url, instanceId: 'alive', ttlMs: 60_000 }),
    ];
    t.after(() => Promise.all(registrations.map((registration) => registration.stop())));
    const tx = await coordinator.client
      .saga({ retryIntervalMs: 20 })
      .add('http://stock/reserve', 'http://stock/release', { sku: 'A' })
      .add('http://stock/reserve', 'http://stock/release', { sku: 'B' })
      .add('http://stock/reserve', 'http://stock/release', { sku: 'C' })
      .submit();
    const ended = await coordinator.client.waitResult(tx.gid, { timeoutMs: 20_000 });
    assert.equal(ended.status, 'succeeded');
    assert.deepEqual(alive.callsTo('/reserve').map((call) => call.branchId), ['01', '02', '03']);
  });

  test('an instance dying mid-saga: its call fails over to another instance and the saga finishes', async (t) => {
    const coordinator = await startCoordinator();
    const instances = [await new FakeParticipant().start(), await new FakeParticipant().start()];
    t.after(async () => {
      await coordinator.close();
      await Promise.all(instances.map((instance) => instance.stop().catch(() => undefined)));
    });
    // Whichever instance gets step 02 first never answers it: it dies holding the call.
    let holder: FakeParticipant | null = null;
    for (const instance of instances) {
      instance.on('/charge', (call) => {
        if (call.branchId !== '02' || holder) return undefined;
        holder = instance;
        return 'hang';
      });
    }
    for (const [index, instance] of instances.entries()) {
      const registration = await registerInstance({ coordinatorUrl: coordinator.url, service: 'payments', url: instance.url, instanceId: `i${index}`, ttlMs: 60_000 });
      t.after(() => registration.stop());
    }
    const tx = await coordinator.client
      .saga({ retryIntervalMs: 20, requestTimeoutMs: 30_000 })
      .add('http://payments/charge', 'http://payments/refund', { cents: 1 })
      .add('http://payments/charge', 'http://payments/refund', { cents: 2 })
      .submit();
    await Promise.race(instances.map((instance) => instance.waitFor((call) => call.branchId === '02' && call.op === 'action')));
    const dying = holder as FakeParticipant | null;
    assert.ok(dying, 'an instance holds step 02');
    const survivor = instances.find((instance) => instance !== dying)!;
    await dying.stop(); // the instance dies with the call in flight
    const ended = await coordinator.client.waitResult(tx.gid, { timeoutMs: 20_000 });
    assert.equal(ended.status, 'succeeded');
    assert.ok(survivor.calls.some((call) => call.branchId === '02' && call.op === 'action'), 'step 02 was retried on the other instance');
  });

  test('a service with no live instance is retried until one registers', async (t) => {
    const coordinator = await startCoordinator();
    const participant = await new FakeParticipant().start();
    t.after(async () => {
      await coordinator.close();
      await participant.stop();
    });
    const tx = await coordinator.client.saga({ retryIntervalMs: 20 }).add('http://ledger/post', 'http://ledger/unpost').submit();
    const registration = await registerInstance({ coordinatorUrl: coordinator.url, service: 'ledger', url: participant.url, ttlMs: 60_000 });
    t.after(() => registration.stop());
    const ended = await coordinator.client.waitResult(tx.gid, { timeoutMs: 20_000 });
    assert.equal(ended.status, 'succeeded');
    assert.equal(participant.callsTo('/post').length, 1);
  });
});
