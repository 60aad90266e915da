// The whole engine under simulation (test/sim/engine-sim.ts): many seeds, each a few seconds
// of virtual time with store faults, lost answers, crashes, clock skew and jumps, then healed.
// A failing seed is printed with its replay command.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runEngineSimulation } from './sim/engine-sim.js';

const seeds = Number(process.env.TANDEM_ENGINE_SIM_SEEDS ?? 2000);
const firstSeed = Number(process.env.TANDEM_ENGINE_SIM_FIRST_SEED ?? 1);

describe('engine: whole-engine seeded simulation', () => {
  it(`${seeds} seeds keep every invariant (one outcome, atomicity per mode, nothing acknowledged lost, no live lease taken over, nothing stuck)`, { timeout: 20 * 60_000 }, async () => {
    const totals = { events: 0, crashes: 0, staleCalls: 0 };
    const ended: Record<string, number> = {};
    for (let seed = firstSeed; seed < firstSeed + seeds; seed++) {
      const report = await runEngineSimulation(seed);
      if (report.violations.length > 0) {
        assert.fail(`seed ${seed} broke an invariant (replay: npm run simulate -- engine --seed ${seed}):\n  ${report.violations.slice(0, 10).join('\n  ')}`);
      }
      totals.events += report.stats.events;
      totals.crashes += report.stats.crashes;
      totals.staleCalls += report.stats.staleCalls;
      for (const [key, count] of Object.entries(report.stats.ended)) ended[key] = (ended[key] ?? 0) + count;
    }
    console.log(`engine simulation: ${seeds} seeds, ${totals.events} events, ${totals.crashes} crashes, ${totals.staleCalls} fenced stale calls; ended ${JSON.stringify(ended)}`);
    // The run must have exercised both outcomes of every mode, or it proves little.
    for (const mode of ['saga', 'tcc', '2pc', '3pc', 'xa', 'msg']) {
      assert.ok((ended[`${mode}:succeeded`] ?? 0) > 0, `some ${mode} transactions succeeded`);
      assert.ok((ended[`${mode}:failed`] ?? 0) > 0, `some ${mode} transactions failed`);
    }
  });
});
