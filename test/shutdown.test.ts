// SIGTERM on a real `tandem serve` process (issue 10, bug 11). With nothing to do it exits 0;
// with a client's keep-alive connection and a result long poll open it still exits; with
// rounds of calls in flight it stops taking work, lets those rounds end, hands their
// transactions back (no lease, due at once) and exits 0, and a coordinator started afterwards
// finishes every acknowledged transaction with each effect applied once. A round that outlasts
// shutdownDrainMs does not hold the exit: it keeps its lease until it expires.
// Nothing here measures time: each test awaits the exit itself, bounded only by its timeout.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test, type TestContext } from 'node:test';
import pg from 'pg';
import { Redis } from 'ioredis';
import { TandemApiError, type TandemClient } from '../src/sdk/client.js';
import { ChildCoordinator, isConnectionError } from './support/child-coordinator.js';
import { startLedgerParticipants, type HeldAnswer, type LedgerParticipant } from './support/ledger-participant.js';
import { requireService, services } from './support/services.js';

const runId = randomBytes(4).toString('hex');
const schemas: string[] = [];
const redisPrefix = `tandem-shutdown:${runId}:`;
const stoppingLine = /tandem stopping/;

after(async () => {
  const client = new pg.Client({ connectionString: services.postgres.url });
  await client.connect().then(
    async () => {
      for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
    },
    () => undefined,
  );
  const redis = new Redis(services.redis.url, { lazyConnect: true });
  await redis.connect().then(
    async () => {
      const keys = await redis.keys(`${redisPrefix}*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    },
    () => undefined,
  );
});

async function postgresUrl(name: string): Promise<string> {
  const schema = `tandem_shutdown_${runId}_${name}`;
  schemas.push(schema);
  const client = new pg.Client({ connectionString: services.postgres.url });
  await client.connect();
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  await client.end();
  return `${services.postgres.url}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
}

async function leasesIn(storeUrl: string): Promise<Array<{ gid: string; owner: string | null; status: string }>> {
  const client = new pg.Client({ connectionString: storeUrl });
  await client.connect();
  try {
    const result = await client.query<{ gid: string; lease_owner: string | null; status: string }>('SELECT gid, lease_owner, status FROM tandem_transactions ORDER BY gid');
    return result.rows.map((row) => ({ gid: row.gid, owner: row.lease_owner, status: row.status }));
  } finally {
    await client.end();
  }
}

function coordinatorFor(t: TestContext, identity: ConstructorParameters<typeof ChildCoordinator>[0]): ChildCoordinator {
  const coordinator = new ChildCoordinator(identity);
  t.after(() => coordinator.dispose());
  return coordinator;
}

/** Sagas of two branches whose first action's answer the participant holds until released. */
async function heldSagas(client: TandemClient, participants: LedgerParticipant[], prefix: string, count: number, requestTimeoutMs: number): Promise<{ gids: string[]; holds: HeldAnswer[] }> {
  const [first, second] = participants;
  const gids = Array.from({ length: count }, (_, index) => `${prefix}-${runId}-${index}`);
  const holds = gids.map((gid) => first.holdAnswer((delivery) => delivery.gid === gid && delivery.branchId === '01' && delivery.op === 'action'));
  for (const gid of gids) {
    await client.create({
      gid,
      mode: 'saga',
      requestTimeoutMs,
      retryIntervalMs: 100,
      branches: [
        { action: first.urlFor('action'), compensate: first.urlFor('compensate'), payload: { amount: 3 } },
        { action: second.urlFor('action'), compensate: second.urlFor('compensate'), payload: { amount: 5 } },
      ],
    });
  }
  // Every first action has reached the participant and applied its effect; the rounds are in flight.
  await Promise.all(holds.map((hold) => hold.arrived));
  return { gids, holds };
}

function assertAppliedOnce(participants: LedgerParticipant[], gids: string[]): void {
  for (const gid of gids) {
    for (const [participant, branchId] of [[participants[0], '01'], [participants[1], '02']] as const) {
      assert.equal(participant.effects(gid, branchId, 'action'), 1, `${gid}/${branchId}: action applied once`);
      assert.equal(participant.effects(gid, branchId, 'compensate'), 0, `${gid}/${branchId}: not compensated`);
    }
  }
}

describe('SIGTERM', () => {
  const stores = [
    { name: 'sqlite', service: null, url: async () => undefined },
    { name: 'postgres', service: 'postgres' as const, url: () => postgresUrl('idle') },
    { name: 'redis', service: 'redis' as const, url: async () => `${services.redis.url}/0?prefix=${encodeURIComponent(redisPrefix)}` },
  ];
  for (const store of stores) {
    test(`with no client connected, a coordinator on ${store.name} exits 0`, { timeout: 30_000 }, async (t) => {
      if (store.service && !(await requireService(t, store.service))) return;
      const storeUrl = await store.url();
      const coordinator = coordinatorFor(t, storeUrl ? { storeUrl } : {});
      await coordinator.start();
      const exit = await coordinator.terminate();
      assert.deepEqual(exit, { code: 0, signal: null }, `exit after SIGTERM; stderr:\n${coordinator.stderrText}`);
    });
  }

  test('with a keep-alive connection and a result long poll open, the coordinator answers the poll and exits 0', { timeout: 30_000 }, async (t) => {
    // One result wait at most: of two polls sent together, one is refused (503) only once the
    // other is open on the server, which is the moment to send SIGTERM.
    const coordinator = coordinatorFor(t, { env: { TANDEM_RESULT_WAITERS_MAX: '1' } });
    await coordinator.start();
    // A TCC transaction without a deadline never ends by itself: an open poll would wait its
    // full 60 s, longer than this test may run, unless shutdown answers it.
    const gid = `long-poll-${runId}`;
    await coordinator.client.create({ gid, mode: 'tcc' });
    const poll = () =>
      coordinator.client.call<{ status: string }>('GET', `/v1/transactions/${gid}/result?timeoutMs=60000`).then(
        (view) => ({ answered: view.status }),
        (error: unknown) => ({ failed: error instanceof TandemApiError ? error.status : isConnectionError(error) ? 'connection' : String(error) }),
      );
    const polls = [poll(), poll()];
    const first = await Promise.race(polls.map((outcome, index) => outcome.then((value) => ({ index, value }))));
    assert.deepEqual(first.value, { failed: 503 }, 'the second poll was refused because the first is open');
    const exit = await coordinator.terminate();
    assert.deepEqual(exit, { code: 0, signal: null }, `exit after SIGTERM; stderr:\n${coordinator.stderrText}`);
    assert.deepEqual(await polls[1 - first.index], { answered: 'prepared' }, 'the open poll was answered with the state it saw');
  });

  test('with rounds in flight on PostgreSQL: it stops taking work, ends those rounds, hands the transactions back and exits 0; a new coordinator finishes them', { timeout: 60_000 }, async (t) => {
    if (!(await requireService(t, 'postgres'))) return;
    const storeUrl = await postgresUrl('inflight');
    const participants = await startLedgerParticipants(t, 2);
    // A lease and a watchdog longer than this test may run: the new coordinator can finish the
    // transactions in time only if the old one gave their leases up and left them due.
    const env = { TANDEM_LEASE_MS: '120000', TANDEM_RECOVERY_INTERVAL_MS: '100', TANDEM_HEARTBEAT_INTERVAL_MS: '200' };
    const first = coordinatorFor(t, { storeUrl, instanceId: 'first', env });
    await first.start();
    const { gids, holds } = await heldSagas(first.client, participants, 'inflight', 10, 120_000);

    const mark = first.logText.length;
    const exited = first.terminate();
    await first.logMatches(stoppingLine, mark);
    const late = await first.client
      .create({ gid: `late-${runId}`, mode: 'saga', branches: [{ action: participants[1].urlFor('action'), compensate: participants[1].urlFor('compensate') }] })
      .then(
        () => 'accepted',
        (error: unknown) => (error instanceof TandemApiError ? error.status : isConnectionError(error) ? 'connection' : String(error)),
      );
    assert.ok(late === 503 || late === 'connection', `a create after SIGTERM is refused (got ${String(late)})`);
    for (const hold of holds) hold.release();
    const exit = await exited;
    assert.deepEqual(exit, { code: 0, signal: null }, `exit after SIGTERM; stderr:\n${first.stderrText}`);
    assert.doesNotMatch(first.logText, /keep their leases/, 'every round ended within the drain');

    const left = await leasesIn(storeUrl);
    assert.deepEqual(left.map((row) => row.gid), gids, 'every acknowledged transaction is stored, the refused one is not');
    assert.deepEqual(left.filter((row) => row.owner !== null), [], 'no lease is left behind');
    assert.ok(left.every((row) => row.status === 'submitted'), 'the second branches were left to the next coordinator');

    const second = coordinatorFor(t, { storeUrl, instanceId: 'second', env });
    await second.start();
    const ended = await Promise.all(gids.map((gid) => second.client.waitResult(gid, { timeoutMs: 30_000 })));
    assert.deepEqual(ended.map((tx) => tx.status), gids.map(() => 'succeeded'));
    assertAppliedOnce(participants, gids);
    for (const gid of gids) {
      assert.equal(participants[0].deliveries(gid, '01', 'action'), 1, `${gid}: the first action, answered during the drain, was not repeated`);
      assert.deepEqual(participants[1].callersOf(gid), ['second'], `${gid}: the second branch was called by the new coordinator only`);
    }
  });

  test('with a round outlasting shutdownDrainMs: it exits 0 anyway, the round keeps its lease until it expires, and a new coordinator finishes it', { timeout: 60_000 }, async (t) => {
    if (!(await requireService(t, 'postgres'))) return;
    const storeUrl = await postgresUrl('stuck');
    const participants = await startLedgerParticipants(t, 2);
    const env = { TANDEM_LEASE_MS: '2000', TANDEM_SHUTDOWN_DRAIN_MS: '300', TANDEM_RECOVERY_INTERVAL_MS: '100', TANDEM_HEARTBEAT_INTERVAL_MS: '200' };
    const first = coordinatorFor(t, { storeUrl, instanceId: 'first', env });
    await first.start();
    // The calls' own timeout (1 s) is longer than the drain: the exit must not wait for it.
    const { gids, holds } = await heldSagas(first.client, participants, 'stuck', 3, 1000);
    // The answers stay held until the process is gone.
    const exit = await first.terminate();
    assert.deepEqual(exit, { code: 0, signal: null }, `exit after SIGTERM; stderr:\n${first.stderrText}`);
    assert.match(first.logText, /keep their leases until they expire/);
    const left = await leasesIn(storeUrl);
    assert.deepEqual(left.map((row) => row.owner), gids.map(() => 'first'), 'the rounds still running kept their leases');
    for (const hold of holds) hold.release();

    const second = coordinatorFor(t, { storeUrl, instanceId: 'second', env });
    await second.start();
    const ended = await Promise.all(gids.map((gid) => second.client.waitResult(gid, { timeoutMs: 30_000 })));
    assert.deepEqual(ended.map((tx) => tx.status), gids.map(() => 'succeeded'));
    assertAppliedOnce(participants, gids);
  });
});
