// Durable workflows end to end in one process: a real coordinator (SQLite), the SDK's client
// and Worker, and a hand-driven worker speaking the HTTP protocol to stage crashes.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { closeCoordinator, startCoordinator, type TestCoordinator } from './support/coordinator.js';
import { BusinessFailure, NonDeterminismError, SignalTimeoutError, WorkflowClient, WorkflowFailedError, type WorkflowView } from '../src/sdk/workflow.js';
import { TandemApiError } from '../src/sdk/client.js';

let coordinator: TestCoordinator;
let client: WorkflowClient;

before(async () => {
  // A short worker lease so a staged crash is taken over quickly; a recovery scan every 50 ms.
  coordinator = await startCoordinator({ limits: { workflowLeaseMs: 400, recoveryIntervalMs: 50 } });
  client = new WorkflowClient({ url: coordinator.url });
});

after(async () => {
  await closeCoordinator(coordinator);
});

interface Task extends WorkflowView {
  leaseId: string;
}

async function claimAs(workerId: string, names: string[], waitMs = 0): Promise<Task | undefined> {
  return client.call<Task | undefined>('POST', '/v1/workflow-tasks/claim', { workerId, workflows: names, waitMs }, waitMs);
}

describe('workflows', () => {
  test('runs steps in order, records each with its result, attempts and timings, and returns the output', async () => {
    const calls: string[] = [];
    const keys: string[] = [];
    const order = client.workflow('order-happy', async (wf, input: { id: number }) => {
      const hold = await wf.step('reserve', (ctx) => {
        calls.push('reserve');
        keys.push(ctx.idempotencyKey);
        return { holdId: `h-${input.id}` };
      });
      let tries = 0;
      await wf.step('charge', () => {
        calls.push('charge');
        tries += 1;
        if (tries < 3) throw new Error('payment service busy');
        return 42;
      }, { retry: { initialMs: 1 } });
      return { orderId: `o-${input.id}`, hold: hold.holdId };
    });
    const worker = client.worker({ workflows: [order], workerId: 'w-happy', claimWaitMs: 500 }).start();
    try {
      const run = await order.start({ id: 7 }, { workflowId: 'wf-happy-7' });
      assert.deepEqual(await run.result({ timeoutMs: 15_000 }), { orderId: 'o-7', hold: 'h-7' });
      const view = await run.describe();
      assert.equal(view.status, 'succeeded');
      assert.deepEqual(view.steps.map((step) => [step.name, step.action.status, step.action.attempts]), [['reserve', 'succeeded', 1], ['charge', 'succeeded', 3]]);
      assert.deepEqual(view.steps[0].action.result, { holdId: 'h-7' });
      assert.match(view.steps[1].action.lastError ?? '', /payment service busy/);
      for (const step of view.steps) {
        assert.equal(typeof step.action.startedAtMs, 'number');
        assert.ok((step.action.settledAtMs ?? -1) >= (step.action.startedAtMs ?? Infinity));
      }
      assert.deepEqual(calls, ['reserve', 'charge', 'charge', 'charge']);
      assert.deepEqual(keys, ['wf-happy-7:reserve']);
      // Starting the same run again is the same run; another input under that id is refused.
      const again = await order.start({ id: 7 }, { workflowId: 'wf-happy-7' });
      assert.equal(again.workflowId, 'wf-happy-7');
      await assert.rejects(order.start({ id: 8 }, { workflowId: 'wf-happy-7' }), (error: unknown) => error instanceof TandemApiError && error.status === 409);
    } finally {
      await worker.stop();
    }
  });

  test('a BusinessFailure compensates the completed steps in reverse, retrying each compensation until it succeeds', async () => {
    const log: string[] = [];
    let refundTries = 0;
    const order = client.workflow('order-refused', async (wf) => {
      await wf.step('reserve', () => log.push('reserve'), { compensate: () => log.push('release') });
      await wf.step('note', () => log.push('note'));
      await wf.step('charge', () => log.push('charge'), {
        compensate: () => {
          refundTries += 1;
          if (refundTries < 2) throw new Error('refund service down');
          log.push('refund');
        },
      });
      await wf.step('ship', () => {
        throw new BusinessFailure('address unknown');
      });
      log.push('never');
    });
    const worker = client.worker({ workflows: [order], workerId: 'w-refused', claimWaitMs: 500 }).start();
    try {
      const run = await order.start(null, { workflowId: 'wf-refused-1' });
      await assert.rejects(run.result({ timeoutMs: 15_000 }), (error: unknown) => error instanceof WorkflowFailedError && /address unknown/.test(error.reason));
      assert.deepEqual(log, ['reserve', 'note', 'charge', 'refund', 'release']);
      const view = await run.describe();
      assert.equal(view.status, 'failed');
      assert.deepEqual(view.steps.map((step) => [step.name, step.action.status, step.compensate?.status ?? '-', step.compensate?.attempts ?? 0]), [
        ['reserve', 'succeeded', 'succeeded', 1],
        ['note', 'succeeded', '-', 0],
        ['charge', 'succeeded', 'succeeded', 2],
        ['ship', 'failed', '-', 0],
      ]);
    } finally {
      await worker.stop();
    }
  });

  test('a worker that dies mid-workflow is replaced: recorded steps replay from their records and only the rest run', async () => {
    const ran: string[] = [];
    const definition = client.workflow('order-resumed', async (wf) => {
      const first = await wf.step('first', () => {
        ran.push('first');
        return 'from-the-dead-worker?';
      });
      const second = await wf.step('second', () => {
        ran.push('second');
        return 2;
      });
      return { first, second };
    });
    await definition.start(null, { workflowId: 'wf-resumed-1' });
    // The "dead" worker claims it, records the first step, and is never heard of again.
    const task = await claimAs('doomed', ['order-resumed'], 5_000);
    assert.ok(task);
    await client.call('POST', '/v1/workflows/wf-resumed-1/steps', { leaseId: task.leaseId, name: 'first', op: 'action', status: 'succeeded', index: 0, result: 'recorded-by-doomed' });
    // While its lease holds, nobody else is handed the workflow.
    assert.equal(await claimAs('other', ['order-resumed'], 0), undefined);
    const worker = client.worker({ workflows: [definition], workerId: 'w-resumer', claimWaitMs: 500 }).start();
    try {
      assert.deepEqual(await definition.run('wf-resumed-1').result({ timeoutMs: 15_000 }), { first: 'recorded-by-doomed', second: 2 });
      assert.deepEqual(ran, ['second']);
      // The dead worker's lease is gone: what it reports now is refused.
      await assert.rejects(
        client.call('POST', '/v1/workflows/wf-resumed-1/steps', { leaseId: task.leaseId, name: 'second', op: 'action', status: 'succeeded', index: 1 }),
        (error: unknown) => error instanceof TandemApiError && error.status === 409,
      );
    } finally {
      await worker.stop();
    }
  });

  test('code that replays a different step sequence blocks the workflow, naming both sequences', async () => {
    const errors: unknown[] = [];
    const definition = client.workflow('order-changed', async (wf) => {
      await wf.step('a', () => 1);
      await wf.step('c', () => 3);
    });
    await definition.start(null, { workflowId: 'wf-changed-1' });
    const task = await claimAs('old-code', ['order-changed'], 5_000);
    assert.ok(task);
    for (const [index, name] of ['a', 'b'].entries()) {
      await client.call('POST', '/v1/workflows/wf-changed-1/steps', { leaseId: task.leaseId, name, op: 'action', status: 'succeeded', index, result: index });
    }
    await client.call('POST', '/v1/workflows/wf-changed-1/release', { leaseId: task.leaseId });
    let reported: () => void = () => undefined;
    const blocked = new Promise<void>((resolve) => (reported = resolve));
    const worker = client.worker({
      workflows: [definition],
      workerId: 'w-new-code',
      claimWaitMs: 500,
      onError: (error) => {
        errors.push(error);
        reported();
      },
    }).start();
    try {
      await blocked;
      const error = errors[0];
      assert.ok(error instanceof NonDeterminismError, String(error));
      assert.deepEqual(error.recorded, ['a', 'b']);
      assert.deepEqual(error.replayed, ['a', 'c']);
      assert.match(error.message, /recorded steps \[a, b\].*ran \[a, c\]/);
      const view = await client.get('wf-changed-1');
      assert.equal(view.phase, 'blocked');
      assert.match(view.reason ?? '', /recorded steps \[a, b\]/);
    } finally {
      await worker.stop();
    }
  });

  test('two workers never hold one workflow at once; the claim long poll answers when work arrives', async () => {
    const pending = claimAs('waiting', ['order-poll'], 10_000);
    const started = await client.call<WorkflowView>('POST', '/v1/workflows', { name: 'order-poll', workflowId: 'wf-poll-1', input: { n: 1 } });
    assert.equal(started.phase, 'ready');
    const task = await pending;
    assert.ok(task);
    assert.equal(task.workflowId, 'wf-poll-1');
    assert.deepEqual(task.input, { n: 1 });
    assert.equal(await claimAs('second', ['order-poll'], 0), undefined);
    const view = await client.get('wf-poll-1');
    assert.equal(view.lease?.worker, 'waiting');
    await client.call('POST', '/v1/workflows/wf-poll-1/finish', { leaseId: task.leaseId, status: 'succeeded', output: 'done' });
    assert.equal((await client.get('wf-poll-1')).output, 'done');
  });

  test('durable sleep and signals: the worker lets go while waiting; a signal sent before the wait is kept; a timeout fails the wait', async () => {
    const ran: string[] = [];
    const definition = client.workflow('order-approval', async (wf, input: { early: boolean }) => {
      await wf.step('charge', () => ran.push('charge'), { compensate: () => ran.push('refund') });
      const approved = await wf.signal<boolean>('approval', { timeoutMs: 60_000 });
      if (!approved) throw new BusinessFailure('not approved');
      await wf.sleep('cool-off', 50);
      let late = 'none';
      try {
        late = await wf.signal<string>('late', { timeoutMs: 10 });
      } catch (error) {
        if (!(error instanceof SignalTimeoutError)) throw error;
        late = 'timed out';
      }
      return { approved, late, early: input.early };
    });
    const worker = client.worker({ workflows: [definition], workerId: 'w-approval', claimWaitMs: 500 }).start();
    try {
      // Approved after the run began waiting.
      const waiting = await definition.start({ early: false }, { workflowId: 'wf-approval-1' });
      for (let look = 0; look < 200; look++) {
        const view = await client.get('wf-approval-1', 0);
        if (view.phase === 'waiting') break;
        await client.get('wf-approval-1', 20).catch(() => undefined);
      }
      const waitingView = await waiting.describe();
      assert.equal(waitingView.phase, 'waiting');
      assert.equal(waitingView.lease, null);
      assert.deepEqual(await definition.signal('wf-approval-1', 'approval', true), { delivered: 'received' });
      assert.deepEqual(await waiting.result({ timeoutMs: 15_000 }), { approved: true, late: 'timed out', early: false });
      const steps = (await waiting.describe()).steps;
      assert.deepEqual(steps.map((step) => [step.name, step.action.status]), [['charge', 'succeeded'], ['approval', 'succeeded'], ['cool-off', 'succeeded'], ['late', 'failed']]);
      // Refused before the run got to the wait: the signal is kept, the wait takes it, the charge is refunded.
      await client.signal('wf-approval-2', 'approval', false).catch(() => undefined);
      const refused = await definition.start({ early: true }, { workflowId: 'wf-approval-2' });
      assert.deepEqual(await client.signal('wf-approval-2', 'approval', false), { delivered: 'buffered' });
      await assert.rejects(refused.result({ timeoutMs: 15_000 }), (error: unknown) => error instanceof WorkflowFailedError && /not approved/.test(error.reason));
      assert.deepEqual(ran, ['charge', 'charge', 'refund']);
    } finally {
      await worker.stop();
    }
  });

  test('cancelling a waiting workflow fails it and compensates what it did', async () => {
    const ran: string[] = [];
    const definition = client.workflow('order-cancelled', async (wf) => {
      await wf.step('charge', () => ran.push('charge'), { compensate: () => ran.push('refund') });
      await wf.signal('never');
    });
    const worker = client.worker({ workflows: [definition], workerId: 'w-cancel', claimWaitMs: 500 }).start();
    try {
      const run = await definition.start(null, { workflowId: 'wf-cancel-1' });
      for (let look = 0; look < 200 && (await run.describe()).phase !== 'waiting'; look++) await client.get('wf-cancel-1', 20);
      await client.cancel('wf-cancel-1', 'customer changed their mind');
      await assert.rejects(run.result({ timeoutMs: 15_000 }), (error: unknown) => error instanceof WorkflowFailedError && /changed their mind/.test(error.reason));
      assert.deepEqual(ran, ['charge', 'refund']);
    } finally {
      await worker.stop();
    }
  });

  test('bad requests are 4xx problems naming the field', async () => {
    const cases: Array<[string, unknown, string]> = [
      ['/v1/workflows', { workflowId: 'x' }, 'name'],
      ['/v1/workflows', { name: 'n', bogus: 1 }, 'bogus'],
      ['/v1/workflow-tasks/claim', { workerId: 'a/b' }, 'workerId'],
      ['/v1/workflow-tasks/claim', { workerId: 'a', waitMs: 10_000_000 }, 'waitMs'],
      ['/v1/workflows/wf-poll-1/steps', { leaseId: 'l', name: 's', op: 'undo', status: 'succeeded' }, 'op'],
    ];
    for (const [path, body, field] of cases) {
      await assert.rejects(client.call('POST', path, body), (error: unknown) => {
        assert.ok(error instanceof TandemApiError && error.status === 400, `${path} ${JSON.stringify(body)}: ${String(error)}`);
        assert.ok(typeof error.problem === 'object' && error.problem.errors?.some((item) => item.field === field), JSON.stringify(error.problem));
        return true;
      });
    }
    await assert.rejects(client.get('no-such-workflow'), (error: unknown) => error instanceof TandemApiError && error.status === 404);
  });
});
