// Locks shared by real coordinator processes: two `tandem serve` children on one PostgreSQL
// and two on one Redis. A lock taken through one coordinator is respected, fenced and handed
// off through the other; a coordinator killed with SIGKILL while requests wait in its queue
// loses no grant (the store holds it), and leaves no waiter hanging: requests queued through
// the survivor get the lock, those whose connection died with the killed process are dropped.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { LockClient, type HeldLock, type LockInspection } from '../src/sdk/locks.js';
import { ChildCoordinator, isConnectionError } from './support/child-coordinator.js';
import { requireService } from './support/services.js';
import { sharedStoreBackends } from './support/shared-stores.js';

const runId = randomBytes(4).toString('hex');
const pgSchema = `h7locks_${runId}`;
const redisPrefix = `h7locks:${runId}:`;

/**
 * A liveness window far longer than any wait here: a killed coordinator's queue entries must go
 * because its store connection closed, not because its heartbeat lapsed.
 */
const clusterEnv = {
  TANDEM_LOCK_COORDINATOR_HEARTBEAT_MS: '1000',
  TANDEM_LOCK_COORDINATOR_LIVENESS_MS: '120000',
  TANDEM_LOCK_RECHECK_MS: '300',
};

const backends = sharedStoreBackends(pgSchema, redisPrefix);

/** Preloaded into a child: its wall clock runs `skewMs` ahead of everyone else's. */
const skewedClock = (skewMs: number) => ({
  NODE_OPTIONS: `--import=data:text/javascript,${encodeURIComponent(`const realNow = Date.now; Date.now = () => realNow() + ${skewMs};`)}`,
});

async function startPair(t: TestContext, storeUrl: string, secondEnv: Record<string, string> = {}): Promise<[ChildCoordinator, ChildCoordinator]> {
  const pair: [ChildCoordinator, ChildCoordinator] = [new ChildCoordinator({ storeUrl, env: clusterEnv }), new ChildCoordinator({ storeUrl, env: { ...clusterEnv, ...secondEnv } })];
  t.after(() => Promise.all(pair.map((coordinator) => coordinator.dispose())));
  for (const coordinator of pair) await coordinator.start();
  return pair;
}

/** Looks (bounded in number, one request each) until the lock's inspection satisfies `ok`. */
async function until(client: LockClient, name: string, ok: (view: LockInspection) => boolean, what: string): Promise<LockInspection> {
  for (let look = 0; look < 3000; look++) {
    const view = await client.inspect(name);
    if (ok(view)) return view;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`lock ${name} never showed ${what}`);
}

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

describe('locks shared by coordinator processes', () => {
  for (const backend of backends) {
    test(`${backend.name}: a lock taken through one coordinator is respected, fenced and handed off through the other`, async (t) => {
      if (!(await requireService(t, backend.service))) return;
      const [one, two] = await startPair(t, await backend.url());
      const viaOne = new LockClient({ url: one.url });
      const viaTwo = new LockClient({ url: two.url });
      const name = `handoff-${runId}`;

      const first = await viaOne.acquire(name, { ttlMs: 30_000, owner: 'one' });
      assert.equal(await viaTwo.tryAcquire(name), null, 'held through one, busy through two');
      const shown = await viaTwo.inspect(name);
      assert.equal(shown.holders[0]?.owner, 'one');
      assert.equal(shown.holders[0]?.token, first.token);

      let answered = false;
      const waiting = viaTwo.acquire(name, { ttlMs: 30_000, waitMs: 20_000, owner: 'two' }).finally(() => (answered = true));
      await until(viaOne, name, (view) => view.waiters.length === 1, 'a waiter');
      assert.equal(answered, false);
      await first.release();
      const second = await waiting;
      assert.ok(second.token > first.token, `fenced: ${second.token} > ${first.token}`);
      assert.equal(await viaOne.tryAcquire(name), null, 'held through two, busy through one');

      // A shared-mode reader and a semaphore across the pair.
      await second.release();
      const readers = await Promise.all([viaOne.acquire(name, { mode: 'shared' }), viaTwo.acquire(name, { mode: 'shared' })]);
      assert.equal(await viaTwo.tryAcquire(name), null, 'no writer while readers hold it');
      await Promise.all(readers.map((reader) => reader.release()));
      const permits = await Promise.all([viaOne.acquire(`${name}-sem`, { permits: 2 }), viaTwo.acquire(`${name}-sem`, { permits: 2 })]);
      assert.equal(await viaOne.tryAcquire(`${name}-sem`, { permits: 2 }), null, 'both permits taken');
      await Promise.all(permits.map((permit) => permit.release()));

      // A session opened through one keeps a lease through the other's view; closing it frees the lock.
      const session = await viaOne.openSession({ ttlMs: 5000 });
      const bound = await viaOne.acquire(`${name}-session`, { session });
      assert.equal((await viaTwo.inspect(`${name}-session`)).holders[0]?.sessionBound, true);
      assert.equal(bound.held, true);
      await session.close();
      const after = await viaTwo.acquire(`${name}-session`, { waitMs: 10_000 });
      assert.ok(after.token > bound.token);
      await after.release();
    });

    test(`${backend.name}: a coordinator killed while requests wait loses no grant and leaves no waiter hanging`, async (t) => {
      if (!(await requireService(t, backend.service))) return;
      const [doomed, survivor] = await startPair(t, await backend.url());
      const viaSurvivor = new LockClient({ url: survivor.url });
      const name = `kill-${runId}`;
      const granted = `kill-granted-${runId}`;

      // A grant made through the coordinator that will die.
      const heldAnswer = await post(`${doomed.url}/v1/locks/${encodeURIComponent(granted)}/acquire`, { ttlMs: 60_000, owner: 'doomed' });
      assert.equal(heldAnswer.status, 200);

      const holder: HeldLock = await viaSurvivor.acquire(name, { ttlMs: 60_000, owner: 'holder' });
      // A plain request, not the SDK (which would retry elsewhere-bound acquires until its wait ends).
      const lost = post(`${doomed.url}/v1/locks/${encodeURIComponent(name)}/acquire`, { ttlMs: 60_000, waitMs: 30_000, owner: 'dies' }).then(
        (answer) => `answered ${answer.status}`,
        (error: unknown) => (isConnectionError(error) ? 'connection-died' : `failed: ${String(error)}`),
      );
      await until(viaSurvivor, name, (view) => view.waiters.length === 1, 'the doomed waiter');
      const survives = viaSurvivor.acquire(name, { waitMs: 30_000, owner: 'survives' });
      await until(viaSurvivor, name, (view) => view.waiters.length === 2, 'both waiters');

      await doomed.kill();
      assert.equal(await lost, 'connection-died');
      // The killed coordinator's queue entry goes at the next re-check: its listening connection closed with it.
      await until(viaSurvivor, name, (view) => view.waiters.length === 1 && view.waiters[0].owner === 'survives', 'only the survivor\'s waiter');
      await holder.release();
      const next = await survives;
      assert.ok(next.token > holder.token, `fenced: ${next.token} > ${holder.token}`);
      assert.equal((await viaSurvivor.inspect(name)).waiters.length, 0);
      await next.release();

      // The grant made through the dead coordinator is still held, and its lease id still works.
      const kept = await viaSurvivor.inspect(granted);
      assert.equal(kept.holders[0]?.owner, 'doomed');
      assert.equal(kept.holders[0]?.token, heldAnswer.json.token);
      assert.equal(await viaSurvivor.tryAcquire(granted), null);
      const released = await post(`${survivor.url}/v1/locks/${encodeURIComponent(granted)}/release`, { leaseId: heldAnswer.json.leaseId });
      assert.equal(released.status, 200);

      // A restarted coordinator serves the same locks, with tokens still rising.
      await doomed.start();
      const again = await new LockClient({ url: doomed.url }).acquire(granted, { ttlMs: 5000 });
      assert.ok(again.token > Number(heldAnswer.json.token));
      await again.release();
    });

    test(`${backend.name}: a coordinator whose clock runs ten minutes ahead still sees the lease as held`, async (t) => {
      if (!(await requireService(t, backend.service))) return;
      const [honest, ahead] = await startPair(t, await backend.url(), skewedClock(10 * 60 * 1000));
      const viaHonest = new LockClient({ url: honest.url });
      const viaAhead = new LockClient({ url: ahead.url });
      const name = `skew-${runId}`;
      const held = await viaHonest.acquire(name, { ttlMs: 30_000 });
      // By the fast clock the lease ended long ago; by the store's it has most of 30 s left.
      assert.equal(await viaAhead.tryAcquire(name), null);
      const view = await viaAhead.inspect(name);
      assert.equal(view.holders[0]?.token, held.token);
      assert.ok(view.holders[0].ttlRemainingMs > 0 && view.holders[0].ttlRemainingMs <= 30_000, `ttlRemainingMs ${view.holders[0].ttlRemainingMs}`);
      const session = await viaAhead.openSession({ ttlMs: 5000 });
      const bound = await viaAhead.acquire(`${name}-session`, { session });
      assert.equal(await viaHonest.tryAcquire(`${name}-session`), null, 'a session opened through the fast clock lasts its TTL for everyone');
      await session.close();
      await held.release();
      assert.ok(bound.token > 0);
    });
  }
});
