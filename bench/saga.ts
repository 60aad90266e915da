// Saga throughput against the baseline that bounds it, in one run on one machine.
//
// A "saga" is one POST /v1/transactions {mode: saga, two branches, waitResult: true} to a real
// coordinator (its own process, SQLite store): it counts when the answer says `succeeded`,
// which the coordinator only sends after both actions answered and the end is durable.
// A "baseline chain" is the same three HTTP exchanges made by hand with no coordinator: the
// same body POSTed to a stand-in that just answers (its own process), then action1, then
// action2 on the participant with the same query parameters, headers and payloads the
// coordinator sends. Both sides use one keep-alive connection pool and the same number of
// clients, each running one operation after another.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { branchHeaders, branchQuery } from '../src/shared/protocol.js';
import { startChildServer, type ChildServer } from './support/children.js';
import { numberFlag, UsageError } from './support/flags.js';
import { reportProfile } from './support/cpu-profile.js';
import { gitCommit } from './support/commit.js';
import { runClosedLoop, type LoadResult, type Outcome } from './support/load.js';
import type { CallCounts } from './support/participant.js';
import {
  cpuSecondsOfMachine,
  cpuSecondsOfPid,
  cpuSecondsOfSelf,
  formatTable,
  isMemoryBacked,
  machineInfo,
  prometheusValue,
  round,
  summarizeLatencies,
  type LatencySummary,
} from './support/stats.js';

const benchDir = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(benchDir, '..', '..');
const ratioGoal = 0.5;
const settleS = 0.5;

interface SagaBenchConfig {
  concurrency: number;
  warmupS: number;
  durationS: number;
  rounds: number;
  sqliteSync: 'full' | 'normal';
  cpuProf: boolean;
  outFile: string;
}

const help = `npm run bench -- saga [flags]
  --concurrency N    clients, each with one request in flight (default 64)
  --warmup-s S       unrecorded seconds before each side's first window (default 2)
  --duration-s S     measured seconds per side, split over the rounds (default 10)
  --rounds N         baseline/saga pairs, in the order B S, S B, B S…, so that a machine
                     whose load drifts favours neither side (default 4)
  --sqlite-sync M    full (fsync every group commit, the coordinator's default) or normal
  --cpu-prof         profile the coordinator (node --cpu-prof) and print its hot spots
  --out FILE         where to write the JSON (default bench/results/saga.json)`;

function parseConfig(args: string[]): SagaBenchConfig | null {
  const { values } = parseArgs({
    args,
    options: {
      concurrency: { type: 'string', default: '64' },
      'warmup-s': { type: 'string', default: '2' },
      'duration-s': { type: 'string', default: '10' },
      rounds: { type: 'string', default: '4' },
      'sqlite-sync': { type: 'string', default: 'full' },
      'cpu-prof': { type: 'boolean', default: false },
      out: { type: 'string', default: path.join(repoRoot, 'bench', 'results', 'saga.json') },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) return null;
  const sqliteSync = values['sqlite-sync'];
  if (sqliteSync !== 'full' && sqliteSync !== 'normal') throw new UsageError(`--sqlite-sync must be full or normal, got "${sqliteSync}"`);
  return {
    concurrency: numberFlag('--concurrency', values.concurrency, { integer: true, min: 1 }),
    warmupS: numberFlag('--warmup-s', values['warmup-s'], { integer: false, min: 0 }),
    durationS: numberFlag('--duration-s', values['duration-s'], { integer: false, min: 0.1 }),
    rounds: numberFlag('--rounds', values.rounds, { integer: true, min: 1 }),
    sqliteSync,
    cpuProf: values['cpu-prof'],
    outFile: path.resolve(values.out),
  };
}

interface Processes {
  coordinator: ChildServer;
  participant: ChildServer;
  standIn: ChildServer;
}

interface PhaseTotals {
  completed: number;
  failed: number;
  windowMs: number;
  latenciesMs: number[];
  failureReasons: string[];
  /** CPU seconds used during the measured windows, per process. */
  cpuSeconds: Record<'loadGenerator' | 'coordinator' | 'participant' | 'standIn' | 'restOfMachine', number>;
  /** Store counters over the measured windows (saga side only). */
  store: { commits: number; writes: number; commitSeconds: number };
  /** Each measured window on its own, to show how much the machine drifted. */
  windows: Array<{ perSecond: number; p50Ms: number; p99Ms: number; failed: number }>;
}

function emptyTotals(): PhaseTotals {
  return {
    completed: 0,
    failed: 0,
    windowMs: 0,
    latenciesMs: [],
    failureReasons: [],
    cpuSeconds: { loadGenerator: 0, coordinator: 0, participant: 0, standIn: 0, restOfMachine: 0 },
    store: { commits: 0, writes: 0, commitSeconds: 0 },
    windows: [],
  };
}

export async function main(args: string[]): Promise<void> {
  const config = parseConfig(args);
  if (!config) {
    console.log(help);
    return;
  }
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-bench-saga-'));
  const profileDir = path.join(workDir, 'profile');
  const started: ChildServer[] = [];
  const agent = new Agent({ connections: config.concurrency, pipelining: 1, keepAliveTimeout: 60_000 });
  const stopAll = () => Promise.allSettled(started.splice(0).reverse().map((child) => child.stop()));
  const onInterrupt = () => void stopAll().then(() => process.exit(130));
  process.once('SIGINT', onInterrupt);
  try {
    const processes = await startProcesses(config, workDir, profileDir, started);
    const totals = await runRounds(config, processes, agent);
    const participantCalls = { participant: await callCounts(processes.participant), standIn: await callCounts(processes.standIn) };
    await agent.close();
    await stopAll();
    const profile = config.cpuProf ? reportProfile(profileDir) : null;
    const report = buildReport(config, totals, participantCalls, workDir, profile);
    printReport(report, totals);
    fs.mkdirSync(path.dirname(config.outFile), { recursive: true });
    fs.writeFileSync(config.outFile, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`\nwrote ${path.relative(process.cwd(), config.outFile) || config.outFile}`);
    if (totals.saga.failed > 0 || totals.baseline.failed > 0) {
      console.error('some operations failed; the figures above count successes only');
      process.exitCode = 1;
    }
  } finally {
    process.off('SIGINT', onInterrupt);
    await agent.close().catch(() => undefined);
    await stopAll();
    // A profile is kept for reading; everything else in the work dir is scratch.
    if (!config.cpuProf) fs.rmSync(workDir, { recursive: true, force: true });
  }
}

/** Measures both sides in alternating windows: B S, S B, B S… */
async function runRounds(config: SagaBenchConfig, processes: Processes, agent: Agent): Promise<Record<'baseline' | 'saga', PhaseTotals>> {
  const windowS = config.durationS / config.rounds;
  console.log(
    `saga bench: ${config.concurrency} clients; per side ${config.durationS} s measured in ${config.rounds} window(s) of ${round(windowS, 2)} s ` +
      `after a ${config.warmupS} s warm-up; sqlite sync=${config.sqliteSync}`,
  );
  const totals = { baseline: emptyTotals(), saga: emptyTotals() };
  for (let roundIndex = 0; roundIndex < config.rounds; roundIndex++) {
    const order = roundIndex % 2 === 0 ? (['baseline', 'saga'] as const) : (['saga', 'baseline'] as const);
    for (const side of order) {
      const operation =
        side === 'saga'
          ? sagaOperation([processes.coordinator.url], processes.participant.url, agent)
          : baselineOperation(processes.standIn.url, processes.participant.url, agent);
      // Connections and JIT stay warm between windows; later windows only let the switch settle.
      const warmupS = roundIndex === 0 ? config.warmupS : Math.min(config.warmupS, settleS);
      await measure(side, operation, { concurrency: config.concurrency, warmupS, windowS }, processes, totals[side]);
    }
  }
  return totals;
}

async function startProcesses(config: SagaBenchConfig, workDir: string, profileDir: string, started: ChildServer[]): Promise<Processes> {
  const participantScript = path.join(benchDir, 'support', 'participant.js');
  const keep = (child: ChildServer) => (started.push(child), child);
  const [participant, standIn] = await Promise.all([
    startChildServer({ name: 'participant', script: participantScript, args: ['participant'] }).then(keep),
    startChildServer({ name: 'stand-in', script: participantScript, args: ['coordinator-stand-in'] }).then(keep),
  ]);
  const coordinator = keep(
    await startChildServer({
      name: 'coordinator',
      script: path.join(repoRoot, 'dist', 'src', 'cli', 'main.js'),
      args: ['serve', '--port', '0', '--store', `sqlite:${path.join(workDir, 'tandem.db')}`, '--sqlite-sync', config.sqliteSync, '--log-level', 'warn'],
      nodeArgs: config.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
    }),
  );
  return { coordinator, participant, standIn };
}

const branchPayloads = [{ sku: 'bench-1', quantity: 1 }, { account: 'bench-2', amountCents: 1250 }];

export function sagaRequestBody(participantUrl: string): string {
  return JSON.stringify({
    mode: 'saga',
    branches: branchPayloads.map((payload, index) => ({
      action: `${participantUrl}/action${index + 1}`,
      compensate: `${participantUrl}/compensate${index + 1}`,
      payload,
    })),
    waitResult: true,
  });
}

/** One saga per call, spread round robin over the given coordinators. */
export function sagaOperation(coordinatorUrls: string[], participantUrl: string, agent: Agent): () => Promise<Outcome> {
  const urls = coordinatorUrls.map((coordinatorUrl) => `${coordinatorUrl}/v1/transactions`);
  const body = sagaRequestBody(participantUrl);
  let next = 0;
  return async () => {
    const url = urls[next++ % urls.length];
    const response = await request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, dispatcher: agent });
    const text = await response.body.text();
    if (response.statusCode !== 201) return { ok: false, reason: `HTTP ${response.statusCode} ${text.slice(0, 200)}` };
    const status = (JSON.parse(text) as { status?: unknown }).status;
    return status === 'succeeded' ? { ok: true } : { ok: false, reason: `saga ended ${String(status)}` };
  };
}

export function baselineOperation(standInUrl: string, participantUrl: string, agent: Agent): () => Promise<Outcome> {
  const submitUrl = `${standInUrl}/submit`;
  const submitBody = sagaRequestBody(participantUrl);
  const payloadTexts = branchPayloads.map((payload) => JSON.stringify(payload));
  let chainCount = 0;
  return async () => {
    const gid = `bench-${process.pid}-${++chainCount}`;
    const submitted = await exchange(agent, submitUrl, submitBody, { 'content-type': 'application/json' });
    if (!submitted.ok) return submitted;
    for (let index = 0; index < payloadTexts.length; index++) {
      const branchId = String(index + 1).padStart(2, '0');
      const query = new URLSearchParams({ [branchQuery.gid]: gid, [branchQuery.transType]: 'saga', [branchQuery.branchId]: branchId, [branchQuery.op]: 'action' });
      const headers = {
        'content-type': 'application/json',
        [branchHeaders.gid]: gid,
        [branchHeaders.transType]: 'saga',
        [branchHeaders.branchId]: branchId,
        [branchHeaders.op]: 'action',
      };
      const answered = await exchange(agent, `${participantUrl}/action${index + 1}?${query}`, payloadTexts[index], headers);
      if (!answered.ok) return answered;
    }
    return { ok: true };
  };
}

async function exchange(agent: Agent, url: string, body: string, headers: Record<string, string>): Promise<Outcome> {
  const response = await request(url, { method: 'POST', headers, body, dispatcher: agent });
  const text = await response.body.text();
  if (response.statusCode !== 200) return { ok: false, reason: `HTTP ${response.statusCode} from ${new URL(url).pathname}` };
  const word = (JSON.parse(text) as { dtm_result?: unknown }).dtm_result;
  return word === 'SUCCESS' ? { ok: true } : { ok: false, reason: `${new URL(url).pathname} answered ${text.slice(0, 100)}` };
}

interface Snapshot {
  cpuSeconds: PhaseTotals['cpuSeconds'];
  store: PhaseTotals['store'];
}

interface WindowPlan {
  concurrency: number;
  warmupS: number;
  windowS: number;
}

async function measure(side: 'baseline' | 'saga', operation: () => Promise<Outcome>, plan: WindowPlan, processes: Processes, totals: PhaseTotals): Promise<void> {
  const snapshots: Partial<Record<'open' | 'close', Snapshot>> = {};
  const result = await runClosedLoop(operation, {
    concurrency: plan.concurrency,
    warmupMs: plan.warmupS * 1000,
    measureMs: plan.windowS * 1000,
    onWindow: async (edge) => {
      snapshots[edge] = await snapshot(processes, side === 'saga');
    },
  });
  addResult(totals, result, snapshots.open!, snapshots.close!);
  const latency = summarizeLatencies(result.latenciesMs);
  const window = { perSecond: round((result.completed * 1000) / result.windowMs, 1), p50Ms: round(latency.p50Ms, 2), p99Ms: round(latency.p99Ms, 2), failed: result.failed };
  totals.windows.push(window);
  console.log(`  ${side.padEnd(8)} ${String(Math.round(window.perSecond)).padStart(6)}/s  p50 ${window.p50Ms} ms  p99 ${window.p99Ms} ms${result.failed ? `  ${result.failed} failed` : ''}`);
}

async function snapshot(processes: Processes, withStore: boolean): Promise<Snapshot> {
  const ours = {
    loadGenerator: cpuSecondsOfSelf(),
    coordinator: cpuSecondsOfPid(processes.coordinator.pid) ?? NaN,
    participant: cpuSecondsOfPid(processes.participant.pid) ?? NaN,
    standIn: cpuSecondsOfPid(processes.standIn.pid) ?? NaN,
  };
  // Whatever else runs on the machine competes for the same cores; the report shows how much.
  const restOfMachine = (cpuSecondsOfMachine() ?? NaN) - Object.values(ours).reduce((sum, seconds) => sum + seconds, 0);
  const cpuSeconds = { ...ours, restOfMachine };
  if (!withStore) return { cpuSeconds, store: { commits: 0, writes: 0, commitSeconds: 0 } };
  const response = await request(`${processes.coordinator.url}/metrics`);
  const text = await response.body.text();
  return {
    cpuSeconds,
    store: {
      commits: prometheusValue(text, 'tandem_store_commit_batch_size_count') ?? NaN,
      writes: prometheusValue(text, 'tandem_store_commit_batch_size_sum') ?? NaN,
      commitSeconds: prometheusValue(text, 'tandem_store_commit_duration_seconds_sum') ?? NaN,
    },
  };
}

function addResult(totals: PhaseTotals, result: LoadResult, open: Snapshot, close: Snapshot): void {
  totals.completed += result.completed;
  totals.failed += result.failed;
  totals.windowMs += result.windowMs;
  for (const latencyMs of result.latenciesMs) totals.latenciesMs.push(latencyMs);
  for (const reason of result.failureReasons) if (!totals.failureReasons.includes(reason)) totals.failureReasons.push(reason);
  for (const key of Object.keys(totals.cpuSeconds) as Array<keyof PhaseTotals['cpuSeconds']>) {
    totals.cpuSeconds[key] += close.cpuSeconds[key] - open.cpuSeconds[key];
  }
  for (const key of Object.keys(totals.store) as Array<keyof PhaseTotals['store']>) {
    totals.store[key] += close.store[key] - open.store[key];
  }
}

/** What a participant process answered, per path, over the whole run (warm-ups included). */
async function callCounts(server: ChildServer): Promise<Partial<CallCounts>> {
  const response = await request(`${server.url}/stats`);
  const counts = (await response.body.json()) as CallCounts;
  return Object.fromEntries(Object.entries(counts).filter(([, count]) => count > 0));
}


function sideFigures(totals: PhaseTotals) {
  const windowS = totals.windowMs / 1000;
  const latency: LatencySummary = summarizeLatencies(totals.latenciesMs);
  const perSecond = totals.completed / windowS;
  const coresUsed = Object.fromEntries(Object.entries(totals.cpuSeconds).map(([name, seconds]) => [name, round(seconds / windowS, 2)]));
  const cpuMsPerOperation = Object.fromEntries(
    Object.entries(totals.cpuSeconds).map(([name, seconds]) => [name, totals.completed ? round((seconds * 1000) / totals.completed, 3) : null]),
  );
  return {
    perSecond,
    completed: totals.completed,
    failed: totals.failed,
    failureReasons: totals.failureReasons,
    measuredSeconds: windowS,
    latencyMs: { p50: round(latency.p50Ms, 2), p99: round(latency.p99Ms, 2), mean: round(latency.meanMs, 2), max: round(latency.maxMs, 2) },
    coresUsed,
    cpuMsPerOperation,
    windows: totals.windows,
  };
}


function microsOf(milliseconds: number | null | undefined): number | null {
  return milliseconds === null || milliseconds === undefined ? null : round(milliseconds * 1000, 1);
}

function buildReport(
  config: SagaBenchConfig,
  totals: Record<'baseline' | 'saga', PhaseTotals>,
  participantCalls: Record<'participant' | 'standIn', Partial<CallCounts>>,
  workDir: string,
  profile: ReturnType<typeof reportProfile>,
) {
  const saga = sideFigures(totals.saga);
  const baseline = sideFigures(totals.baseline);
  const { store } = totals.saga;
  return {
    benchmark: 'saga',
    finishedAt: new Date().toISOString(),
    summary: {
      sagaTxPerSec: round(saga.perSecond, 1),
      baselineChainsPerSec: round(baseline.perSecond, 1),
      ratio: round(saga.perSecond / baseline.perSecond, 3),
      ratioGoal,
      ratioPerRound: saga.windows.map((window, index) => round(window.perSecond / baseline.windows[index].perSecond, 3)),
      sagaP50Ms: saga.latencyMs.p50,
      sagaP99Ms: saga.latencyMs.p99,
      baselineP50Ms: baseline.latencyMs.p50,
      baselineP99Ms: baseline.latencyMs.p99,
      sagaFailures: saga.failed,
      baselineFailures: baseline.failed,
      // The coordinator's own CPU time over the measured windows, per saga; the baseline's
      // figure is the stand-in that takes the coordinator's place in the hand-made chain.
      coordinatorCpuUsPerSaga: microsOf(saga.cpuMsPerOperation.coordinator),
      baselineCpuUsPerChain: microsOf(baseline.cpuMsPerOperation.standIn),
    },
    config: {
      concurrency: config.concurrency,
      warmupS: config.warmupS,
      durationS: config.durationS,
      rounds: config.rounds,
      store: 'sqlite',
      sqliteSync: config.sqliteSync,
      storeOnMemoryFilesystem: isMemoryBacked(workDir),
      branchesPerSaga: branchPayloads.length,
      exchangesPerBaselineChain: 1 + branchPayloads.length,
      processes: 'load generator (this process), coordinator, participant, baseline stand-in: one process each',
    },
    machine: machineInfo(),
    commit: gitCommit(repoRoot),
    saga: {
      ...saga,
      store: {
        commitsPerSec: round(store.commits / saga.measuredSeconds, 1),
        averageBatchSize: round(store.writes / store.commits, 2),
        averageCommitMs: round((store.commitSeconds * 1000) / store.commits, 3),
        writesPerSaga: totals.saga.completed ? round(store.writes / totals.saga.completed, 2) : null,
      },
    },
    baseline,
    calls: participantCalls,
    ...(profile ? { coordinatorProfile: { file: profile.file, byPlace: profile.top.byPlace.slice(0, 10), byFunction: profile.top.byFunction.slice(0, 10) } } : {}),
  };
}

function printReport(report: ReturnType<typeof buildReport>, totals: Record<'baseline' | 'saga', PhaseTotals>): void {
  const row = (label: string, side: ReturnType<typeof sideFigures>) => [
    label,
    side.perSecond.toFixed(0),
    side.latencyMs.p50.toFixed(2),
    side.latencyMs.p99.toFixed(2),
    String(side.failed),
    String(side.coresUsed.loadGenerator),
    String(side.coresUsed.coordinator),
    String(side.coresUsed.participant),
    String(side.coresUsed.standIn),
    String(side.coresUsed.restOfMachine),
  ];
  console.log('');
  console.log(
    formatTable([
      ['', 'per s', 'p50 ms', 'p99 ms', 'failed', 'cpu load', 'cpu coord', 'cpu part', 'cpu stand-in', 'cpu rest'],
      row('baseline chain (3 exchanges)', report.baseline),
      row(`saga, 2 branches (sqlite ${report.config.sqliteSync})`, report.saga),
    ]),
  );
  const { store } = report.saga;
  console.log(`\nratio saga/baseline: ${report.summary.ratio.toFixed(3)} (goal ≥ ${ratioGoal})`);
  console.log(`store: ${store.commitsPerSec} commits/s, ${store.averageBatchSize} writes per commit, ${store.averageCommitMs} ms per commit, ${store.writesPerSaga} writes per saga`);
  console.log(`ratio per round: ${report.summary.ratioPerRound.join(', ')}`);
  console.log(`coordinator CPU per saga: ${report.summary.coordinatorCpuUsPerSaga} µs; stand-in CPU per baseline chain: ${report.summary.baselineCpuUsPerChain} µs`);
  console.log(`calls answered (whole run): participant ${JSON.stringify(report.calls.participant)}, stand-in ${JSON.stringify(report.calls.standIn)}`);
  for (const side of ['baseline', 'saga'] as const) {
    if (totals[side].failureReasons.length) console.log(`${side} failures, e.g.: ${totals[side].failureReasons.join(' | ')}`);
  }
}
