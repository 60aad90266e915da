// The mutual-exclusion checker against a real coordinator process: concurrent clients update a
// shared counter that refuses stale fencing tokens, while some holders pause past their TTL,
// some die holding the lock, and the coordinator is killed with SIGKILL and restarted on the
// same database. At the end: no write accepted out of token order, no lost update, no live
// holder refused, tokens unique and higher after the restart than before, and the grant held
// across the restart still held.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Agent } from 'undici';
import { LockClient } from '../src/sdk/locks.js';
import { startChildCoordinator } from './support/child-coordinator.js';
import { FencedCounter, StaleTokenError } from './support/fenced-resource.js';

const lockName = 'ledger';
const clientCount = 6;
const iterationsPerClient = 16;
/** Holders that misbehave take short leases so the others are not held up for long. */
const faultyTtlMs = 250;
const healthyTtlMs = 5000;

type Fault = 'none' | 'pause' | 'kill';

/** A fixed schedule, so every run exercises the same mix. */
function faultOf(client: number, iteration: number): Fault {
  if ((client + iteration) % 9 === 4) return 'pause';
  if ((client * 3 + iteration) % 13 === 6) return 'kill';
  return 'none';
}

test('mutual exclusion with fencing: paused and killed holders, coordinator kill -9 and restart', async (t) => {
  const coordinator = await startChildCoordinator(t);
  const resource = new FencedCounter();
  type Phase = 'before' | 'during' | 'after';
  let phase = 'before' as Phase;
  const grants: Array<{ token: number; startedIn: Phase }> = [];
  const liveHolderRefusals: string[] = [];
  const counts = { paused: 0, killed: 0, staleWritesRefused: 0 };
  const agents = new Set<Agent>();
  t.after(() => Promise.all([...agents].map((agent) => agent.destroy())));
  const newClient = () => {
    const agent = new Agent({ keepAliveTimeout: 10_000 });
    agents.add(agent);
    return { agent, client: new LockClient({ url: coordinator.url, dispatcher: agent, retryUnavailableMs: 30_000 }) };
  };

  const runClient = async (index: number) => {
    let { agent, client } = newClient();
    const writer = `client${index}`;
    for (let iteration = 0; iteration < iterationsPerClient; iteration++) {
      const fault = faultOf(index, iteration);
      const startedIn = phase;
      const lease = await client.acquire(lockName, { ttlMs: fault === 'none' ? healthyTtlMs : faultyTtlMs, waitMs: 60_000, owner: writer });
      grants.push({ token: lease.token, startedIn });
      let value: number;
      try {
        value = resource.read(lease.token);
      } catch (error) {
        if (!(error instanceof StaleTokenError)) throw error;
        liveHolderRefusals.push(`${writer} read refused: ${error.message}`);
        await lease.release();
        continue;
      }
      if (fault === 'kill') {
        // The process dies holding the lock: no write, no release, its connections drop.
        counts.killed += 1;
        agents.delete(agent);
        await agent.destroy();
        ({ agent, client } = newClient());
        continue;
      }
      if (fault === 'pause') {
        // A stop-the-world pause longer than the lease: resume once another holder has come
        // (or, if nobody is left to come, after a bound).
        counts.paused += 1;
        await Promise.race([resource.tokenAbove(lease.token), new Promise((resolve) => setTimeout(resolve, faultyTtlMs * 8))]);
        try {
          resource.write(lease.token, value + 1, writer);
        } catch (error) {
          if (!(error instanceof StaleTokenError)) throw error;
          counts.staleWritesRefused += 1;
        }
        await lease.release();
        continue;
      }
      try {
        resource.write(lease.token, value + 1, writer);
      } catch (error) {
        if (!(error instanceof StaleTokenError)) throw error;
        liveHolderRefusals.push(`${writer} write refused: ${error.message}`);
      }
      await lease.release();
    }
  };

  const restartWhileHeld = async (): Promise<number> => {
    await resource.writesReached(30);
    const { client } = newClient();
    const held = await client.acquire(lockName, { ttlMs: 15_000, waitMs: 60_000, owner: 'across-restart' });
    held.keepAlive();
    grants.push({ token: held.token, startedIn: phase });
    const value = resource.read(held.token);
    const highestBefore = Math.max(...grants.map((grant) => grant.token));
    phase = 'during';
    const exit = await coordinator.kill();
    assert.equal(exit.signal, 'SIGKILL');
    await coordinator.start();
    phase = 'after';
    const intruder = await newClient().client.tryAcquire(lockName, { ttlMs: 1000 });
    assert.equal(intruder, null, 'the grant made before the crash must still hold the lock');
    resource.write(held.token, value + 1, 'across-restart');
    assert.equal(held.lostError, null);
    await held.release();
    return highestBefore;
  };

  const [highestBefore] = await Promise.all([restartWhileHeld(), ...Array.from({ length: clientCount }, (_, index) => runClient(index))]);

  assert.deepEqual(resource.orderViolations(), [], 'accepted writes out of token order');
  assert.equal(resource.value, resource.accepted.length, 'lost updates: the counter is behind the accepted writes');
  assert.deepEqual(liveHolderRefusals, [], 'a holder with a live lease was refused: two holders overlapped');
  const tokens = grants.map((grant) => grant.token);
  assert.equal(new Set(tokens).size, tokens.length, 'a fencing token was granted twice');
  const afterRestart = grants.filter((grant) => grant.startedIn === 'after');
  assert.ok(afterRestart.length > 0, 'clients kept going after the restart');
  for (const grant of afterRestart) assert.ok(grant.token > highestBefore, `token ${grant.token} after the restart is not above ${highestBefore}`);
  // The faults happened and did what they should.
  assert.ok(counts.paused > 0 && counts.killed > 0, JSON.stringify(counts));
  assert.ok(counts.staleWritesRefused > 0, `no paused holder was overtaken: ${JSON.stringify(counts)}`);
  assert.equal(resource.accepted.length + resource.rejected.length, clientCount * iterationsPerClient - counts.killed + 1);
});
