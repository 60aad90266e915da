// The lock API over real HTTP on an in-process coordinator: validation, exclusive/shared
// compatibility, semaphores, fair hand-off, waiting woken by the server, sessions, the SDK's
// loss detection, and grants that survive a restart.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test, type TestContext } from 'node:test';
import { Agent } from 'undici';
import { LockBusyError, LockClient, LockLostError, using, type HeldLock } from '../src/sdk/locks.js';
import { startCoordinator, type TestCoordinator } from './support/coordinator.js';

async function coordinatorFor(t: TestContext, options: Parameters<typeof startCoordinator>[0] = {}): Promise<TestCoordinator> {
  const coordinator = await startCoordinator(options);
  t.after(() => coordinator.close());
  return coordinator;
}

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

/** Resolves once the lock shows `count` waiters: the server has queued them, in this order. */
async function waitersQueued(client: LockClient, name: string, count: number): Promise<void> {
  // The queue is only visible through inspect; each look is one request, bounded in number.
  for (let look = 0; look < 500; look++) {
    if ((await client.inspect(name)).waiters.length >= count) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`lock ${name} never had ${count} waiters`);
}

describe('lock API: bad input', () => {
  test('answers 400 problem+json naming the field', async (t) => {
    const coordinator = await coordinatorFor(t);
    const acquire = (name: string, body: unknown) => post(`${coordinator.url}/v1/locks/${encodeURIComponent(name)}/acquire`, body);
    const cases: Array<[string, unknown, string]> = [
      ['a', { ttlMs: 0 }, 'ttlMs'],
      ['a', { ttlMs: -5 }, 'ttlMs'],
      ['a', { ttlMs: 1e12 }, 'ttlMs'],
      ['a', { ttlMs: 1000.5 }, 'ttlMs'],
      ['a', { ttlMs: '1000' }, 'ttlMs'],
      ['a', {}, 'ttlMs'],
      ['a', { ttlMs: 1000, mode: 'upgradeable' }, 'mode'],
      ['a', { ttlMs: 1000, mode: 'semaphore' }, 'permits'],
      ['a', { ttlMs: 1000, permits: 2 }, 'permits'],
      ['a', { ttlMs: 1000, mode: 'semaphore', permits: 0 }, 'permits'],
      ['a', { ttlMs: 1000, waitMs: -1 }, 'waitMs'],
      ['a', { ttlMs: 1000, waitMs: 24 * 3600 * 1000 }, 'waitMs'],
      ['a', { ttlMs: 1000, fair: 'yes' }, 'fair'],
      ['a', { ttlMs: 1000, leaseId: 'short' }, 'leaseId'],
      ['a', { ttlMs: 1000, colour: 'red' }, 'colour'],
      ['', { ttlMs: 1000 }, 'name'],
      ['x'.repeat(257), { ttlMs: 1000 }, 'name'],
      ['tab\there', { ttlMs: 1000 }, 'name'],
    ];
    for (const [name, body, field] of cases) {
      const answer = await acquire(name, body);
      assert.equal(answer.status, 400, `${JSON.stringify(body)} on "${name.slice(0, 20)}" should be refused`);
      assert.equal(answer.json.type, 'urn:tandem:problem:invalid-request');
      const fields = (answer.json.errors as Array<{ field: string }>).map((error) => error.field);
      assert.ok(fields.includes(field), `expected ${field} among ${fields.join(', ')} for ${JSON.stringify(body)}`);
    }
    assert.equal((await post(`${coordinator.url}/v1/locks/a/renew`, {})).status, 400);
    assert.equal((await post(`${coordinator.url}/v1/locks/a/release`, { leaseId: 7 })).status, 400);
    assert.equal((await post(`${coordinator.url}/v1/sessions`, { ttlMs: 0 })).status, 400);
    assert.equal((await post(`${coordinator.url}/v1/sessions`, { ttlMs: 10 ** 9 })).status, 400);
    // Nothing was half written: the lock is free.
    const client = new LockClient({ url: coordinator.url });
    assert.deepEqual((await client.inspect('a')).holders, []);
  });
});

describe('lock API: grants', () => {
  test('release and renew only by the holder; a lease past its TTL is neither renewed nor returned', async (t) => {
    const coordinator = await coordinatorFor(t);
    const client = new LockClient({ url: coordinator.url });
    const first = await post(`${coordinator.url}/v1/locks/job/acquire`, { ttlMs: 300, owner: 'first' });
    assert.equal(first.status, 200);
    const leaseId = first.json.leaseId as string;
    const stranger = await post(`${coordinator.url}/v1/locks/job/release`, { leaseId: 'A'.repeat(22) });
    assert.equal(stranger.status, 409);
    assert.equal(stranger.json.type, 'urn:tandem:problem:not-holder');
    assert.equal((await post(`${coordinator.url}/v1/locks/other/renew`, { leaseId })).status, 409, 'a lease renews only the lock it holds');
    // The next holder is woken by the server when the first lease runs out.
    const next = await client.acquire('job', { ttlMs: 5000, waitMs: 10_000, owner: 'next' });
    assert.ok(next.token > (first.json.token as number));
    const late = await post(`${coordinator.url}/v1/locks/job/renew`, { leaseId });
    assert.equal(late.status, 409);
    assert.equal((await post(`${coordinator.url}/v1/locks/job/release`, { leaseId })).status, 409);
    const view = await client.inspect('job');
    assert.deepEqual(view.holders.map((holder) => holder.owner), ['next']);
    await next.release();
  });

  test('shared holders together, exclusive alone; inspect shows holders and waiters', async (t) => {
    const coordinator = await coordinatorFor(t);
    const client = new LockClient({ url: coordinator.url });
    const readers = await Promise.all([1, 2, 3].map((index) => client.acquire('doc', { mode: 'shared', ttlMs: 10_000, waitMs: 0, owner: `reader${index}` })));
    assert.equal(await client.tryAcquire('doc', { ttlMs: 10_000 }), null);
    const writer = client.acquire('doc', { ttlMs: 10_000, waitMs: 10_000, owner: 'writer' });
    await waitersQueued(client, 'doc', 1);
    const view = await client.inspect('doc');
    assert.equal(view.kind, 'rw');
    assert.deepEqual(view.holders.map((holder) => [holder.owner, holder.mode]).sort(), [['reader1', 'shared'], ['reader2', 'shared'], ['reader3', 'shared']]);
    assert.deepEqual(view.waiters.map((waiter) => [waiter.owner, waiter.mode]), [['writer', 'exclusive']]);
    // A fair reader queues behind the writer rather than starving it.
    assert.equal(await client.tryAcquire('doc', { mode: 'shared', ttlMs: 10_000 }), null);
    for (const reader of readers) await reader.release();
    const writing = await writer;
    assert.equal(await client.tryAcquire('doc', { mode: 'shared', ttlMs: 10_000, fair: false }), null, 'nothing shares an exclusive lock');
    await writing.release();
  });

  test('fair mode hands the lock over in arrival order; tokens follow it', async (t) => {
    const coordinator = await coordinatorFor(t);
    const client = new LockClient({ url: coordinator.url });
    const holder = await client.acquire('queue', { ttlMs: 10_000 });
    const arrivals: Array<Promise<HeldLock>> = [];
    for (let index = 0; index < 8; index++) {
      arrivals.push(client.acquire('queue', { ttlMs: 10_000, waitMs: 20_000, owner: `w${index}` }));
      await waitersQueued(client, 'queue', index + 1);
    }
    let current = holder;
    const tokens: number[] = [];
    for (const arrival of arrivals) {
      await current.release();
      current = await arrival;
      tokens.push(current.token);
    }
    await current.release();
    assert.deepEqual(tokens, [...tokens].sort((a, b) => a - b));
    assert.ok(tokens[0] > holder.token);
  });

  test('a semaphore of N permits never has more than N holders', async (t) => {
    const coordinator = await coordinatorFor(t);
    const client = new LockClient({ url: coordinator.url });
    const permits = 3;
    let active = 0;
    let peak = 0;
    const worker = async (index: number) => {
      for (let round = 0; round < 6; round++) {
        const lease = await client.acquire('pool', { permits, ttlMs: 10_000, waitMs: 20_000, owner: `c${index}` });
        active += 1;
        peak = Math.max(peak, active);
        assert.ok(active <= permits, `${active} holders of ${permits} permits`);
        // Hold for one more round trip, and look at the server's own count meanwhile.
        const view = await client.inspect('pool');
        assert.ok(view.holders.length <= permits, `the server shows ${view.holders.length} holders of ${permits} permits`);
        active -= 1;
        await lease.release();
      }
    };
    await Promise.all(Array.from({ length: 10 }, (_, index) => worker(index)));
    assert.ok(peak > 1, 'ten clients should hold several permits at once at some point');
    const mixed = await post(`${coordinator.url}/v1/locks/pool/acquire`, { ttlMs: 1000 });
    assert.equal(mixed.status, 200, 'an idle semaphore leaves no trace');
  });

  test('a waiter that stops waiting (its wait limit, or its connection) is dropped from the queue', async (t) => {
    const coordinator = await coordinatorFor(t);
    const client = new LockClient({ url: coordinator.url });
    const holder = await client.acquire('gate', { ttlMs: 60_000 });
    await assert.rejects(client.acquire('gate', { ttlMs: 60_000, waitMs: 150 }), LockBusyError);
    // A waiter whose process dies: its connections close while it waits.
    const doomedAgent = new Agent();
    const doomed = new LockClient({ url: coordinator.url, dispatcher: doomedAgent, retryUnavailableMs: 0 });
    const doomedAcquire = doomed.acquire('gate', { ttlMs: 60_000, waitMs: 30_000, owner: 'doomed' }).catch((error: unknown) => error);
    await waitersQueued(client, 'gate', 1);
    await doomedAgent.destroy();
    await doomedAcquire;
    await holder.release();
    // Had the dead waiter kept its place or been granted, this would wait for its 60 s lease.
    const survivor = await client.acquire('gate', { ttlMs: 10_000, waitMs: 10_000, owner: 'survivor' });
    assert.deepEqual((await client.inspect('gate')).holders.map((h) => h.owner), ['survivor']);
    await survivor.release();
  });
});

describe('lock API: sessions and loss', () => {
  test('a session that expires releases its locks and the next waiter is granted', async (t) => {
    const coordinator = await coordinatorFor(t);
    const client = new LockClient({ url: coordinator.url });
    // A raw session nobody keeps alive: a client that died.
    const session = await post(`${coordinator.url}/v1/sessions`, { ttlMs: 300, owner: 'dead worker' });
    assert.equal(session.status, 201);
    const sessionId = session.json.sessionId as string;
    const bound = await post(`${coordinator.url}/v1/locks/leader/acquire`, { sessionId, owner: 'dead worker' });
    assert.equal(bound.status, 200);
    assert.equal((await client.inspect('leader')).holders[0]?.sessionBound, true);
    const successor = await client.acquire('leader', { ttlMs: 5000, waitMs: 10_000, owner: 'successor' });
    assert.ok(successor.token > (bound.json.token as number));
    assert.equal((await post(`${coordinator.url}/v1/sessions/${sessionId}/keepalive`, {})).status, 404);
    await successor.release();
  });

  test('the SDK session keeps itself alive; when the server ends it, bound leases abort their signal', async (t) => {
    const coordinator = await coordinatorFor(t);
    const client = new LockClient({ url: coordinator.url });
    const session = await client.openSession({ ttlMs: 600, owner: 'sdk' });
    const lease = await client.acquire('leader', { session, waitMs: 0 });
    const lost = new Promise<LockLostError>((resolve) => lease.once('lost', resolve));
    // Several TTLs of keepalives: the lease must still be held.
    const contender = await client.acquire('leader', { ttlMs: 5000, waitMs: 2000 }).catch((error: unknown) => error);
    assert.ok(contender instanceof LockBusyError, 'the session was kept alive, so the lock stayed held');
    assert.equal(lease.lostError, null);
    // The server ends the session (as an expiry would); the next keepalive learns it.
    const closed = await fetch(`${coordinator.url}/v1/sessions/${session.sessionId}`, { method: 'DELETE' });
    assert.equal(closed.status, 200);
    const error = await lost;
    assert.equal(error.reason, 'session-lost');
    assert.ok(lease.signal.aborted);
    assert.ok(session.signal.aborted);
  });

  test('using(): fn gets the token; when renewals stop getting through, its signal aborts before the lease can end', async (t) => {
    const coordinator = await startCoordinator();
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      await coordinator.close();
    };
    t.after(close);
    const client = new LockClient({ url: coordinator.url, retryUnavailableMs: 0 });
    const seen = await using(await client.acquire('quick', { ttlMs: 5000 }), ({ token }) => token);
    assert.ok(seen > 0);
    const lock = await client.acquire('cut-off', { ttlMs: 400 });
    await assert.rejects(
      using(lock, async ({ signal, token }) => {
        assert.equal(token, lock.token);
        await close(); // the coordinator becomes unreachable
        await once(signal, 'abort');
        assert.ok(signal.reason instanceof LockLostError);
        assert.equal(signal.reason.reason, 'expired');
        return 'finished';
      }),
      LockLostError,
    );
  });
});

describe('lock API: durability', () => {
  test('grants and the fencing counter survive a restart', async (t) => {
    const first = await startCoordinator();
    let firstClosed = false;
    t.after(async () => {
      if (!firstClosed) await first.close();
    });
    const client = new LockClient({ url: first.url });
    const held = await client.acquire('durable', { ttlMs: 60_000, owner: 'survivor' });
    const released = await client.acquire('temporary', { ttlMs: 60_000 });
    await released.release();
    await first.close();
    firstClosed = true;
    const second = await coordinatorFor(t, { dbPath: first.dbPath });
    const again = new LockClient({ url: second.url });
    const view = await again.inspect('durable');
    assert.deepEqual(view.holders.map((holder) => [holder.owner, holder.token]), [['survivor', held.token]]);
    assert.equal(await again.tryAcquire('durable', { ttlMs: 1000 }), null);
    const fresh = await again.acquire('temporary', { ttlMs: 1000 });
    assert.ok(fresh.token > released.token && fresh.token > held.token, 'tokens keep increasing across the restart');
    await fresh.release();
    const renew = await post(`${second.url}/v1/locks/durable/release`, { leaseId: (held as unknown as { leaseId: string }).leaseId });
    assert.equal(renew.status, 200, 'the holder from before the restart can still release');
  });
});
