// Workflow replay under simulated crashes at every I/O point (test/sim/workflow-sim.ts). A
// failing seed is printed; TANDEM_WORKFLOW_SIM_FIRST_SEED replays it.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { closeWorkflowSimulation, runWorkflowSimulation } from './sim/workflow-sim.js';

const seeds = Number(process.env.TANDEM_WORKFLOW_SIM_SEEDS ?? 300);
const firstSeed = Number(process.env.TANDEM_WORKFLOW_SIM_FIRST_SEED ?? 1);

describe('workflows: seeded replay simulation', () => {
  it(`${seeds} seeds: every workflow ends, recorded steps never rerun, each effect lands once, failures compensate in reverse`, async () => {
    after(closeWorkflowSimulation);
    const totals = { crashes: 0, incarnations: 0, stepRuns: 0, succeeded: 0, failed: 0 };
    for (let seed = firstSeed; seed < firstSeed + seeds; seed++) {
      const report = await runWorkflowSimulation(seed);
      if (report.violations.length > 0) {
        assert.fail(`seed ${seed} broke an invariant (replay: TANDEM_WORKFLOW_SIM_FIRST_SEED=${seed} TANDEM_WORKFLOW_SIM_SEEDS=1):\n  ${report.violations.slice(0, 10).join('\n  ')}`);
      }
      totals.crashes += report.stats.crashes;
      totals.incarnations += report.stats.incarnations;
      totals.stepRuns += report.stats.stepRuns;
      if (report.stats.status === 'succeeded') totals.succeeded += 1;
      if (report.stats.status === 'failed') totals.failed += 1;
    }
    console.log(`workflow simulation: ${seeds} seeds, ${totals.incarnations} worker incarnations, ${totals.crashes} crashes, ${totals.stepRuns} step runs; ${totals.succeeded} succeeded, ${totals.failed} failed`);
    // The run must have exercised crashes and both outcomes, or it proves little.
    assert.ok(totals.crashes > seeds / 2, `many crashes (${totals.crashes})`);
    assert.ok(totals.succeeded > 0 && totals.failed > 0, 'both outcomes');
  });
});
