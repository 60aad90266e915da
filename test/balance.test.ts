// tandem/balance: balancer fairness and affinity, outlier ejection on a manual clock, the retry
// budget, and, against real HTTP servers that get killed and restarted mid-run, active health
// checks and failover with ejection and return.
import assert from 'node:assert/strict';
import { once, type EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import { Agent } from 'undici';
import {
  FailoverClient,
  FailoverError,
  HashBalancer,
  HealthChecker,
  LeastRequestBalancer,
  OutlierDetector,
  RandomBalancer,
  RetryBudget,
  RoundRobinBalancer,
  SmoothWeightedRoundRobinBalancer,
  type Clock,
  type Instance,
  type OutlierEjection,
} from '../src/balance/index.js';
import { seededPrng } from './support/prng.js';

/** A safety net for awaited events: a bug fails the test instead of hanging the run. */
const awaitedEventMsMax = 15_000;

function instances(...ids: string[]): Instance[] {
  return ids.map((id) => ({ id, url: `http://127.0.0.1:1/${id}` }));
}

function tally(picks: readonly (Instance | undefined)[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const pick of picks) counts[pick?.id ?? 'none'] = (counts[pick?.id ?? 'none'] ?? 0) + 1;
  return counts;
}

/** Time that moves only when told to; due timers fire in order as it moves. */
class ManualClock implements Clock {
  private current = 0;
  private timers: { at: number; callback: () => void; cancelled: boolean }[] = [];

  now(): number {
    return this.current;
  }

  setTimer(callback: () => void, delayMs: number) {
    const timer = { at: this.current + Math.max(0, delayMs), callback, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => void (timer.cancelled = true) };
  }

  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      const due = this.timers.filter((timer) => !timer.cancelled && timer.at <= target).sort((left, right) => left.at - right.at)[0];
      if (due === undefined) break;
      due.cancelled = true;
      this.current = due.at;
      due.callback();
    }
    this.timers = this.timers.filter((timer) => !timer.cancelled);
    this.current = target;
  }
}

/** Resolves with the first event `name` whose arguments pass `matches`. */
function nextEvent<A extends unknown[]>(emitter: EventEmitter, name: string, matches: (...args: A) => boolean): Promise<A> {
  return new Promise((resolve, reject) => {
    const safety = setTimeout(() => {
      emitter.off(name, listener);
      reject(new Error(`no matching '${name}' event within ${awaitedEventMsMax} ms`));
    }, awaitedEventMsMax);
    const listener = (...args: unknown[]) => {
      if (!matches(...(args as A))) return;
      clearTimeout(safety);
      emitter.off(name, listener);
      resolve(args as A);
    };
    emitter.on(name, listener);
  });
}

/** A real HTTP service instance: answers `status` on /work and `healthStatus` on /health. */
class ScriptedServer {
  status = 200;
  healthStatus = 200;
  workHits = 0;
  private server: http.Server | undefined;
  private port = 0;

  constructor(readonly id: string) {}

  get instance(): Instance {
    return { id: this.id, url: `http://127.0.0.1:${this.port}` };
  }

  async start(): Promise<void> {
    const server = http.createServer((request, response) => {
      if (request.url === '/health') {
        response.writeHead(this.healthStatus).end();
        return;
      }
      this.workHits += 1;
      response.writeHead(this.status, { 'content-type': 'text/plain' }).end(this.id);
    });
    server.listen(this.port, '127.0.0.1');
    await once(server, 'listening');
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops listening and drops open connections, as a crashed process would. */
  async kill(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    const closed = once(server, 'close');
    server.close();
    server.closeAllConnections();
    await closed;
  }

  /** Listens again on the same port. */
  async restart(): Promise<void> {
    await this.start();
  }
}

async function startServers(t: TestContext, ...ids: string[]): Promise<ScriptedServer[]> {
  const servers = ids.map((id) => new ScriptedServer(id));
  t.after(() => Promise.all(servers.map((server) => server.kill())));
  await Promise.all(servers.map((server) => server.start()));
  return servers;
}

function testAgent(t: TestContext): Agent {
  const agent = new Agent({ keepAliveTimeout: 1_000 });
  t.after(() => agent.close());
  return agent;
}

describe('balancers', () => {
  test('round robin cycles in order and skips unavailable or excluded instances', () => {
    let bDown = false;
    const balancer = new RoundRobinBalancer(instances('a', 'b', 'c'), { isAvailable: (instance) => !(bDown && instance.id === 'b') });
    const cycle = Array.from({ length: 6 }, () => balancer.pick()?.id);
    assert.deepEqual(cycle, ['a', 'b', 'c', 'a', 'b', 'c']);
    assert.deepEqual(tally(Array.from({ length: 300 }, () => balancer.pick())), { a: 100, b: 100, c: 100 });
    bDown = true;
    assert.deepEqual(Array.from({ length: 4 }, () => balancer.pick()?.id), ['a', 'c', 'a', 'c']);
    assert.equal(balancer.pick(undefined, new Set(['a', 'c'])), undefined);
  });

  test('smooth weighted round robin gives nginx’s sequence and exact shares', () => {
    const weighted = [
      { id: 'a', url: 'http://a', weight: 5 },
      { id: 'b', url: 'http://b', weight: 1 },
      { id: 'c', url: 'http://c', weight: 1 },
    ];
    const balancer = new SmoothWeightedRoundRobinBalancer(weighted);
    assert.deepEqual(
      Array.from({ length: 7 }, () => balancer.pick()?.id),
      ['a', 'a', 'b', 'a', 'c', 'a', 'a'],
    );
    assert.deepEqual(tally(Array.from({ length: 700 }, () => balancer.pick())), { a: 500, b: 100, c: 100 });
    // Excluding the heavy instance leaves the others alternating.
    assert.deepEqual(tally(Array.from({ length: 10 }, () => balancer.pick(undefined, new Set(['a'])))), { b: 5, c: 5 });
  });

  test('random spreads picks evenly and honours exclusions', () => {
    const prng = seededPrng(7);
    const balancer = new RandomBalancer(instances('a', 'b', 'c'), { random: () => prng.next() });
    const counts = tally(Array.from({ length: 6000 }, () => balancer.pick()));
    for (const id of ['a', 'b', 'c']) assert.ok(Math.abs(counts[id] - 2000) < 200, `${id}: ${counts[id]}`);
    assert.deepEqual(tally(Array.from({ length: 50 }, () => balancer.pick(undefined, new Set(['a', 'b'])))), { c: 50 });
  });

  test('least request (power of two choices) avoids a busy instance and tracks in-flight counts', () => {
    const prng = seededPrng(11);
    const balancer = new LeastRequestBalancer(instances('a', 'b', 'c'), { random: () => prng.next() });
    // Hold requests on whichever instances come up until 'a' has three in flight.
    const held: Instance[] = [];
    while (balancer.inFlightOf('a') < 3) held.push(balancer.pick() as Instance);
    for (const instance of held) if (instance.id !== 'a') balancer.onResult(instance, true, 1);
    assert.equal(balancer.inFlightOf('b') + balancer.inFlightOf('c'), 0);
    // Requests that finish at once: 'a' loses every pair it is drawn in.
    const picks: Instance[] = [];
    for (let round = 0; round < 300; round += 1) {
      const instance = balancer.pick() as Instance;
      picks.push(instance);
      balancer.onResult(instance, true, 1);
    }
    const counts = tally(picks);
    assert.equal(counts.a, undefined);
    assert.ok(counts.b > 100 && counts.c > 100, JSON.stringify(counts));
    for (const instance of held) if (instance.id === 'a') balancer.onResult(instance, true, 1);
    assert.equal(balancer.inFlightOf('a'), 0);
    const fair = tally(
      Array.from({ length: 3000 }, () => {
        const instance = balancer.pick() as Instance;
        balancer.onResult(instance, true, 1);
        return instance;
      }),
    );
    for (const id of ['a', 'b', 'c']) assert.ok(Math.abs(fair[id] - 1000) < 150, JSON.stringify(fair));
  });

  test('hash balancers keep key affinity, fail over per key and return when the instance is back', () => {
    for (const algorithm of ['ring', 'maglev'] as const) {
      let down: string | undefined;
      const balancer = new HashBalancer(instances('a', 'b', 'c', 'd'), {
        algorithm,
        maglevTableSize: 1009,
        isAvailable: (instance) => instance.id !== down,
      });
      const keys = Array.from({ length: 400 }, (_, index) => `user-${index}`);
      const home = keys.map((key) => balancer.pick(key)?.id);
      assert.deepEqual(
        keys.map((key) => balancer.pick(key)?.id),
        home,
        `${algorithm}: same key, same instance`,
      );
      assert.equal(Object.keys(tally(keys.map((key) => balancer.pick(key)))).length, 4);
      down = 'b';
      keys.forEach((key, index) => {
        const now = balancer.pick(key)?.id;
        if (home[index] === 'b') assert.notEqual(now, 'b');
        else assert.equal(now, home[index], `${algorithm}: keys of other instances stay`);
      });
      down = undefined;
      assert.deepEqual(
        keys.map((key) => balancer.pick(key)?.id),
        home,
      );
    }
  });
});

describe('outlier ejection', () => {
  test('consecutive failures eject for a growing time, capped, and a success resets the count', () => {
    const clock = new ManualClock();
    const outlier = new OutlierDetector(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'], {
      clock,
      baseEjectionTimeMs: 30_000,
      maxEjectionTimeMs: 90_000,
      decayIntervalMs: 1_000_000,
    });
    const ejections: OutlierEjection[] = [];
    const returns: string[] = [];
    outlier.on('ejected', (ejection) => ejections.push(ejection));
    outlier.on('returned', (id) => returns.push(id));

    for (let failure = 0; failure < 4; failure += 1) outlier.onResult('a', false);
    outlier.onResult('a', true);
    for (let failure = 0; failure < 4; failure += 1) outlier.onResult('a', false);
    assert.equal(outlier.isEjected('a'), false, 'four failures, a success, four failures');

    const expectedDurations = [30_000, 60_000, 90_000, 90_000];
    for (const [round, durationMs] of expectedDurations.entries()) {
      for (let failure = 0; failure < 5; failure += 1) outlier.onResult('a', false);
      assert.equal(outlier.isEjected('a'), true);
      assert.equal(ejections[round].durationMs, durationMs);
      clock.advance(durationMs - 1);
      assert.equal(outlier.isEjected('a'), true);
      clock.advance(1);
      assert.deepEqual(returns.length, round + 1, 'the timer returns it on time');
      assert.equal(outlier.isEjected('a'), false);
    }
    outlier.close();
  });

  test('the multiplier decays while the instance stays in service', () => {
    const clock = new ManualClock();
    const outlier = new OutlierDetector(['a', 'b'], { clock, consecutiveFailures: 1, baseEjectionTimeMs: 1_000, decayIntervalMs: 10_000 });
    const durations: number[] = [];
    outlier.on('ejected', (ejection) => durations.push(ejection.durationMs));
    outlier.onResult('a', false);
    clock.advance(1_000);
    outlier.onResult('a', false);
    clock.advance(2_000);
    outlier.onResult('a', false);
    clock.advance(3_000);
    clock.advance(20_000); // two decay intervals in service: multiplier 3 → 1
    outlier.onResult('a', false);
    assert.deepEqual(durations, [1_000, 2_000, 3_000, 2_000]);
    outlier.close();
  });

  test('at most maxEjectionPercent are ejected, but always one', () => {
    const clock = new ManualClock();
    const ids = Array.from({ length: 20 }, (_, index) => `i${index}`);
    const outlier = new OutlierDetector(ids, { clock, consecutiveFailures: 1, maxEjectionPercent: 10 });
    for (const id of ids.slice(0, 5)) outlier.onResult(id, false);
    assert.deepEqual(outlier.ejectedIds(), ['i0', 'i1'], '10% of 20');

    const small = new OutlierDetector(['x', 'y', 'z'], { clock, consecutiveFailures: 2, baseEjectionTimeMs: 100 });
    for (const id of ['x', 'y', 'x', 'y']) small.onResult(id, false);
    assert.deepEqual(small.ejectedIds(), ['x'], 'one even though 1 of 3 is above 10%');
    clock.advance(100);
    assert.deepEqual(small.ejectedIds(), []);
    small.onResult('y', false);
    assert.deepEqual(small.ejectedIds(), ['y'], 'y is still failing and now fits under the cap');
    outlier.close();
    small.close();
  });
});

describe('retry budget', () => {
  test('retries in flight stay under max(min, percent × active requests)', () => {
    const budget = new RetryBudget();
    for (let request = 0; request < 10; request += 1) budget.requestStarted();
    assert.equal(budget.limit, 3, '20% of 10 is 2, the minimum is 3');
    assert.deepEqual(
      Array.from({ length: 4 }, () => budget.tryAcquireRetry()),
      [true, true, true, false],
    );
    budget.retryFinished();
    assert.equal(budget.tryAcquireRetry(), true);
    for (let request = 0; request < 40; request += 1) budget.requestStarted();
    assert.equal(budget.limit, 10);
    assert.equal(budget.activeRetries, 3);
  });
});

describe('with real HTTP servers', () => {
  test('health checks mark a killed instance unhealthy and a restarted one healthy', async (t) => {
    const servers = await startServers(t, 'a', 'b', 'c');
    const [, b, c] = servers;
    const checker = new HealthChecker(
      servers.map((server) => server.instance),
      { intervalMs: 20, timeoutMs: 2_000, unhealthyThreshold: 2, healthyThreshold: 2, dispatcher: testAgent(t) },
    );
    t.after(() => checker.stop());
    const bDown = nextEvent<[Instance, string]>(checker, 'unhealthy', (instance) => instance.id === 'b');
    checker.start();
    await b.kill();
    const [, reason] = await bDown;
    assert.match(reason, /ECONNREFUSED|UND_ERR|other side closed/);
    assert.deepEqual(
      ['a', 'b', 'c'].map((id) => checker.isHealthy(id)),
      [true, false, true],
    );

    const bUp = nextEvent<[Instance]>(checker, 'healthy', (instance) => instance.id === 'b');
    await b.restart();
    await bUp;
    assert.equal(checker.isHealthy('b'), true);

    const cDown = nextEvent<[Instance, string]>(checker, 'unhealthy', (instance) => instance.id === 'c');
    c.healthStatus = 503;
    assert.equal((await cDown)[1], 'status 503');
  });

  test('failover hides a killed instance; it is ejected, then serves again once restarted', async (t) => {
    const servers = await startServers(t, 'a', 'b', 'c');
    const [, b] = servers;
    const clock = new ManualClock();
    const outlier = new OutlierDetector(['a', 'b', 'c'], { clock, consecutiveFailures: 2, baseEjectionTimeMs: 30_000, maxEjectionPercent: 50 });
    t.after(() => outlier.close());
    const balancer = new RoundRobinBalancer(
      servers.map((server) => server.instance),
      { isAvailable: (instance) => !outlier.isEjected(instance.id) },
    );
    const client = new FailoverClient({ balancer, outlier, retryBudget: new RetryBudget(), dispatcher: testAgent(t) });
    const bEjected = nextEvent<[OutlierEjection]>(outlier, 'ejected', (ejection) => ejection.id === 'b');
    const attemptsOnB: number[] = [];

    for (let request = 0; request < 60; request += 1) {
      if (request === 15) await b.kill();
      if (request === 40) {
        await b.restart();
        const bReturned = nextEvent<[string]>(outlier, 'returned', (id) => id === 'b');
        clock.advance(30_000);
        await bReturned;
      }
      const response = await client.request({ path: '/work' });
      assert.equal(response.statusCode, 200, `request ${request}`);
      assert.notEqual(response.body.toString(), request >= 15 && request < 40 ? 'b' : '', `request ${request}`);
      attemptsOnB.push(response.attempts.filter((attempt) => attempt.instanceId === 'b').length);
    }
    const [ejection] = await bEjected;
    assert.equal(ejection.durationMs, 30_000);
    const failedOnB = attemptsOnB.slice(15, 40).reduce((sum, count) => sum + count, 0);
    assert.equal(failedOnB, 2, 'two failed attempts on b, then it is ejected and skipped');
    const hitsBeforeKill = 5;
    assert.ok(b.workHits >= hitsBeforeKill + 5, `b served again after its return (${b.workHits} hits in all)`);
  });

  test('5xx answers fail over too and eject the instance giving them', async (t) => {
    const servers = await startServers(t, 'a', 'b');
    const [a] = servers;
    a.status = 503;
    const outlier = new OutlierDetector(['a', 'b'], { consecutiveFailures: 3, maxEjectionPercent: 50 });
    t.after(() => outlier.close());
    const balancer = new RoundRobinBalancer(
      servers.map((server) => server.instance),
      { isAvailable: (instance) => !outlier.isEjected(instance.id) },
    );
    const client = new FailoverClient({ balancer, outlier, dispatcher: testAgent(t) });
    const aEjected = nextEvent<[OutlierEjection]>(outlier, 'ejected', (ejection) => ejection.id === 'a');
    for (let request = 0; request < 10; request += 1) {
      const response = await client.request({ path: '/work', method: 'POST', body: '{"n":1}' });
      assert.equal(response.statusCode, 200);
      assert.equal(response.body.toString(), 'b');
    }
    await aEjected;
    assert.equal(a.workHits, 3, 'three 503s, then a is out');
  });

  test('the retry budget and retry:false stop failover; last answers and errors are reported', async (t) => {
    const servers = await startServers(t, 'dead', 'alive');
    const [dead, alive] = servers;
    await dead.kill();
    const instancesInOrder = servers.map((server) => server.instance);
    const dispatcher = testAgent(t);

    const noBudget = new FailoverClient({
      balancer: new RoundRobinBalancer(instancesInOrder),
      retryBudget: new RetryBudget({ budgetPercent: 0, minRetryConcurrency: 0 }),
      dispatcher,
    });
    const refused = await noBudget.request({ path: '/work' }).then(
      () => assert.fail('expected a failure'),
      (error: unknown) => error,
    );
    assert.ok(refused instanceof FailoverError);
    assert.deepEqual(
      refused.attempts.map((attempt) => attempt.instanceId),
      ['dead'],
    );

    const singleShot = new FailoverClient({ balancer: new RoundRobinBalancer(instancesInOrder), dispatcher });
    await assert.rejects(singleShot.request({ path: '/work', retry: false }), FailoverError);
    const failedOver = await singleShot.request({ path: '/work' });
    assert.deepEqual(
      failedOver.attempts.map((attempt) => attempt.instanceId),
      ['alive'],
      'round robin moved on to alive',
    );

    alive.status = 500;
    const all = new FailoverClient({ balancer: new RoundRobinBalancer(instancesInOrder), dispatcher });
    const lastAnswer = await all.request({ path: '/work' });
    assert.equal(lastAnswer.statusCode, 500, 'a 5xx answer is returned rather than the connection error');
    assert.deepEqual(
      lastAnswer.attempts.map((attempt) => attempt.instanceId),
      ['dead', 'alive'],
    );
  });
});
