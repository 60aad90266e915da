// How the console's reads behave on a large store: fills a fresh SQLite file with N finished
// sagas and a few hundred stuck ones (straight into the table, as the store would write them),
// starts a coordinator on it and times the console's reads. Run:
//   node dist/bench/console-list.js [rows=1000000]
// Figures are for docs/console.md; nothing here is asserted anywhere.
import Database from 'better-sqlite3';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStore } from '../src/store/sqlite.js';
import { serve } from '../src/server/serve.js';
import type { Tx } from '../src/tx/types.js';

const rows = Number(process.argv[2] ?? 1_000_000);
const stuckRows = 300;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-console-bench-'));
const file = path.join(dir, 'tandem.db');

function txAt(index: number, nowMs: number, stuck: boolean): Tx {
  const createdAtMs = nowMs - (rows - index) * 10;
  return {
    gid: `bench-${index.toString().padStart(8, '0')}`,
    mode: 'saga',
    status: stuck ? 'submitted' : 'succeeded',
    phase: stuck ? 'action' : 'done',
    branches: [{ branchId: '01', ops: { action: { url: `http://127.0.0.1:9/${stuck ? `pay${index % 3}` : 'ok'}`, status: stuck ? 'pending' : 'succeeded', attempts: stuck ? 7 : 0, ...(stuck ? { lastError: 'transient: HTTP 500' } : {}) }, compensate: { url: 'http://127.0.0.1:9/refund', status: 'pending', attempts: 0 } } }],
    options: { timeoutToFailMs: 0, requestTimeoutMs: 3000, retryIntervalMs: 1000, retryIntervalMsMax: 60000, retryLimit: null, branchHeaders: {}, concurrent: false },
    createdAtMs,
    updatedAtMs: createdAtMs,
    // Far off, so the coordinator started on the file does not call anything.
    nextAttemptAtMs: stuck ? nowMs + 86_400_000 : null,
    roundsWithoutProgress: 3,
    version: 3,
  };
}

async function fill(): Promise<void> {
  const store = new SqliteStore(file, { sync: 'normal' });
  await store.close();
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  const insert = db.prepare(
    `INSERT INTO transactions (gid, mode, status, created_at_ms, updated_at_ms, next_attempt_at_ms, version, body, lease_owner, lease_until_ms, history)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)`,
  );
  const nowMs = Date.now();
  const stuckEvery = Math.floor(rows / stuckRows);
  const batch = db.transaction((from: number, to: number) => {
    for (let index = from; index < to; index++) {
      const tx = txAt(index, nowMs, index % stuckEvery === 0);
      const history = JSON.stringify([{ atMs: tx.createdAtMs, status: 'prepared', phase: 'prepared' }, { atMs: tx.createdAtMs, status: 'submitted', phase: 'action' }]);
      insert.run(tx.gid, tx.mode, tx.status, tx.createdAtMs, tx.updatedAtMs, tx.nextAttemptAtMs, tx.version, JSON.stringify(tx), history);
    }
  });
  for (let from = 0; from < rows; from += 50_000) batch(from, Math.min(rows, from + 50_000));
  db.close();
}

async function timed(label: string, url: string, results: Array<[string, number, string]>): Promise<unknown> {
  const started = performance.now();
  const response = await fetch(url);
  const body = (await response.json()) as Record<string, unknown>;
  const ms = performance.now() - started;
  results.push([label, Math.round(ms * 10) / 10, `HTTP ${response.status}`]);
  return body;
}

async function main(): Promise<void> {
  const fillStarted = performance.now();
  await fill();
  console.log(`filled ${rows} rows in ${Math.round(performance.now() - fillStarted)} ms (${(fs.statSync(file).size / 1e6).toFixed(0)} MB)`);
  const running = await serve({ host: '127.0.0.1', port: 0, storeUrl: `sqlite:${file}`, sqliteSync: 'normal', logLevel: 'silent' });
  const results: Array<[string, number, string]> = [];
  try {
    const base = running.url;
    await timed('first page, no filter (50)', `${base}/v1/transactions?limit=50`, results);
    let cursor: string | null = null;
    for (let page = 0; page < 100; page++) {
      const body = (await timed(page === 99 ? '100th page, no filter' : 'page', `${base}/v1/transactions?limit=50${cursor ? `&cursor=${cursor}` : ''}`, results)) as { nextCursor: string | null };
      cursor = body.nextCursor;
    }
    await timed('status=succeeded first page', `${base}/v1/transactions?limit=50&status=succeeded`, results);
    await timed(`status=submitted first page (${stuckRows} of ${rows} match)`, `${base}/v1/transactions?limit=50&status=submitted`, results);
    await timed('status=aborting first page (none match)', `${base}/v1/transactions?limit=50&status=aborting`, results);
    await timed('one transaction by gid', `${base}/v1/transactions/bench-00000000`, results);
    await timed('stuck (stuckScanMax 2000)', `${base}/v1/stuck?retryingForMs=0`, results);
  } finally {
    await running.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const [label, ms, status] of results.filter(([label]) => label !== 'page')) console.log(`${label.padEnd(52)} ${String(ms).padStart(9)} ms  ${status}`);
}

await main();
