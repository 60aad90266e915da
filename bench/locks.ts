// Lock throughput and hand-off latency, Tandem against the baseline and the peers, in one run
// on one machine and one Redis (127.0.0.1:6379).
//
// Systems:
//   raw                 SET key id NX PX ttl to acquire, an owner-checked Lua DEL to release
//                       (ids drawn from the same pooled CSPRNG as Tandem's); when contended it
//                       retries every --raw-retry-ms ± 50% (default 10 ms)
//   tandemRedis         RedisLockClient (fair queue, fencing token, server-sent wake-ups)
//   redlock             redlock@4 on the same single Redis (defaults: retry 200 ± 100 ms)
//   redisSemaphore      redis-semaphore Mutex (polls every 10 ms, its default)
//   tandemCoordinator   LockClient over HTTP to a real coordinator process (SQLite store)
//   coordinatorPostgres / coordinatorRedis
//                       the same, the coordinator on a PostgreSQL / Redis store (shared locks)
//   coordinatorPostgresPair / coordinatorRedisPair
//                       two coordinator processes on one store, requests alternating between them
//   zookeeperMutex      ZooKeeperLockClient (tandem/zookeeper-lock) on the local ZooKeeper
//   zookeeperBaseline   the Curator-style mutex written directly on node-zookeeper-client: create
//                       an ephemeral sequential child, list the children, hold when lowest, else
//                       watch the predecessor and list again when it goes; delete to release
// Uncontended: --concurrency clients (default 16), each on its own lock, run acquire+release
// in a closed loop; ops/s and the p50/p99 of one acquire+release.
// Contended: --contenders clients (default 64) on one lock, each acquire (waiting), hold it
// --hold-ms (default 1 ms), release, and wait until another client has had it before asking
// again (so every grant is a hand-off between clients, not a client re-taking its own lock);
// hand-offs/s and hand-off latency: from the moment the previous holder starts its release to
// the moment the next holder has the lock.
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import pg from 'pg';
import { Mutex } from 'redis-semaphore';
import { Agent } from 'undici';
import { LockClient, newLeaseId } from '../src/sdk/locks.js';
import { RedisLockClient } from '../src/sdk/redis-lock.js';
import { ZooKeeperLockClient } from '../src/sdk/zookeeper-lock.js';
import zookeeper from 'node-zookeeper-client';
import { startChildServer, type ChildServer } from './support/children.js';
import { numberFlag } from './support/flags.js';
import { runClosedLoop } from './support/load.js';
import { formatTable, isMemoryBacked, machineInfo, round, summarizeLatencies, type LatencySummary } from './support/stats.js';
import { performance } from 'node:perf_hooks';

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(benchDir, '..', '..');
const ttlMs = 10_000;

const systemNames = [
  'raw',
  'tandemRedis',
  'redlock',
  'redisSemaphore',
  'tandemCoordinator',
  'coordinatorPostgres',
  'coordinatorPostgresPair',
  'coordinatorRedis',
  'coordinatorRedisPair',
  'zookeeperMutex',
  'zookeeperBaseline',
] as const;
/** Systems whose locks are Tandem's: the hand-off goal applies to each. */
const tandemSystems: readonly SystemName[] = ['tandemRedis', 'tandemCoordinator', 'coordinatorPostgres', 'coordinatorPostgresPair', 'coordinatorRedis', 'coordinatorRedisPair', 'zookeeperMutex'];
type SystemName = (typeof systemNames)[number];

interface LocksBenchConfig {
  concurrency: number;
  contenders: number;
  warmupS: number;
  durationS: number;
  rounds: number;
  holdMs: number;
  rawRetryMs: number;
  redisUrl: string;
  postgresUrl: string;
  zookeeper: string;
  sqliteSync: 'full' | 'normal';
  only: SystemName[];
  outFile: string;
}

const help = `npm run bench -- locks [flags]
  --concurrency N    uncontended clients, each on its own lock (default 16)
  --contenders N     clients on the one contended lock (default 64)
  --warmup-s S       unrecorded seconds before each measurement (default 1)
  --duration-s S     measured seconds per system and mode, split over the rounds (default 4)
  --rounds N         windows per system and mode, taken in turn with the other systems (the
                     order rotates each round) so a drift in the machine's load favours none (default 4)
  --hold-ms MS       how long a contended holder keeps the lock, as if it did some work (default 1)
  --raw-retry-ms MS  the raw baseline's retry delay when contended, ± 50% (default 10)
  --redis URL        the Redis every Redis-based system uses (default redis://127.0.0.1:6379)
  --postgres URL     the PostgreSQL of the coordinatorPostgres systems, which get a schema of
                     their own (default postgres://postgres@127.0.0.1:5432/test)
  --zookeeper HOSTS  the ZooKeeper of the zookeeper systems (default 127.0.0.1:2181)
  --sqlite-sync M    the coordinator's store: full (fsync every group commit, its default) or normal
  --only A,B         run only these systems (${systemNames.join(', ')})
  --out FILE         where to write the JSON (default bench/results/locks.json)`;

/** One system under test: acquire returns the release. */
interface LockSystem {
  acquire(name: string, wait: boolean): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

interface ModeResult {
  opsPerSec: number;
  latency: LatencySummary;
  failed: number;
  failureReasons: string[];
}

interface SystemResult {
  uncontended: ModeResult;
  contended: ModeResult & { handoffsPerSec: number; handoff: LatencySummary; handoffSamples: number };
}

function parseConfig(args: string[]): LocksBenchConfig | null {
  const { values } = parseArgs({
    args,
    options: {
      concurrency: { type: 'string', default: '16' },
      contenders: { type: 'string', default: '64' },
      'warmup-s': { type: 'string', default: '1' },
      'duration-s': { type: 'string', default: '4' },
      rounds: { type: 'string', default: '4' },
      'raw-retry-ms': { type: 'string', default: '10' },
      'hold-ms': { type: 'string', default: '1' },
      redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
      postgres: { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/test' },
      zookeeper: { type: 'string', default: '127.0.0.1:2181' },
      'sqlite-sync': { type: 'string', default: 'full' },
      only: { type: 'string', default: systemNames.join(',') },
      out: { type: 'string', default: path.join(repoRoot, 'bench', 'results', 'locks.json') },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return null;
  const sqliteSync = values['sqlite-sync'];
  if (sqliteSync !== 'full' && sqliteSync !== 'normal') throw new Error(`--sqlite-sync must be full or normal, got "${sqliteSync}"`);
  const only = values.only.split(',').map((name) => name.trim());
  for (const name of only) if (!(systemNames as readonly string[]).includes(name)) throw new Error(`--only: unknown system "${name}"`);
  return {
    concurrency: numberFlag('--concurrency', values.concurrency, { integer: true, min: 1 }),
    contenders: numberFlag('--contenders', values.contenders, { integer: true, min: 2 }),
    warmupS: numberFlag('--warmup-s', values['warmup-s'], { integer: false, min: 0 }),
    durationS: numberFlag('--duration-s', values['duration-s'], { integer: false, min: 0.1 }),
    rounds: numberFlag('--rounds', values.rounds, { integer: true, min: 1 }),
    rawRetryMs: numberFlag('--raw-retry-ms', values['raw-retry-ms'], { integer: false, min: 0 }),
    holdMs: numberFlag('--hold-ms', values['hold-ms'], { integer: false, min: 0 }),
    redisUrl: values.redis,
    postgresUrl: values.postgres,
    zookeeper: values.zookeeper,
    sqliteSync,
    only: only as SystemName[],
    outFile: path.resolve(values.out),
  };
}

export async function main(args: string[]): Promise<void> {
  const config = parseConfig(args);
  if (!config) {
    console.log(help);
    return;
  }
  const runId = randomBytes(4).toString('hex');
  const prefix = `tandem-bench:${runId}:`;
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-bench-locks-'));
  const connections: Redis[] = [];
  const connect = () => {
    const redis = new Redis(config.redisUrl);
    connections.push(redis);
    return redis;
  };
  const coordinators = new Map<SystemName, ChildServer[]>();
  const pgSchema = `tandem_bench_${runId}`;
  const wantsPostgres = config.only.some((name) => name.startsWith('coordinatorPostgres'));
  try {
    console.log(
      `locks bench: uncontended ${config.concurrency} clients on their own locks; contended ${config.contenders} clients on one lock; ` +
        `${config.durationS} s measured per system and mode after ${config.warmupS} s; Redis ${config.redisUrl}; lease TTL ${ttlMs} ms`,
    );
    const serve = (name: string, store: string) =>
      startChildServer({
        name,
        script: path.join(repoRoot, 'dist', 'src', 'cli', 'main.js'),
        args: ['serve', '--port', '0', '--store', store, '--sqlite-sync', config.sqliteSync, '--log-level', 'warn'],
      });
    if (wantsPostgres) await postgresQuery(config.postgresUrl, `CREATE SCHEMA ${pgSchema}`);
    const postgresStore = `${config.postgresUrl}${config.postgresUrl.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${pgSchema}`)}`;
    const redisStore = (name: string) => `${config.redisUrl}${config.redisUrl.includes('?') ? '&' : '?'}prefix=${encodeURIComponent(`${prefix}${name}:`)}`;
    for (const name of config.only) {
      if (name === 'tandemCoordinator') coordinators.set(name, [await serve('coordinator', `sqlite:${path.join(workDir, 'tandem.db')}`)]);
      if (name === 'coordinatorPostgres') coordinators.set(name, [await serve('coordinator-pg', postgresStore)]);
      if (name === 'coordinatorPostgresPair') coordinators.set(name, [await serve('coordinator-pg-a', postgresStore), await serve('coordinator-pg-b', postgresStore)]);
      if (name === 'coordinatorRedis') coordinators.set(name, [await serve('coordinator-redis', redisStore(name))]);
      if (name === 'coordinatorRedisPair') coordinators.set(name, [await serve('coordinator-redis-a', redisStore(name)), await serve('coordinator-redis-b', redisStore(name))]);
    }
    const systems = new Map(config.only.map((name) => [name, makeSystem(name, config, connect, `${prefix}${name}:`, coordinators.get(name) ?? [])] as const));
    let results: Partial<Record<SystemName, SystemResult>>;
    try {
      results = await measureAll(systems, config);
    } finally {
      for (const system of systems.values()) await system.close();
    }
    const report = buildReport(config, results, workDir);
    printReport(report.summary, results);
    fs.mkdirSync(path.dirname(config.outFile), { recursive: true });
    fs.writeFileSync(config.outFile, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`\nwrote ${path.relative(process.cwd(), config.outFile) || config.outFile}`);
  } finally {
    for (const children of coordinators.values()) for (const child of children) await child.stop();
    if (wantsPostgres) await postgresQuery(config.postgresUrl, `DROP SCHEMA IF EXISTS ${pgSchema} CASCADE`).catch(() => undefined);
    await deleteKeys(connections[0] ?? connect(), prefix).catch(() => undefined);
    for (const redis of connections) redis.disconnect();
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

async function postgresQuery(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function makeSystem(name: SystemName, config: LocksBenchConfig, connect: () => Redis, prefix: string, coordinators: ChildServer[]): LockSystem {
  switch (name) {
    case 'raw':
      return rawSystem(connect(), prefix, config.rawRetryMs);
    case 'tandemRedis':
      return tandemRedisSystem(connect(), prefix);
    case 'redlock':
      return redlockSystem(connect(), prefix);
    case 'redisSemaphore':
      return redisSemaphoreSystem(connect(), prefix);
    case 'tandemCoordinator':
    case 'coordinatorPostgres':
    case 'coordinatorPostgresPair':
    case 'coordinatorRedis':
    case 'coordinatorRedisPair':
      if (coordinators.length === 0) throw new Error(`the coordinator of ${name} is not running`);
      return coordinatorSystem(coordinators.map((coordinator) => coordinator.url), config);
    case 'zookeeperMutex':
      return zookeeperMutexSystem(config.zookeeper, `/${prefix.replace(/[:]/g, '-')}tandem`);
    case 'zookeeperBaseline':
      return zookeeperBaselineSystem(config.zookeeper, `/${prefix.replace(/[:]/g, '-')}baseline`);
  }
}

function zookeeperMutexSystem(connectionString: string, rootPath: string): LockSystem {
  const client = new ZooKeeperLockClient({ connectionString, rootPath });
  return {
    async acquire(name, wait) {
      const lock = await client.acquire(name, { waitMs: wait ? 60_000 : 0 });
      return () => lock.release();
    },
    close: () => client.close(),
  };
}

/** The recipe as a user would write it on the client directly, with nothing else around it. */
function zookeeperBaselineSystem(connectionString: string, rootPath: string): LockSystem {
  const client = zookeeper.createClient(connectionString, { sessionTimeout: 10_000 });
  const connected = new Promise<void>((resolve) => client.once('connected', () => resolve()));
  client.connect();
  const call = <T>(run: (done: (error: unknown, value: T) => void) => void) =>
    new Promise<T>((resolve, reject) => run((error, value) => (error ? reject(error) : resolve(value))));
  const parents = new Set<string>();
  return {
    async acquire(name, wait) {
      await connected;
      const parent = `${rootPath}/${name.replace(/\//g, '_')}`;
      if (!parents.has(parent)) {
        await call<void>((done) => client.mkdirp(parent, (error) => done(error, undefined)));
        parents.add(parent);
      }
      const created = await call<string>((done) => client.create(`${parent}/lock-`, Buffer.alloc(0), zookeeper.CreateMode.EPHEMERAL_SEQUENTIAL, done));
      const own = created.slice(parent.length + 1);
      const release = async () => void (await call<void>((done) => client.remove(created, (error) => done(error, undefined))));
      for (;;) {
        const children = (await call<string[]>((done) => client.getChildren(parent, done))).sort();
        const index = children.indexOf(own);
        if (index === 0) return release;
        if (!wait) {
          await release();
          throw new Error('held');
        }
        const gone = new Promise<void>((resolve) => {
          client.exists(`${parent}/${children[index - 1]}`, () => resolve(), (error, stat) => {
            if (error || !stat) resolve();
          });
        });
        await gone;
      }
    },
    close: async () => client.close(),
  };
}

const releaseIfOwnerLua = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

function rawSystem(redis: Redis, prefix: string, retryMs: number): LockSystem {
  redis.defineCommand('benchReleaseIfOwner', { numberOfKeys: 1, lua: releaseIfOwnerLua });
  const release = (redis as Redis & { benchReleaseIfOwner(key: string, owner: string): Promise<number> }).benchReleaseIfOwner.bind(redis);
  return {
    async acquire(name, wait) {
      const key = `${prefix}${name}`;
      // The same cheap random owner id Tandem uses, so the baseline pays only for SET and DEL.
      const owner = newLeaseId();
      for (;;) {
        if ((await redis.set(key, owner, 'PX', ttlMs, 'NX')) === 'OK') return async () => void (await release(key, owner));
        if (!wait) throw new Error('held');
        // Jittered, so the waiters do not fall into step and retry in waves.
        await sleep(retryMs * (0.5 + Math.random()));
      }
    },
    close: async () => undefined,
  };
}

function tandemRedisSystem(redis: Redis, prefix: string): LockSystem {
  const client = new RedisLockClient({ redis, prefix });
  return {
    async acquire(name, wait) {
      const lock = await client.acquire(name, { ttlMs, waitMs: wait ? 60_000 : 0 });
      return () => lock.release();
    },
    close: () => client.close(),
  };
}

/** The parts of redlock@4 (untyped JavaScript) used here. */
interface RedlockV4 {
  lock(resource: string, ttl: number): Promise<{ unlock(): Promise<unknown> }>;
}
type RedlockV4Constructor = new (clients: Redis[], options: { retryCount?: number; retryDelay?: number; retryJitter?: number; driftFactor?: number }) => RedlockV4;

function redlockSystem(redis: Redis, prefix: string): LockSystem {
  const RedlockClass = createRequire(import.meta.url)('redlock') as RedlockV4Constructor;
  // Its defaults (retry 200 ± 100 ms) when waiting, with no limit on attempts.
  const waiting = new RedlockClass([redis], { retryCount: -1 });
  const trying = new RedlockClass([redis], { retryCount: 0 });
  return {
    async acquire(name, wait) {
      const lock = await (wait ? waiting : trying).lock(`${prefix}${name}`, ttlMs);
      return async () => void (await lock.unlock());
    },
    close: async () => undefined,
  };
}

function redisSemaphoreSystem(redis: Redis, prefix: string): LockSystem {
  return {
    async acquire(name, wait) {
      // Renewal off, as for every other system here: the bench measures acquire and release.
      const mutex = new Mutex(redis, `${prefix}${name}`, { lockTimeout: ttlMs, acquireTimeout: wait ? 60_000 : 1000, refreshInterval: 0 });
      if (wait) await mutex.acquire();
      else if (!(await mutex.tryAcquire())) throw new Error('held');
      return () => mutex.release();
    },
    close: async () => undefined,
  };
}

/** LockClient over HTTP; with several coordinators, acquires alternate between them. */
function coordinatorSystem(urls: string[], config: LocksBenchConfig): LockSystem {
  const agents = urls.map(() => new Agent({ connections: Math.max(config.concurrency, config.contenders) + 8, keepAliveTimeout: 60_000 }));
  const clients = urls.map((url, index) => new LockClient({ url, dispatcher: agents[index] }));
  let next = 0;
  return {
    async acquire(name, wait) {
      const client = clients[next++ % clients.length];
      const lock = await client.acquire(name, { ttlMs, waitMs: wait ? 60_000 : 0 });
      return () => lock.release();
    },
    close: async () => {
      await Promise.all(agents.map((agent) => agent.close()));
    },
  };
}

interface Totals {
  completed: number;
  failed: number;
  windowMs: number;
  latenciesMs: number[];
  handoffsMs: number[];
  failureReasons: string[];
}

function emptyTotals(): Totals {
  return { completed: 0, failed: 0, windowMs: 0, latenciesMs: [], handoffsMs: [], failureReasons: [] };
}

/** Every system in turn, window by window, rotating the order each round; uncontended first. */
async function measureAll(systems: Map<SystemName, LockSystem>, config: LocksBenchConfig): Promise<Partial<Record<SystemName, SystemResult>>> {
  const names = [...systems.keys()];
  const windowMs = (config.durationS * 1000) / config.rounds;
  const totals = { uncontended: new Map(names.map((name) => [name, emptyTotals()])), contended: new Map(names.map((name) => [name, emptyTotals()])) };
  for (const mode of ['uncontended', 'contended'] as const) {
    for (let round = 0; round < config.rounds; round++) {
      const order = names.map((_, index) => names[(index + round) % names.length]);
      for (const name of order) {
        // The first window of each system warms it up; later ones only let the switch settle.
        const warmupMs = round === 0 ? config.warmupS * 1000 : Math.min(config.warmupS * 1000, 300);
        const window = mode === 'uncontended'
          ? await uncontendedWindow(systems.get(name)!, config, warmupMs, windowMs)
          : await contendedWindow(systems.get(name)!, config, warmupMs, windowMs);
        addWindow(totals[mode].get(name)!, window);
      }
      console.log(`  ${mode} round ${round + 1}/${config.rounds}: ${order.map((name) => `${name} ${round1(perSecond(totals[mode].get(name)!))}/s`).join(', ')}`);
    }
  }
  return Object.fromEntries(
    names.map((name) => {
      const uncontended = totals.uncontended.get(name)!;
      const contended = totals.contended.get(name)!;
      const result: SystemResult = {
        uncontended: { opsPerSec: perSecond(uncontended), latency: summarizeLatencies(uncontended.latenciesMs), failed: uncontended.failed, failureReasons: uncontended.failureReasons },
        contended: {
          opsPerSec: perSecond(contended),
          handoffsPerSec: perSecond(contended),
          latency: summarizeLatencies(contended.latenciesMs),
          handoff: summarizeLatencies(contended.handoffsMs),
          handoffSamples: contended.handoffsMs.length,
          failed: contended.failed,
          failureReasons: contended.failureReasons,
        },
      };
      return [name, result];
    }),
  );
}

function addWindow(totals: Totals, window: Totals): void {
  totals.completed += window.completed;
  totals.failed += window.failed;
  totals.windowMs += window.windowMs;
  for (const latency of window.latenciesMs) totals.latenciesMs.push(latency);
  for (const handoff of window.handoffsMs) totals.handoffsMs.push(handoff);
  for (const reason of window.failureReasons) if (totals.failureReasons.length < 5 && !totals.failureReasons.includes(reason)) totals.failureReasons.push(reason);
}

function perSecond(totals: Totals): number {
  return totals.windowMs > 0 ? totals.completed / (totals.windowMs / 1000) : 0;
}

function round1(value: number): number {
  return round(value, 0);
}

async function uncontendedWindow(system: LockSystem, config: LocksBenchConfig, warmupMs: number, measureMs: number): Promise<Totals> {
  // Each client in flight has a lock of its own.
  const freeNames = Array.from({ length: config.concurrency }, (_, index) => `own-${index}`);
  const result = await runClosedLoop(
    async () => {
      const name = freeNames.pop()!;
      try {
        const release = await system.acquire(name, false);
        await release();
        return { ok: true };
      } finally {
        freeNames.push(name);
      }
    },
    { concurrency: config.concurrency, warmupMs, measureMs },
  );
  return { ...result, handoffsMs: [] };
}

/**
 * All contenders on one lock. A client that has just released waits until the lock has gone to
 * someone else before it asks again, so every grant is a hand-off between two clients (a
 * client re-taking the lock it just released would measure nothing but its own loop).
 */
async function contendedWindow(system: LockSystem, config: LocksBenchConfig, warmupMs: number, measureMs: number): Promise<Totals> {
  let recording = false;
  let stopping = false;
  let grants = 0;
  let releaseStartedMs: number | null = null;
  const handoffsMs: number[] = [];
  let waitingForOthers: Array<{ after: number; resolve: () => void }> = [];
  const grantedToSomeoneElse = (after: number) =>
    stopping || grants > after ? Promise.resolve() : new Promise<void>((resolve) => waitingForOthers.push({ after, resolve }));
  const result = await runClosedLoop(
    async () => {
      const release = await system.acquire('contended', true);
      const grantedMs = performance.now();
      const mine = ++grants;
      if (recording && releaseStartedMs !== null) handoffsMs.push(grantedMs - releaseStartedMs);
      const ready = waitingForOthers;
      waitingForOthers = [];
      for (const waiter of ready) waiter.resolve();
      if (config.holdMs > 0) await sleep(config.holdMs);
      releaseStartedMs = performance.now();
      await release();
      await grantedToSomeoneElse(mine);
      return { ok: true };
    },
    {
      concurrency: config.contenders,
      warmupMs,
      measureMs,
      onWindow: (edge) => {
        recording = edge === 'open';
        if (edge === 'close') {
          stopping = true;
          for (const waiter of waitingForOthers.splice(0)) waiter.resolve();
        }
      },
    },
  );
  return { ...result, handoffsMs };
}

function buildReport(config: LocksBenchConfig, results: Partial<Record<SystemName, SystemResult>>, workDir: string) {
  const ops = (name: SystemName) => (results[name] ? round(results[name].uncontended.opsPerSec, 1) : null);
  const ratio = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? round(a / b, 3) : null);
  const handoffP99 = perSystem(results, (result) => round(result.contended.handoff.p99Ms, 3));
  const tandemRedisVsRaw = ratio(ops('tandemRedis'), ops('raw'));
  const tandemRedisVsRedlock = ratio(ops('tandemRedis'), ops('redlock'));
  const coordinatorRedisVsRaw = ratio(ops('coordinatorRedis'), ops('raw'));
  const zookeeperMutexVsBaseline = ratio(ops('zookeeperMutex'), ops('zookeeperBaseline'));
  const measuredTandem = tandemSystems.filter((name) => handoffP99[name] !== undefined);
  return {
    benchmark: 'locks',
    at: new Date().toISOString(),
    machine: { ...machineInfo(), coordinatorStoreOnMemoryFilesystem: isMemoryBacked(workDir) },
    config: { ...config, ttlMs },
    summary: {
      rawOpsPerSec: ops('raw'),
      tandemRedisOpsPerSec: ops('tandemRedis'),
      redlockOpsPerSec: ops('redlock'),
      redisSemaphoreOpsPerSec: ops('redisSemaphore'),
      tandemCoordinatorOpsPerSec: ops('tandemCoordinator'),
      coordinatorPostgresOpsPerSec: ops('coordinatorPostgres'),
      coordinatorPostgresPairOpsPerSec: ops('coordinatorPostgresPair'),
      coordinatorRedisOpsPerSec: ops('coordinatorRedis'),
      coordinatorRedisPairOpsPerSec: ops('coordinatorRedisPair'),
      coordinatorRedisVsRaw,
      zookeeperMutexOpsPerSec: ops('zookeeperMutex'),
      zookeeperBaselineOpsPerSec: ops('zookeeperBaseline'),
      zookeeperMutexVsBaseline,
      tandemRedisVsRaw,
      tandemRedisVsRedlock,
      uncontendedP50Ms: perSystem(results, (result) => round(result.uncontended.latency.p50Ms, 3)),
      uncontendedP99Ms: perSystem(results, (result) => round(result.uncontended.latency.p99Ms, 3)),
      contendedHandoffP99Ms: handoffP99,
      contendedHandoffsPerSec: perSystem(results, (result) => round(result.contended.handoffsPerSec, 1)),
      goals: {
        tandemRedisAtLeast0_8OfRaw: tandemRedisVsRaw === null ? null : tandemRedisVsRaw >= 0.8,
        tandemRedisAtLeast1_2xRedlock: tandemRedisVsRedlock === null ? null : tandemRedisVsRedlock >= 1.2,
        tandemRedisHandoffP99BelowRedlock: handoffP99.tandemRedis === undefined || handoffP99.redlock === undefined ? null : handoffP99.tandemRedis < handoffP99.redlock,
        coordinatorRedisAtLeast0_3OfRaw: coordinatorRedisVsRaw === null ? null : coordinatorRedisVsRaw >= 0.3,
        zookeeperMutexAtLeastBaseline: zookeeperMutexVsBaseline === null ? null : zookeeperMutexVsBaseline >= 1,
        everyTandemHandoffP99BelowRedlock:
          handoffP99.redlock === undefined || measuredTandem.length === 0 ? null : measuredTandem.every((name) => handoffP99[name]! < handoffP99.redlock!),
      },
    },
    systems: Object.fromEntries(
      Object.entries(results).map(([name, result]) => [
        name,
        {
          uncontended: { ...result.uncontended, opsPerSec: round(result.uncontended.opsPerSec, 1), latency: roundLatency(result.uncontended.latency) },
          contended: {
            ...result.contended,
            opsPerSec: round(result.contended.opsPerSec, 1),
            handoffsPerSec: round(result.contended.handoffsPerSec, 1),
            latency: roundLatency(result.contended.latency),
            handoff: roundLatency(result.contended.handoff),
          },
        },
      ]),
    ),
  };
}

function perSystem(results: Partial<Record<SystemName, SystemResult>>, figure: (result: SystemResult) => number): Partial<Record<SystemName, number>> {
  return Object.fromEntries(Object.entries(results).map(([name, result]) => [name, figure(result)]));
}

function roundLatency(latency: LatencySummary): LatencySummary {
  return { p50Ms: round(latency.p50Ms, 3), p99Ms: round(latency.p99Ms, 3), meanMs: round(latency.meanMs, 3), maxMs: round(latency.maxMs, 3) };
}

function printReport(summary: ReturnType<typeof buildReport>['summary'], results: Partial<Record<SystemName, SystemResult>>): void {
  const rows = [['system', 'uncontended ops/s', 'p50 ms', 'p99 ms', 'contended hand-offs/s', 'hand-off p50 ms', 'hand-off p99 ms', 'failed']];
  for (const [name, result] of Object.entries(results)) {
    rows.push([
      name,
      String(round(result.uncontended.opsPerSec, 0)),
      result.uncontended.latency.p50Ms.toFixed(3),
      result.uncontended.latency.p99Ms.toFixed(3),
      String(round(result.contended.handoffsPerSec, 1)),
      result.contended.handoff.p50Ms.toFixed(2),
      result.contended.handoff.p99Ms.toFixed(2),
      String(result.uncontended.failed + result.contended.failed),
    ]);
  }
  console.log(`\n${formatTable(rows)}\n`);
  console.log(`tandemRedis / raw:     ${summary.tandemRedisVsRaw ?? 'n/a'} (goal ≥ 0.8)`);
  console.log(`tandemRedis / redlock: ${summary.tandemRedisVsRedlock ?? 'n/a'} (goal ≥ 1.2)`);
  console.log(`hand-off p99 below redlock's: ${summary.goals.tandemRedisHandoffP99BelowRedlock ?? 'n/a'}`);
  console.log(`coordinatorRedis / raw: ${summary.coordinatorRedisVsRaw ?? 'n/a'} (goal ≥ 0.3)`);
  console.log(`every Tandem lock's hand-off p99 below redlock's: ${summary.goals.everyTandemHandoffP99BelowRedlock ?? 'n/a'}`);
}

async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  for (let cursor = '0'; ; ) {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    if (keys.length > 0) await redis.del(...keys);
    cursor = next;
    if (cursor === '0') break;
  }
}
