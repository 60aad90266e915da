// Coordinators 15 s apart on one store (issue 17). Real `tandem serve` processes share a
// PostgreSQL store, then a Redis store. In the skewed run there are three: one on the host's
// clock, one shifted '+15s' and one '-15s' by libfaketime (so pairs 15 s and 30 s apart); the
// baseline run has two on the host's clock. All drive the same workload of money transfers,
// as sagas and as TCC, against two bank participants that log every call. The skew is longer than the lease and than the TCC deadline, so a coordinator
// that judged either on its own clock would take over the other's live leases and cancel TCC
// transfers whose Tries all succeeded. With every such decision on the store's clock:
// no op is in flight from two coordinators at once, no transaction changes hands while its
// lease is live, money is conserved, and no TCC transfer fails (there are no injected failures,
// so the baseline's failure count, 0, is the one to match).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test, type TestContext } from 'node:test';
import pg from 'pg';
import { Redis } from 'ioredis';
import { TandemApiError, TccTransaction, type TandemClient } from '../src/sdk/client.js';
import { ChildCoordinator } from './support/child-coordinator.js';
import { concurrentOps, openingBalance, startBanks, takeovers, type BankParticipant } from './support/bank-participant.js';
import { faketimeEnv, measuredChildOffsetMs, requireFaketime } from './support/faketime.js';
import { requireService, services } from './support/services.js';

const runId = randomBytes(4).toString('hex');
const schemas: string[] = [];
const prefixes: string[] = [];

/** Shorter than the 15 s skew, so misjudging either by the host clock shows at once. */
const leaseMs = 4000;
const timeoutToFailMs = 10_000;
const skewMs = 15_000;
const transfers = 200;
const inFlightMax = 12;
const accounts = 20;
/** Banks answer coordinators after this long, so overlapping calls have room to show. */
const answerDelayMs = 25;

const coordinatorEnv = {
  TANDEM_RECOVERY_INTERVAL_MS: '100',
  TANDEM_HEARTBEAT_INTERVAL_MS: '200',
  TANDEM_INSTANCE_TTL_MS: '1000',
  TANDEM_LEASE_MS: String(leaseMs),
};

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
      for (const prefix of prefixes) {
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
      }
      redis.disconnect();
    },
    () => undefined,
  );
});

/** A store of this run's own: a fresh PostgreSQL schema or Redis key prefix per run. */
const backends = [
  {
    name: 'postgres',
    service: 'postgres' as const,
    async url(run: string): Promise<string> {
      const schema = `tandem_skew_${runId}_${run}`;
      schemas.push(schema);
      const client = new pg.Client({ connectionString: services.postgres.url });
      await client.connect();
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await client.end();
      return `${services.postgres.url}?options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    },
  },
  {
    name: 'redis',
    service: 'redis' as const,
    async url(run: string): Promise<string> {
      const prefix = `tandem-skew:${runId}:${run}:`;
      prefixes.push(prefix);
      return `${services.redis.url}/0?prefix=${encodeURIComponent(prefix)}`;
    },
  },
];

/** The coordinators of each run, by the libfaketime offset each runs under (null: the host's clock). */
const runs = [
  { name: 'no skew', run: 'base', offsets: [null, null] },
  { name: "'+15s' and '-15s'", run: 'skewed', offsets: [null, '+15s', '-15s'] },
] as const;

interface Transfer {
  gid: string;
  mode: 'saga' | 'tcc';
  driver: string;
  /** TCC: both Tries answered success. */
  triesOk?: boolean;
  /**
   * TCC: answers of 409 (the transaction had been cancelled) or 503 (another coordinator held
   * its lease) from registerBranch or submit.
   */
  conflicts?: number;
}

function payloadOf(index: number): { from: { account: number; amount: number }; to: { account: number; amount: number } } {
  const amount = 1 + (index % 9);
  return { from: { account: index % accounts, amount }, to: { account: (index * 7) % accounts, amount } };
}

async function saga(client: TandemClient, driver: string, banks: [BankParticipant, BankParticipant], gid: string, index: number): Promise<Transfer> {
  const [from, to] = banks;
  const payload = payloadOf(index);
  await client.create({
    gid,
    mode: 'saga',
    retryIntervalMs: 100,
    branches: [
      { action: from.urlFor('out'), compensate: from.urlFor('out'), payload: payload.from },
      { action: to.urlFor('in'), compensate: to.urlFor('in'), payload: payload.to },
    ],
  });
  return { gid, mode: 'saga', driver };
}

async function tcc(client: TandemClient, driver: string, banks: [BankParticipant, BankParticipant], gid: string, index: number): Promise<Transfer> {
  const [from, to] = banks;
  const payload = payloadOf(index);
  const transfer: Transfer = { gid, mode: 'tcc', driver, triesOk: false, conflicts: 0 };
  await client.create({ gid, mode: 'tcc', timeoutToFailMs, retryIntervalMs: 100 });
  const tcc = new TccTransaction(client, gid);
  try {
    await tcc.callBranch(payload.from, from.urlFor('out'), from.urlFor('out'), from.urlFor('out'));
    await tcc.callBranch(payload.to, to.urlFor('in'), to.urlFor('in'), to.urlFor('in'));
    transfer.triesOk = true;
    await client.submit(gid);
  } catch (error) {
    // 409: a coordinator cancelled it already; 503: another one was working on it. Neither is
    // expected; they are counted so the checks below can say how often.
    if (!(error instanceof TandemApiError && (error.status === 409 || error.status === 503))) throw error;
    transfer.conflicts = (transfer.conflicts ?? 0) + 1;
    if (!transfer.triesOk) await client.abort(gid).catch(() => undefined);
  }
  return transfer;
}

/** Runs `count` transfers, at most `inFlightMax` at once, alternating between the coordinators. */
async function workload(coordinators: ChildCoordinator[], ids: string[], banks: [BankParticipant, BankParticipant], run: string): Promise<Transfer[]> {
  const done: Transfer[] = [];
  let next = 0;
  const worker = async () => {
    for (let index = next++; index < transfers; index = next++) {
      const which = index % coordinators.length;
      const mode = Math.floor(index / coordinators.length) % 2 === 0 ? 'saga' : 'tcc';
      const gid = `skew-${runId}-${run}-${mode}-${index}`;
      const start = mode === 'saga' ? saga : tcc;
      done.push(await start(coordinators[which].client, ids[which], banks, gid, index));
    }
  };
  await Promise.all(Array.from({ length: inFlightMax }, worker));
  return done;
}

async function driftMsOf(coordinator: ChildCoordinator): Promise<number> {
  const text = await (await fetch(`${coordinator.url}/metrics`)).text();
  const match = /^tandem_clock_drift_ms (\S+)$/m.exec(text);
  assert.ok(match, 'the coordinator exports tandem_clock_drift_ms');
  return Number(match[1]);
}

function versionConflicts(coordinator: ChildCoordinator): number {
  return coordinator.errorLogs().filter((line) => line.includes('changed by another writer')).length;
}

async function startCoordinators(t: TestContext, storeUrl: string, run: string, offsets: ReadonlyArray<string | null>): Promise<{ coordinators: ChildCoordinator[]; ids: string[] }> {
  const ids = offsets.map((offset, index) => `${run}-${index + 1}${offset ? `-${offset.startsWith('+') ? 'ahead' : 'behind'}` : ''}`);
  const coordinators = offsets.map(
    (offset, index) => new ChildCoordinator({ storeUrl, instanceId: ids[index], env: { ...coordinatorEnv, ...(offset ? faketimeEnv(offset) : {}) } }),
  );
  t.after(() => Promise.all(coordinators.map((coordinator) => coordinator.dispose())));
  await Promise.all(coordinators.map((coordinator) => coordinator.start()));
  return { coordinators, ids };
}

describe('coordinators 15 s apart on one store', () => {
  test('libfaketime shifts Date.now() in a node child', async (t) => {
    if (!requireFaketime(t)) return;
    for (const [offset, expectedMs] of [['+15s', skewMs], ['-15s', -skewMs]] as const) {
      const measuredMs = await measuredChildOffsetMs(offset);
      t.diagnostic(`${offset}: a node child reads Date.now() ${Math.round(measuredMs)} ms off this process`);
      assert.ok(Math.abs(measuredMs - expectedMs) < 2000, `under ${offset} the child's clock is ${measuredMs} ms off, not ${expectedMs}`);
    }
  });

  for (const backend of backends) {
    for (const skew of runs) {
      test(`${backend.name}, ${skew.name}: no op from two coordinators at once, no live lease taken, money conserved, no TCC cancelled`, { timeout: 60_000 }, async (t) => {
        if (!(await requireService(t, backend.service))) return;
        if (skew.offsets.some((offset) => offset !== null) && !requireFaketime(t)) return;
        const startedMs = performance.now();
        const banks = await startBanks(t, accounts, answerDelayMs);
        const { coordinators, ids } = await startCoordinators(t, await backend.url(skew.run), skew.run, skew.offsets);

        // Each shifted process really runs on a shifted clock, and knows it.
        const drifts = await Promise.all(coordinators.map(driftMsOf));
        for (const [index, offset] of skew.offsets.entries()) {
          const expectedMs = offset === null ? 0 : offset.startsWith('+') ? skewMs : -skewMs;
          assert.ok(Math.abs(drifts[index] - expectedMs) < 2000, `${ids[index]} measured a drift of ${drifts[index]} ms, not about ${expectedMs}`);
          if (offset) assert.match(coordinators[index].logText, /clock is off the store's/, `${ids[index]} says so in its log`);
        }

        const upMs = performance.now();
        const placed = await workload(coordinators, ids, banks, skew.run);
        const ended = await Promise.all(placed.map((transfer) => coordinators[0].client.waitResult(transfer.gid, { timeoutMs: 30_000 })));
        t.diagnostic(`start ${Math.round(upMs - startedMs)} ms, transfers ${Math.round(performance.now() - upMs)} ms`);

        const calls = [...banks[0].calls, ...banks[1].calls];
        const drivers = new Map(placed.map((transfer) => [transfer.gid, transfer.driver]));
        const seen = takeovers(calls, drivers, leaseMs);
        const overlapping = concurrentOps(calls);
        const conflicts = coordinators.map(versionConflicts);
        const tccs = placed.map((transfer, index) => ({ transfer, status: ended[index].status })).filter(({ transfer }) => transfer.mode === 'tcc');
        const tccFailed = tccs.filter(({ status }) => status !== 'succeeded').length;
        const cancelledAfterTries = tccs.filter(({ transfer, status }) => transfer.triesOk && status === 'failed').length;
        const tccConflicts = tccs.reduce((sum, { transfer }) => sum + (transfer.conflicts ?? 0), 0);
        t.diagnostic(
          `${backend.name} ${skew.name}: ${placed.length} transfers, ${calls.length} branch calls; drifts ${drifts.join('/')} ms; ` +
            `concurrent ops ${overlapping}; live-lease takeovers ${seen.liveLease.length}; driven by the other coordinator ${seen.foreignDriven.length}; ` +
            `version conflicts logged ${conflicts.join('+')}; TCC failed ${tccFailed}/${tccs.length} (cancelled after good Tries ${cancelledAfterTries}, 409/503 answers ${tccConflicts})`,
        );

        const unfinished = ended.filter((tx) => tx.status !== 'succeeded');
        assert.deepEqual(unfinished.map((tx) => `${tx.gid}:${tx.status}`), [], 'every transfer succeeded (nothing refuses)');
        assert.equal(overlapping, 0, 'no branch op was in flight from two coordinators at once');
        assert.deepEqual(seen.liveLease, [], 'no transaction changed coordinator while its lease was live');
        assert.deepEqual(seen.foreignDriven, [], 'each transaction was driven only by the coordinator its client used');
        assert.deepEqual(conflicts, coordinators.map(() => 0), 'no coordinator lost a write to another');
        assert.equal(cancelledAfterTries, 0, 'no TCC transfer was cancelled although its Tries succeeded');
        assert.equal(tccConflicts, 0, 'registerBranch and submit never met a cancelled transaction');

        // Money: every op applied once, nothing left frozen or pending, the total unchanged.
        for (const transfer of placed) {
          const ops = transfer.mode === 'saga' ? ['action'] : ['try', 'confirm'];
          const undo = transfer.mode === 'saga' ? 'compensate' : 'cancel';
          for (const [bank, branchId] of [[banks[0], '01'], [banks[1], '02']] as const) {
            for (const op of ops) assert.equal(bank.effects(transfer.gid, branchId, op), 1, `${transfer.gid}/${branchId}/${op} applied once`);
            assert.equal(bank.effects(transfer.gid, branchId, undo), 0, `${transfer.gid}/${branchId} not undone`);
          }
        }
        const totals = banks.map((bank) => bank.totals());
        assert.deepEqual(
          { balance: totals[0].balance + totals[1].balance, frozen: totals[0].frozen + totals[1].frozen, incoming: totals[0].incoming + totals[1].incoming },
          { balance: 2 * accounts * openingBalance, frozen: 0, incoming: 0 },
          'money is conserved',
        );
      });
    }
  }
});
