// ZooKeeper locks against the real ZooKeeper on this machine (127.0.0.1:2181): the queue rules
// as a pure function, then mutex, read-write lock and semaphore on the server — FIFO order,
// wake-ups only for the waiters a release lets in, the node that vanishes between the listing
// and the watch, fencing tokens across hand-offs (and across a recreated parent), reconnection
// that keeps the lock, and session expiry reported through the lock's signal. Every run works
// under its own root znode (/tandem-test-h4-<random>) and deletes it at the end.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { describe, test, type TestContext } from 'node:test';
import zookeeper from 'node-zookeeper-client';
import type { Client } from 'node-zookeeper-client';
import { LockBusyError, LockLostError, type HeldLock } from '../src/sdk/locks.js';
import { ZooKeeperLockClient, type ZooKeeperLockOptions } from '../src/sdk/zookeeper-lock.js';
import { decide, nodePrefix, queueOf } from '../src/sdk/zookeeper-recipes.js';
import { FencedCounter } from './support/fenced-resource.js';
import { requireService, services } from './support/services.js';
import { TcpProxy } from './support/tcp-proxy.js';

interface ZkFixture {
  root: string;
  raw: Client;
  client(options?: Partial<ZooKeeperLockOptions>): ZooKeeperLockClient;
  /** A client whose connection runs through a proxy the test can cut. */
  proxied(options?: Partial<ZooKeeperLockOptions>): Promise<{ client: ZooKeeperLockClient; proxy: TcpProxy }>;
}

function rawClient(options: Record<string, unknown> = {}): Promise<Client> {
  const client = zookeeper.createClient(services.zookeeper.url, options as Parameters<typeof zookeeper.createClient>[1]);
  const connected = once(client, 'connected');
  client.connect();
  return connected.then(() => client);
}

async function zkFor(t: TestContext): Promise<ZkFixture | null> {
  if (!(await requireService(t, 'zookeeper'))) return null;
  const root = `/tandem-test-h4-${randomBytes(6).toString('hex')}`;
  const raw = await rawClient();
  const clients: ZooKeeperLockClient[] = [];
  const proxies: TcpProxy[] = [];
  t.after(async () => {
    await Promise.all(clients.map((client) => client.close()));
    await Promise.all(proxies.map((proxy) => proxy.stop()));
    // In the library, not in its type definitions.
    const removeRecursive = (raw as Client & { removeRecursive(path: string, callback: (error: unknown) => void): void }).removeRecursive.bind(raw);
    await new Promise<void>((resolve) => removeRecursive(root, () => resolve()));
    raw.close();
  });
  const client = (options: Partial<ZooKeeperLockOptions> = {}) => {
    const made = new ZooKeeperLockClient({ connectionString: services.zookeeper.url, rootPath: root, reconnectDelayMsMax: 50, ...options });
    clients.push(made);
    return made;
  };
  return {
    root,
    raw,
    client,
    proxied: async (options = {}) => {
      const proxy = await new TcpProxy({ host: services.zookeeper.host, port: services.zookeeper.port }).start();
      proxies.push(proxy);
      return { client: client({ connectionString: `127.0.0.1:${proxy.port}`, ...options }), proxy };
    },
  };
}

/** Resolves once `count` waiters are queued on the lock: the arrival order is then fixed. */
async function waitersQueued(client: ZooKeeperLockClient, name: string, count: number, permits?: number): Promise<void> {
  for (let look = 0; look < 500; look++) {
    if ((await client.inspect(name, permits === undefined ? {} : { permits })).waiters.length >= count) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`lock ${name} never had ${count} waiters`);
}

function lostOf(lock: HeldLock): Promise<LockLostError> {
  return new Promise((resolve) => lock.once('lost', resolve));
}

/** Whether the promise has settled, after letting pending callbacks run. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

const guid = (n: number) => n.toString(16).padStart(32, '0');
const node = (kind: 'w' | 'r' | 's', seq: number, origin: number | null = null) => `${nodePrefix(kind, guid(seq), origin)}${String(seq).padStart(10, '0')}`;

describe('ZooKeeper lock rules (pure)', () => {
  test('writers wait for everyone ahead, readers only for writers, a read under a write queues where the write stands', () => {
    const children = [node('r', 1), node('w', 2), node('r', 3), node('w', 4), node('r', 5, 2), 'not-ours', node('r', 6)];
    const queue = queueOf(children);
    assert.deepEqual(queue.map((entry) => entry.seq), [1, 2, 5, 3, 4, 6], 'the read taken under write 2 sorts right after it');
    assert.deepEqual(decide(queue, node('r', 1), 1), { kind: 'granted', successor: true });
    assert.deepEqual(decide(queue, node('w', 2), 1), { kind: 'wait', watch: [node('r', 1)], promotion: false });
    assert.deepEqual(decide(queue, node('r', 5, 2), 1), { kind: 'granted', successor: true }, 'its own write does not hold it back');
    assert.deepEqual(decide(queue, node('r', 3), 1), { kind: 'wait', watch: [node('w', 2)], promotion: false });
    assert.deepEqual(decide(queue, node('w', 4), 1), { kind: 'wait', watch: [node('r', 3)], promotion: false });
    assert.deepEqual(decide(queue, node('r', 6), 1), { kind: 'wait', watch: [node('w', 4)], promotion: false }, 'fair: no reader passes a waiting writer');
    assert.deepEqual(decide(queue, node('w', 99), 1), { kind: 'gone' });
  });

  test('a semaphore grants the first N; the first waiter watches the holders, later ones the node ahead', () => {
    const queue = queueOf([node('s', 7), node('s', 3), node('s', 9), node('s', 12)]);
    assert.deepEqual(decide(queue, node('s', 7), 2), { kind: 'granted', successor: true });
    assert.deepEqual(decide(queue, node('s', 9), 2), { kind: 'wait', watch: [node('s', 3), node('s', 7)], promotion: false });
    assert.deepEqual(decide(queue, node('s', 12), 2), { kind: 'wait', watch: [node('s', 9)], promotion: true });
    assert.deepEqual(decide(queue, node('s', 12), 4), { kind: 'granted', successor: false });
  });
});

describe('ZooKeeper locks on a real server', () => {
  test('mutex: FIFO hand-offs, strictly increasing tokens (czxid, also across a recreated parent), no lost update', async (t) => {
    const fixture = await zkFor(t);
    if (!fixture) return;
    const clients = [fixture.client(), fixture.client(), fixture.client()];
    const first = await clients[0].acquire('orders/42');
    // Queue the others in a known order behind the holder.
    const order: number[] = [];
    const second = clients[1].acquire('orders/42').then((lock) => (order.push(1), lock));
    await waitersQueued(clients[0], 'orders/42', 1);
    const third = clients[2].acquire('orders/42').then((lock) => (order.push(2), lock));
    await waitersQueued(clients[0], 'orders/42', 2);
    assert.equal(await clients[0].tryAcquire('orders/42'), null);
    await first.release();
    const secondLock = await second;
    assert.ok(secondLock.token > first.token);
    assert.equal(await settled(third), false, 'the third waits while the second holds');
    await secondLock.release();
    const thirdLock = await third;
    assert.ok(thirdLock.token > secondLock.token);
    assert.deepEqual(order, [1, 2]);
    await thirdLock.release();
    // The sequence suffix starts again in a new parent; the czxid keeps growing.
    const parent = `${fixture.root}/locks/${encodeURIComponent('orders/42')}`;
    await new Promise<void>((resolve, reject) => fixture.raw.remove(parent, (error) => (error ? reject(error) : resolve())));
    const afterRecreate = await clients[1].acquire('orders/42');
    assert.ok(afterRecreate.token > thirdLock.token, 'tokens increase across a deleted and recreated lock node');
    assert.equal((await clients[1].inspect('orders/42')).holders[0].sequence, 0, 'the per-parent sequence did start again');
    await afterRecreate.release();

    // Mutual exclusion checked by a fenced resource: every read-modify-write under the lock.
    const counter = new FencedCounter();
    const tokens: number[] = [];
    await Promise.all(
      clients.map(async (client, index) => {
        for (let round = 0; round < 5; round++) {
          await client.using('counter', { waitMs: 10_000 }, async ({ token }) => {
            tokens.push(token);
            const value = counter.read(token);
            await new Promise((resolve) => setImmediate(resolve));
            counter.write(token, value + 1, `c${index}`);
          });
        }
      }),
    );
    assert.equal(counter.value, 15);
    assert.equal(counter.rejected.length, 0);
    for (let index = 1; index < tokens.length; index++) assert.ok(tokens[index] > tokens[index - 1], 'each holder has a larger token than the one before');
  });

  test('a release wakes only the next waiter (no herd), and a watched node vanishing before the watch is handled', async (t) => {
    const fixture = await zkFor(t);
    if (!fixture) return;
    const holder = fixture.client();
    const waiters = [fixture.client(), fixture.client(), fixture.client()];
    const lock = await holder.acquire('herd');
    const pending: Array<Promise<HeldLock>> = [];
    for (const [index, waiter] of waiters.entries()) {
      pending.push(waiter.acquire('herd'));
      await waitersQueued(holder, 'herd', index + 1);
    }
    await lock.release();
    const next = await pending[0];
    // A round trip on each other connection: a notification sent before it would arrive first.
    await Promise.all(waiters.map((waiter) => waiter.inspect('herd')));
    assert.deepEqual(
      waiters.map((waiter) => waiter.wakeups),
      [1, 0, 0],
      'only the first waiter was woken',
    );
    await next.release();
    await (await pending[1]).release();
    await (await pending[2]).release();
    assert.deepEqual(
      waiters.map((waiter) => waiter.wakeups),
      [1, 1, 1],
    );

    // The node we are about to watch is deleted between our listing and our watch: exists()
    // finds nothing, and we must look again instead of waiting for a notification that never comes.
    const blocker = await holder.acquire('race');
    const racer = fixture.client();
    let deletedInWindow = false;
    racer.beforeWatch = async (nodes) => {
      racer.beforeWatch = null;
      assert.equal(nodes.length, 1);
      await blocker.release();
      deletedInWindow = true;
    };
    const raced = await racer.acquire('race', { waitMs: 10_000 });
    assert.ok(deletedInWindow);
    assert.equal(racer.wakeups, 0, 'granted by looking again, not by a notification');
    await raced.release();
  });

  test('read-write lock: readers share, a writer waits and is not passed by later readers, the write holder takes a read (downgrade)', async (t) => {
    const fixture = await zkFor(t);
    if (!fixture) return;
    const [a, b, c, d] = [fixture.client(), fixture.client(), fixture.client(), fixture.client()];
    const readA = await a.acquire('doc', { mode: 'shared' });
    const readB = await b.acquire('doc', { mode: 'shared' });
    const writeC = c.acquire('doc', { mode: 'exclusive' });
    await waitersQueued(a, 'doc', 1);
    const lateReader = d.acquire('doc', { mode: 'shared' });
    await waitersQueued(a, 'doc', 2);
    assert.equal(await settled(lateReader), false, 'a reader behind a waiting writer waits (fair)');
    await readA.release();
    assert.equal(await settled(writeC), false, 'the writer waits for every reader ahead');
    await readB.release();
    const write = await writeC;
    assert.ok(write.token > readB.token);

    // Downgrade: the write holder takes a read at once, though a reader waits; a writer that
    // queues meanwhile must not get in while that read is held.
    const read = await c.acquire('doc', { mode: 'shared', heldWrite: write, waitMs: 0 });
    assert.equal(read.token, write.token, 'a read under the write carries its token');
    const writeA = a.acquire('doc', { mode: 'exclusive' });
    await waitersQueued(a, 'doc', 2);
    await write.release();
    const late = await lateReader;
    assert.ok(late.token > write.token);
    assert.ok(read.held);
    await late.release();
    assert.equal(await settled(writeA), false, 'the queued writer waits for the downgraded read');
    await read.release();
    await (await writeA).release();
    await assert.rejects(c.acquire('doc', { mode: 'shared', heldWrite: read }), RangeError);
  });

  test('semaphore: N leases, FIFO, a release wakes only the first waiter and each grant moves the next one up', async (t) => {
    const fixture = await zkFor(t);
    if (!fixture) return;
    const clients = Array.from({ length: 5 }, () => fixture.client());
    const holders = [await clients[0].acquire('gpu', { permits: 2 }), await clients[1].acquire('gpu', { permits: 2 })];
    assert.equal(await clients[4].tryAcquire('gpu', { permits: 2 }), null);
    const waiting: Array<Promise<HeldLock>> = [];
    for (const [index, client] of clients.slice(2).entries()) {
      waiting.push(client.acquire('gpu', { permits: 2 }));
      await waitersQueued(clients[0], 'gpu', index + 1, 2);
    }
    await holders[1].release();
    const third = await waiting[0];
    assert.ok(third.token > holders[1].token);
    await Promise.all(clients.map((client) => client.inspect('gpu', { permits: 2 })));
    assert.equal(clients[3].wakeups + clients[4].wakeups <= 1, true, 'the later waiters are at most told they moved up');
    assert.equal(await settled(waiting[1]), false);
    // The lease granted last is now a holder; the next waiter learned it is first in line.
    await holders[0].release();
    const fourth = await waiting[1];
    assert.ok(fourth.token > third.token);
    assert.equal(await settled(waiting[2]), false, 'two leases held, the fifth waits');
    await third.release();
    const fifth = await waiting[2];
    await Promise.all([fourth.release(), fifth.release()]);
    assert.deepEqual((await clients[0].inspect('gpu', { permits: 2 })).holders, []);
    await assert.rejects(clients[0].acquire('gpu', { permits: 0 }), RangeError);
    await assert.rejects(clients[0].acquire('gpu', { permits: 1001 }), RangeError);
  });

  test('waitMs and AbortSignal give up and leave no node behind; bad input is refused', async (t) => {
    const fixture = await zkFor(t);
    if (!fixture) return;
    const [a, b] = [fixture.client(), fixture.client()];
    const held = await a.acquire('busy');
    await assert.rejects(b.acquire('busy', { waitMs: 50 }), LockBusyError);
    const controller = new AbortController();
    const aborted = b.acquire('busy', { signal: controller.signal });
    await waitersQueued(a, 'busy', 1);
    controller.abort(new Error('caller gave up'));
    await assert.rejects(aborted, /caller gave up/);
    assert.deepEqual((await a.inspect('busy')).waiters, []);
    await held.release();
    await assert.rejects(a.acquire(''), RangeError);
    await assert.rejects(a.acquire('x'.repeat(257)), RangeError);
    await assert.rejects(a.acquire('x', { waitMs: -1 }), RangeError);
    assert.throws(() => new ZooKeeperLockClient({ connectionString: services.zookeeper.url, rootPath: 'relative' }), RangeError);
  });

  test('a dropped connection that comes back within the session keeps the lock and the waiter behind it', async (t) => {
    const fixture = await zkFor(t);
    if (!fixture) return;
    const { client: holderClient, proxy } = await fixture.proxied();
    const { client: waiterClient } = await fixture.proxied();
    const lock = await holderClient.acquire('kept');
    const waiter = waiterClient.acquire('kept');
    await waitersQueued(holderClient, 'kept', 1);
    await proxy.stop();
    await proxy.start();
    await lock.renew();
    assert.ok(lock.held && !lock.signal.aborted, 'still ours after the reconnection');
    assert.equal(await settled(waiter), false);
    await lock.release();
    // The waiter's watch was registered again on its new connection.
    const next = await waiter;
    assert.ok(next.token > lock.token);
    await next.release();
  });

  test('session expiry is reported to the holder as lock lost, and the next acquire opens a new session', async (t) => {
    const fixture = await zkFor(t);
    if (!fixture) return;
    const { client, proxy } = await fixture.proxied();
    const other = fixture.client();
    const lock = await client.acquire('expiring');
    const lost = lostOf(lock);
    const { id, password } = await client.sessionCredentials();
    // Cut the holder off, then end its session from another connection: ZooKeeper deletes the
    // session's nodes at once, as it would after the timeout.
    await proxy.stop();
    const thief = await rawClient({ sessionId: id, sessionPassword: password });
    const thiefGone = once(thief, 'disconnected');
    thief.close();
    await thiefGone;
    const next = await other.acquire('expiring', { waitMs: 10_000 });
    assert.ok(next.token > lock.token);
    await proxy.start();
    const error = await lost;
    assert.ok(error instanceof LockLostError);
    assert.equal(error.reason, 'session-lost');
    assert.ok(lock.signal.aborted);
    await next.release();
    const again = await client.acquire('expiring', { waitMs: 10_000 });
    assert.ok(again.token > next.token);
    await again.release();
  });

  test('cut off longer than the session timeout, the holder counts the lock lost by its own clock', async (t) => {
    const fixture = await zkFor(t);
    if (!fixture) return;
    // The smallest timeout the server allows (2 × tickTime): the test waits that long.
    const { client, proxy } = await fixture.proxied({ sessionTimeoutMs: 4000 });
    const lock = await client.acquire('partitioned');
    lock.keepAlive();
    const lost = lostOf(lock);
    await proxy.stop();
    const error = await lost;
    assert.equal(error.reason, 'expired');
    assert.ok(lock.signal.aborted);
    await proxy.start();
    const other = fixture.client();
    const next = await other.acquire('partitioned', { waitMs: 20_000 });
    assert.ok(next.token > lock.token);
    await next.release();
  });
});
