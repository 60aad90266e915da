// The lock service under simulation (test/sim/lock-sim.ts): the real shell and manager on a
// store that fails mid-write, with crashes and restarts. A failing seed prints its replay command.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runLockSimulation } from './sim/lock-sim.js';

const seeds = Number(process.env.TANDEM_LOCK_SIM_SEEDS ?? 500);
const firstSeed = Number(process.env.TANDEM_LOCK_SIM_FIRST_SEED ?? 1);

describe('lock service: seeded simulation', () => {
  it(`${seeds} seeds keep exclusion, fencing order and durability, and end every lease (store failing mid-write, crashes)`, { timeout: 20 * 60_000 }, async () => {
    const totals = { events: 0, grants: 0, crashes: 0, writeFailures: 0, loadFailures: 0, answers503: 0 };
    for (let seed = firstSeed; seed < firstSeed + seeds; seed++) {
      const report = await runLockSimulation(seed);
      if (report.violations.length > 0) {
        assert.fail(`seed ${seed} broke an invariant (replay: npm run simulate -- locks --seed ${seed}):\n  ${report.violations.slice(0, 10).join('\n  ')}`);
      }
      for (const key of Object.keys(totals) as Array<keyof typeof totals>) totals[key] += report.stats[key];
    }
    console.log(`lock simulation: ${seeds} seeds, ${JSON.stringify(totals)}`);
    // The reload path is the point: the run must have gone through it, often.
    assert.ok(totals.writeFailures > seeds, 'store writes failed');
    assert.ok(totals.loadFailures > 0, 'reloads failed and were retried');
    assert.ok(totals.crashes > seeds, 'the service crashed and restarted');
    assert.ok(totals.grants > seeds * 20, 'leases were granted');
  });

  it('without the store’s fail-stop rule, a grant lands beside a live lease: the checks see it', async () => {
    let found = 0;
    for (let seed = 1; seed <= 60 && found === 0; seed++) {
      const report = await runLockSimulation(seed, { failStop: false });
      if (report.violations.length > 0) found = seed;
    }
    assert.ok(found > 0, 'some seed of the first 60 breaks exclusion when later writes land after a failed one');
  });
});
