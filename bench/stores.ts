// The 2-branch saga on each store backend, with one and with two coordinator instances, side
// by side in one run with the same no-coordinator baseline (see saga.ts for both operations).
// The baseline is measured before and after the store runs and averaged, so a machine whose
// load drifts during the run does not favour the backends measured first.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { Redis } from 'ioredis';
import { Agent } from 'undici';
import { baselineOperation, sagaOperation } from './saga.js';
import { startChildServer, type ChildServer } from './support/children.js';
import { numberFlag } from './support/flags.js';
import { runClosedLoop, type Outcome } from './support/load.js';
import { formatTable, machineInfo, round, summarizeLatencies } from './support/stats.js';

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(benchDir, '..', '..');
const postgresUrl = process.env.TANDEM_BENCH_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const redisUrl = process.env.TANDEM_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const goals: Record<string, number> = { redis: 0.5, postgres: 0.3 };

interface Config {
  concurrency: number;
  warmupS: number;
  durationS: number;
  outFile: string;
}

interface Setup {
  key: string;
  backend: 'sqlite' | 'postgres' | 'redis';
  instances: number;
}

const setups: Setup[] = [
  { key: 'sqlite', backend: 'sqlite', instances: 1 },
  { key: 'postgres', backend: 'postgres', instances: 1 },
  { key: 'postgres2', backend: 'postgres', instances: 2 },
  { key: 'redis', backend: 'redis', instances: 1 },
  { key: 'redis2', backend: 'redis', instances: 2 },
];

const help = `npm run bench -- stores [flags]
  --concurrency N   clients, each with one request in flight (default 64)
  --warmup-s S      unrecorded seconds before each measurement (default 1)
  --duration-s S    measured seconds per setup and per baseline half (default 5)
  --out FILE        where to write the JSON (default bench/results/stores.json)
PostgreSQL and Redis come from TANDEM_BENCH_POSTGRES_URL and TANDEM_BENCH_REDIS_URL
(defaults: the local servers); each run uses a fresh schema and key prefix and removes them.`;

function parseConfig(args: string[]): Config | null {
  const { values } = parseArgs({
    args,
    options: {
      concurrency: { type: 'string', default: '64' },
      'warmup-s': { type: 'string', default: '1' },
      'duration-s': { type: 'string', default: '5' },
      out: { type: 'string', default: path.join(repoRoot, 'bench', 'results', 'stores.json') },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return null;
  return {
    concurrency: numberFlag('--concurrency', values.concurrency, { integer: true, min: 1 }),
    warmupS: numberFlag('--warmup-s', values['warmup-s'], { integer: false, min: 0 }),
    durationS: numberFlag('--duration-s', values['duration-s'], { integer: false, min: 0.5 }),
    outFile: path.resolve(values.out),
  };
}

interface Measured {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  failed: number;
  failureReasons: string[];
}

async function measure(operation: () => Promise<Outcome>, config: Config): Promise<Measured> {
  const result = await runClosedLoop(operation, { concurrency: config.concurrency, warmupMs: config.warmupS * 1000, measureMs: config.durationS * 1000 });
  const latency = summarizeLatencies(result.latenciesMs);
  return {
    perSecond: round((result.completed * 1000) / result.windowMs, 1),
    p50Ms: round(latency.p50Ms, 2),
    p99Ms: round(latency.p99Ms, 2),
    failed: result.failed,
    failureReasons: result.failureReasons,
  };
}

/** A fresh store URL for one setup, and how to remove what it created. */
async function freshStore(setup: Setup, workDir: string, runId: string): Promise<{ url: string; drop: () => Promise<void> }> {
  if (setup.backend === 'sqlite') return { url: `sqlite:${path.join(workDir, `${setup.key}.db`)}`, drop: async () => undefined };
  if (setup.backend === 'postgres') {
    const schema = `tandem_bench_${runId}_${setup.key}`;
    const client = new pg.Client({ connectionString: postgresUrl });
    await client.connect();
    await client.query(`CREATE SCHEMA ${schema}`);
    await client.end();
    return {
      url: `${postgresUrl}?options=${encodeURIComponent(`-c search_path=${schema}`)}`,
      drop: async () => {
        const dropper = new pg.Client({ connectionString: postgresUrl });
        await dropper.connect();
        await dropper.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await dropper.end();
      },
    };
  }
  const prefix = `tandem-bench:${runId}:${setup.key}:`;
  return {
    url: `${redisUrl}/0?prefix=${encodeURIComponent(prefix)}`,
    drop: async () => {
      const redis = new Redis(redisUrl);
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        if (keys.length > 0) await redis.del(...keys);
        cursor = next;
      } while (cursor !== '0');
      redis.disconnect();
    },
  };
}

async function startCoordinators(setup: Setup, storeUrl: string): Promise<ChildServer[]> {
  const script = path.join(repoRoot, 'dist', 'src', 'cli', 'main.js');
  const coordinators: ChildServer[] = [];
  for (let index = 0; index < setup.instances; index++) {
    coordinators.push(
      await startChildServer({
        name: `${setup.key}-${index + 1}`,
        script,
        args: ['serve', '--port', '0', '--store', storeUrl, '--log-level', 'warn', ...(setup.instances > 1 ? ['--instance-id', `bench-${index + 1}`] : [])],
      }),
    );
  }
  return coordinators;
}

export async function main(args: string[]): Promise<void> {
  const config = parseConfig(args);
  if (!config) {
    console.log(help);
    return;
  }
  const runId = randomBytes(3).toString('hex');
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-bench-stores-'));
  const agent = new Agent({ connections: config.concurrency, pipelining: 1, keepAliveTimeout: 60_000 });
  const participantScript = path.join(benchDir, 'support', 'participant.js');
  const helpers: ChildServer[] = [];
  try {
    helpers.push(await startChildServer({ name: 'participant', script: participantScript, args: ['participant'] }));
    helpers.push(await startChildServer({ name: 'stand-in', script: participantScript, args: ['coordinator-stand-in'] }));
    const [participant, standIn] = helpers;
    console.log(`stores bench: ${config.concurrency} clients, ${config.durationS} s per measurement after ${config.warmupS} s warm-up`);
    const baselineOp = baselineOperation(standIn.url, participant.url, agent);
    const baselineBefore = await measure(baselineOp, config);
    console.log(`  baseline (before)  ${Math.round(baselineBefore.perSecond)}/s`);
    const results: Record<string, Measured> = {};
    for (const setup of setups) {
      const store = await freshStore(setup, workDir, runId);
      const coordinators = await startCoordinators(setup, store.url);
      try {
        results[setup.key] = await measure(sagaOperation(coordinators.map((coordinator) => coordinator.url), participant.url, agent), config);
        console.log(`  ${setup.key.padEnd(17)} ${Math.round(results[setup.key].perSecond)}/s${results[setup.key].failed ? `  ${results[setup.key].failed} failed: ${results[setup.key].failureReasons.join('; ')}` : ''}`);
      } finally {
        await Promise.allSettled(coordinators.map((coordinator) => coordinator.stop()));
        await store.drop();
      }
    }
    const baselineAfter = await measure(baselineOp, config);
    console.log(`  baseline (after)   ${Math.round(baselineAfter.perSecond)}/s`);
    const baselinePerSecond = round((baselineBefore.perSecond + baselineAfter.perSecond) / 2, 1);
    const summary: Record<string, number> = { baselineChainsPerSec: baselinePerSecond };
    for (const [key, measured] of Object.entries(results)) {
      summary[`${key}TxPerSec`] = measured.perSecond;
      summary[`${key}Ratio`] = round(measured.perSecond / baselinePerSecond, 3);
    }
    const rows = [['setup', 'tx/s', 'ratio', 'goal', 'p50 ms', 'p99 ms', 'failed']];
    rows.push(['baseline chain (3 exchanges)', String(baselinePerSecond), '1', '', String(baselineBefore.p50Ms), String(baselineBefore.p99Ms), '0']);
    for (const setup of setups) {
      const measured = results[setup.key];
      const goal = goals[setup.backend];
      rows.push([`${setup.backend}, ${setup.instances} coordinator${setup.instances > 1 ? 's' : ''}`, String(measured.perSecond), String(summary[`${setup.key}Ratio`]), goal ? `≥ ${goal}` : '', String(measured.p50Ms), String(measured.p99Ms), String(measured.failed)]);
    }
    console.log(`\n${formatTable(rows)}`);
    const report = {
      benchmark: 'stores',
      summary,
      goals,
      baseline: { before: baselineBefore, after: baselineAfter },
      setups: setups.map((setup) => ({ ...setup, ...results[setup.key] })),
      config: { ...config, outFile: undefined, sagaBranches: 2, waitResult: true, sqliteSync: 'full' },
      machine: machineInfo(),
    };
    fs.mkdirSync(path.dirname(config.outFile), { recursive: true });
    fs.writeFileSync(config.outFile, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`\nwrote ${path.relative(process.cwd(), config.outFile) || config.outFile}`);
  } finally {
    await agent.close().catch(() => undefined);
    await Promise.allSettled(helpers.map((helper) => helper.stop()));
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}
