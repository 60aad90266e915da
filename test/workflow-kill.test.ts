// A worker process is SIGKILLed in the middle of a workflow (inside a step, after that step's
// effect landed but before it was recorded); another worker process finishes the workflow:
// recorded steps are not run again, the interrupted step runs again with the same idempotency
// key (so its effect lands once), and the rest run once.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { closeCoordinator, startCoordinator } from './support/coordinator.js';
import { WorkflowClient } from '../src/sdk/workflow.js';
import type { WorkerChildConfig } from './support/workflow-worker-child.js';

const childPath = fileURLToPath(new URL('./support/workflow-worker-child.js', import.meta.url));
const children = new Set<ChildProcess>();
after(() => {
  for (const child of children) child.kill('SIGKILL');
});

function startWorker(config: WorkerChildConfig): Promise<ChildProcess> {
  const child = spawn(process.execPath, [childPath, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('ready')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`worker ${config.workerId} exited (${code}) before it was ready: ${out}`)));
  });
}

test('a worker SIGKILLed mid-workflow is replaced by another process; every step effect lands once', async () => {
  const coordinator = await startCoordinator({ limits: { workflowLeaseMs: 1000, recoveryIntervalMs: 100 } });
  // The ledger the steps write to: an effect per idempotency key, and every call counted.
  const effects = new Map<string, string>();
  const calls: Array<{ step: string; worker: string }> = [];
  let killPoint: () => void = () => undefined;
  const atKillPoint = new Promise<void>((resolve) => (killPoint = resolve));
  const held: http.ServerResponse[] = [];
  const ledger = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      const { key, step, worker } = JSON.parse(body) as { key: string; step: string; worker: string };
      calls.push({ step, worker });
      if (!effects.has(key)) effects.set(key, `receipt-${step}-${worker}`);
      // The first worker's third step: the effect has landed; hold the answer and kill the worker.
      if (step === 's3' && worker === 'first') {
        held.push(res);
        killPoint();
        return;
      }
      res.end(effects.get(key));
    });
  });
  await new Promise<void>((resolve) => ledger.listen(0, '127.0.0.1', resolve));
  const address = ledger.address();
  const ledgerUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  try {
    const client = new WorkflowClient({ url: coordinator.url });
    const first = await startWorker({ coordinatorUrl: coordinator.url, ledgerUrl, workerId: 'first' });
    const run = await client.workflow('kill-test', async () => undefined).start({ amount: 5 }, { workflowId: 'kill-1' });
    await atKillPoint;
    const exited = new Promise((resolve) => first.once('exit', resolve));
    first.kill('SIGKILL');
    await exited;
    for (const res of held) res.destroy();
    const before = await run.describe();
    assert.deepEqual(before.steps.map((step) => [step.name, step.action.status]), [['s1', 'succeeded'], ['s2', 'succeeded']]);
    assert.equal(before.lease?.worker, 'first');

    await startWorker({ coordinatorUrl: coordinator.url, ledgerUrl, workerId: 'second' });
    const output = await run.result({ timeoutMs: 30_000 });
    assert.deepEqual(output, ['receipt-s1-first', 'receipt-s2-first', 'receipt-s3-first', 'receipt-s4-second']);
    assert.deepEqual(calls, [
      { step: 's1', worker: 'first' },
      { step: 's2', worker: 'first' },
      { step: 's3', worker: 'first' },
      { step: 's3', worker: 'second' },
      { step: 's4', worker: 'second' },
    ]);
    assert.deepEqual([...effects.keys()], ['kill-1:s1', 'kill-1:s2', 'kill-1:s3', 'kill-1:s4']);
    const view = await run.describe();
    assert.equal(view.status, 'succeeded');
    assert.deepEqual(view.steps.map((step) => step.action.attempts), [1, 1, 1, 1]);
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await new Promise<void>((resolve) => ledger.close(() => resolve()));
    ledger.closeAllConnections();
    await closeCoordinator(coordinator);
  }
});
