// The service registry shared through the store: two real coordinator processes on one
// PostgreSQL and two on one Redis. An instance registered through one is resolved by the other
// (a saga naming http://inventory/... runs through it), survives both coordinators
// restarting, expires by its TTL on the store's clock, and a deregistration through either
// coordinator is seen by both.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { ChildCoordinator } from './support/child-coordinator.js';
import { FakeParticipant } from './support/fake-participant.js';
import { requireService } from './support/services.js';
import { sharedStoreBackends } from './support/shared-stores.js';

const runId = randomBytes(4).toString('hex');
const pgSchema = `h7registry_${runId}`;
const redisPrefix = `h7registry:${runId}:`;

const backends = sharedStoreBackends(pgSchema, redisPrefix);

async function startPair(t: TestContext, storeUrl: string): Promise<[ChildCoordinator, ChildCoordinator]> {
  const pair: [ChildCoordinator, ChildCoordinator] = [new ChildCoordinator({ storeUrl }), new ChildCoordinator({ storeUrl })];
  t.after(() => Promise.all(pair.map((coordinator) => coordinator.dispose())));
  for (const coordinator of pair) await coordinator.start();
  return pair;
}

async function call(method: string, url: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> | null }> {
  const response = await fetch(url, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await response.text();
  return { status: response.status, json: text.length > 0 ? (JSON.parse(text) as Record<string, unknown>) : null };
}

const instanceIdsOf = (answer: { json: Record<string, unknown> | null }) => ((answer.json?.instances as Array<{ instanceId: string }> | undefined) ?? []).map((instance) => instance.instanceId);

describe('service registry shared through the store', () => {
  for (const backend of backends) {
    test(`${backend.name}: every coordinator resolves the same live instances, across restarts`, async (t) => {
      if (!(await requireService(t, backend.service))) return;
      const [one, two] = await startPair(t, await backend.url());
      const participant = await new FakeParticipant().start();
      t.after(() => participant.stop());
      const service = `inventory${runId}`;

      const registered = await call('POST', `${one.url}/v1/services/${service}/instances`, { instanceId: 'i1', url: participant.url, ttlMs: 60_000 });
      assert.equal(registered.status, 200);
      const seen = await call('GET', `${two.url}/v1/services/${service}`);
      assert.equal(seen.status, 200);
      assert.deepEqual(instanceIdsOf(seen), ['i1'], 'registered through one, listed by two');

      // A saga through the other coordinator resolves the service name.
      const tx = await two.client.saga({ retryIntervalMs: 20 }).add(`http://${service}/reserve`, `http://${service}/release`, { sku: 'A' }).submit();
      const ended = await two.client.waitResult(tx.gid, { timeoutMs: 20_000 });
      assert.equal(ended.status, 'succeeded');
      assert.equal(participant.callsTo('/reserve').length, 1);

      // Both coordinators restart; neither forgets the registration (nobody heartbeats here).
      await one.restart();
      await two.restart();
      assert.deepEqual(instanceIdsOf(await call('GET', `${two.url}/v1/services/${service}`)), ['i1']);
      assert.deepEqual(instanceIdsOf(await call('GET', `${one.url}/v1/services/${service}`)), ['i1']);

      // A short registration runs out by the store's clock, for both.
      assert.equal((await call('POST', `${two.url}/v1/services/${service}/instances`, { instanceId: 'brief', url: participant.url, ttlMs: 1000 })).status, 200);
      assert.deepEqual(instanceIdsOf(await call('GET', `${one.url}/v1/services/${service}`)).sort(), ['brief', 'i1']);
      let left: string[] = [];
      for (let look = 0; look < 1000; look++) {
        left = instanceIdsOf(await call('GET', `${one.url}/v1/services/${service}`));
        if (!left.includes('brief')) break;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.deepEqual(left, ['i1'], 'the brief registration expired');

      // Deregistered through two: gone for one as well.
      const removed = await call('DELETE', `${two.url}/v1/services/${service}/instances/i1`);
      assert.equal(removed.status, 204);
      assert.equal((await call('GET', `${one.url}/v1/services/${service}`)).status, 404);
    });
  }
});
