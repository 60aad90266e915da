// Redlock over three real redis-server processes this test starts on loopback ports and kills:
// the majority rule, the elapsed-time/drift check, fencing tokens that keep increasing when a
// server drops out, renewal, and the mutual-exclusion checker.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { describe, test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { LockBusyError, LockLostError } from '../src/sdk/locks.js';
import { lockKeys } from '../src/sdk/redis-lock.js';
import { Redlock, type RedlockOptions } from '../src/sdk/redlock.js';
import { ClientRoster, FencedCounter, StaleTokenError } from './support/fenced-resource.js';

import { freePort } from './support/services.js';
const startTimeoutMs = 10_000;

interface RedisServer {
  port: number;
  client: Redis;
  kill(): Promise<void>;
}


async function startRedisServer(t: TestContext): Promise<RedisServer> {
  const port = await freePort();
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  t.after(kill);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server on ${port} did not get ready`)), startTimeoutMs);
    child.once('error', reject);
    child.once('exit', () => reject(new Error(`redis-server on ${port} exited before it was ready`)));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.includes('Ready to accept connections')) return;
      clearTimeout(timer);
      resolve();
    });
  });
  // Fail fast while a server is down: Redlock counts a silent server as a refusal.
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => 100 });
  client.on('error', () => undefined);
  t.after(() => client.disconnect());
  await client.connect();
  return { port, client, kill };
}

async function trio(t: TestContext): Promise<RedisServer[]> {
  return Promise.all([startRedisServer(t), startRedisServer(t), startRedisServer(t)]);
}

function redlockOn(servers: RedisServer[], options: RedlockOptions = {}): Redlock {
  return new Redlock(
    servers.map((server) => server.client),
    { retryDelayMs: 20, retryJitterMs: 10, serverTimeoutMs: 200, ...options },
  );
}

describe('Redlock over three redis-server processes', () => {
  test('a majority grants it; a second client cannot; one server down still leaves a majority, two do not', async (t) => {
    const servers = await trio(t);
    const redlock = redlockOn(servers);
    assert.equal(redlock.quorum, 2);
    const first = await redlock.acquire('job', { ttlMs: 10_000, waitMs: 0 });
    assert.equal(await redlockOn(servers).tryAcquire('job', { ttlMs: 10_000 }), null);
    await first.release();
    await servers[0].kill();
    const second = await redlock.acquire('job', { ttlMs: 10_000, waitMs: 0 });
    assert.ok(second.token > first.token);
    assert.equal(await redlock.tryAcquire('job', { ttlMs: 10_000 }), null);
    await second.release();
    await servers[1].kill();
    await assert.rejects(redlock.acquire('job', { ttlMs: 10_000, waitMs: 0 }), (error: unknown) => error instanceof LockBusyError && /no-quorum/.test(error.message));
    // The lone survivor was tried, then undone: it holds nothing.
    const where = lockKeys('tandem:redlock:', 'job', false);
    assert.equal(await servers[2].client.exists(where.holders), 0);
  });

  test('an acquisition that took longer than the TTL allows (elapsed + drift) fails and is undone everywhere', async (t) => {
    const servers = await trio(t);
    // A clock on which every reading is 1 s after the last: each round "takes" a full TTL.
    let fakeNowMs = 0;
    const slow = redlockOn(servers, { clock: () => (fakeNowMs += 1000) });
    await assert.rejects(slow.acquire('slow', { ttlMs: 1000, waitMs: 0 }), (error: unknown) => error instanceof LockBusyError && /too-slow/.test(error.message));
    const where = lockKeys('tandem:redlock:', 'slow', false);
    for (const server of servers) assert.equal(await server.client.exists(where.holders), 0, `server ${server.port} still holds the lock`);
    // The drift allowance alone is ttl·0.01 + 2 ms = 3 ms of a 100 ms TTL: a round that took
    // 98 ms leaves -1 ms and fails; one that took 96 ms leaves 1 ms and succeeds.
    let tightNowMs = 0;
    assert.equal(await redlockOn(servers, { clock: () => (tightNowMs += 98) }).tryAcquire('tight', { ttlMs: 100 }), null);
    let justNowMs = 0;
    const barely = await redlockOn(servers, { clock: () => (justNowMs += 96) }).tryAcquire('barely', { ttlMs: 100 });
    assert.ok(barely, 'a round that leaves 1 ms of validity succeeds');
    await barely.release();
  });

  test('fencing tokens keep increasing when the server with the highest counter drops out', async (t) => {
    const servers = await trio(t);
    const redlock = redlockOn(servers);
    const where = lockKeys('tandem:redlock:', 'fenced', false);
    // One server's counter is far ahead of the others (it saw grants the others missed).
    await servers[0].client.set(where.fence, 1000);
    const first = await redlock.acquire('fenced', { ttlMs: 10_000, waitMs: 0 });
    assert.ok(first.token > 1000);
    await first.release();
    await servers[0].kill();
    // Without the second round that raised the others' counters, this token would be about 2.
    const second = await redlock.acquire('fenced', { ttlMs: 10_000, waitMs: 0 });
    assert.ok(second.token > first.token, `token ${second.token} after ${first.token}`);
    await second.release();
  });

  test('renewal keeps the lock past its TTL; when a majority is gone the holder is told it lost it', async (t) => {
    const servers = await trio(t);
    const redlock = redlockOn(servers);
    const lock = await redlock.acquire('renewed', { ttlMs: 300, waitMs: 0 });
    lock.keepAlive();
    // A contender that keeps trying for several TTLs never gets in.
    await assert.rejects(redlockOn(servers).acquire('renewed', { ttlMs: 300, waitMs: 1000 }), LockBusyError);
    assert.equal(lock.lostError, null);
    const lost = new Promise<LockLostError>((resolve) => lock.once('lost', resolve));
    await servers[0].kill();
    await servers[1].kill();
    const error = await lost;
    assert.ok(error instanceof LockLostError);
    assert.ok(lock.signal.aborted);
  });

  test('mutual exclusion with fencing across Redlock clients, with paused holders', async (t) => {
    const servers = await trio(t);
    const resource = new FencedCounter();
    const liveRefusals: string[] = [];
    let staleWritesRefused = 0;
    const roster = new ClientRoster(4);
    await Promise.all(
      Array.from({ length: 4 }, async (_, index) => {
        const redlock = redlockOn(servers);
        for (let iteration = 0; iteration < 8; iteration++) {
          const paused = (index + iteration) % 5 === 2;
          const lock = await redlock.acquire('ledger', { ttlMs: paused ? 150 : 5000, waitMs: 30_000 });
          const value = resource.read(lock.token);
          // Paused until a newer holder took over (its lease ran out), or nobody else is left.
          if (paused) await Promise.race([resource.tokenAbove(lock.token), roster.othersDone()]);
          try {
            resource.write(lock.token, value + 1, `client${index}`);
          } catch (error) {
            if (!(error instanceof StaleTokenError)) throw error;
            if (paused) staleWritesRefused += 1;
            else liveRefusals.push(error.message);
          }
          await lock.release();
        }
        roster.finished();
      }),
    );
    assert.deepEqual(resource.orderViolations(), []);
    assert.equal(resource.value, resource.accepted.length, 'lost updates');
    assert.deepEqual(liveRefusals, []);
    assert.ok(staleWritesRefused > 0, 'a paused holder should have been overtaken');
  });
});
