// `tandem wf list|show|signal|cancel` against a running coordinator.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { closeCoordinator, startCoordinator, type TestCoordinator } from './support/coordinator.js';
import { WorkflowClient, type WorkflowView } from '../src/sdk/workflow.js';

const cliPath = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const runFile = promisify(execFile);
let coordinator: TestCoordinator;

before(async () => {
  coordinator = await startCoordinator();
});

after(async () => {
  await closeCoordinator(coordinator);
});

async function cli(...args: string[]): Promise<string> {
  const { stdout } = await runFile(process.execPath, [cliPath, ...args, '--url', coordinator.url]);
  return stdout;
}

test('tandem wf list, show, signal and cancel', async () => {
  const client = new WorkflowClient({ url: coordinator.url });
  await client.call('POST', '/v1/workflows', { name: 'cli-order', workflowId: 'wf-cli-1', input: { n: 1 } });
  const task = await client.call<WorkflowView & { leaseId: string }>('POST', '/v1/workflow-tasks/claim', { workerId: 'cli-worker', waitMs: 5000 }, 5000);
  await client.call('POST', '/v1/workflows/wf-cli-1/steps', { leaseId: task.leaseId, name: 'reserve', op: 'action', status: 'succeeded', index: 0, result: 'h1', durationMs: 12 });
  assert.match(await cli('wf', 'list'), /wf-cli-1\s+prepared\s+running\s+1/);
  const shown = await cli('wf', 'show', 'wf-cli-1');
  assert.match(shown, /workflow wf-cli-1 \(cli-order\)/);
  assert.match(shown, /lease\s+cli-worker until/);
  assert.match(shown, /0\s+reserve\s+action\s+succeeded\s+1/);
  assert.deepEqual(JSON.parse(await cli('wf', 'show', 'wf-cli-1', '--json')).steps[0].action.result, 'h1');
  assert.equal((await cli('wf', 'signal', 'wf-cli-1', 'approval', 'true')).trim(), 'signal approval buffered');
  assert.match(await cli('wf', 'cancel', 'wf-cli-1', '--reason', 'test'), /cancel requested/);
  const answer = await client.call<{ stop: string | null }>('POST', '/v1/workflows/wf-cli-1/heartbeat', { leaseId: task.leaseId });
  assert.equal(answer.stop, 'test');
  await assert.rejects(cli('wf', 'show', 'no-such-workflow'), (error: { stderr?: string }) => /404/.test(error.stderr ?? ''));
});
