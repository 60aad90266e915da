// A worker process for the workflow kill test: runs the 'kill-test' workflow, whose four steps
// each apply an effect at the test's ledger (keyed by the step's idempotency key). Prints
// "ready" once its claim loops run; the test SIGKILLs it while a step is in flight.
import { request } from 'undici';
import { WorkflowClient } from '../../src/sdk/workflow.js';

export interface WorkerChildConfig {
  coordinatorUrl: string;
  ledgerUrl: string;
  workerId: string;
}

export const killTestSteps = ['s1', 's2', 's3', 's4'] as const;

const config = JSON.parse(process.argv[2] ?? '{}') as WorkerChildConfig;
const client = new WorkflowClient({ url: config.coordinatorUrl });
const definition = client.workflow('kill-test', async (wf, input: { amount: number }) => {
  const receipts: string[] = [];
  for (const name of killTestSteps) {
    receipts.push(
      await wf.step(name, async (ctx) => {
        const response = await request(`${config.ledgerUrl}/apply`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ key: ctx.idempotencyKey, step: name, worker: config.workerId, amount: input.amount }),
        });
        if (response.statusCode !== 200) throw new Error(`ledger answered ${response.statusCode}`);
        return response.body.text();
      }),
    );
  }
  return receipts;
});
client.worker({ workflows: [definition], workerId: config.workerId, claimWaitMs: 2_000, onError: (error) => console.error(String(error)) }).start();
console.log('ready');
