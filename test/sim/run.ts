// npm run simulate -- engine|locks|raft [--seeds N] [--first-seed S] [--seed S] [--profile figure8]
// Long runs of the seeded simulations; a failing seed prints itself and replays exactly.
import { runEngineSimulation } from './engine-sim.js';
import { runLockSimulation } from './lock-sim.js';
import { runRaftSimulation } from './raft-sim.js';

const simulations = {
  engine: (seed: number) => runEngineSimulation(seed),
  locks: (seed: number) => runLockSimulation(seed),
  raft: async (seed: number) =>
    runRaftSimulation(seed, { trace: process.argv.includes('--seed'), profile: argument('profile') === 'figure8' ? 'figure8' : 'mixed' }),
};

function argument(name: string): string | undefined {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : undefined;
}

async function main(): Promise<void> {
  const which = process.argv[2];
  if (which !== 'engine' && which !== 'locks' && which !== 'raft') {
    console.error('usage: npm run simulate -- engine|locks|raft [--seeds N] [--first-seed S] [--seed S] [--profile figure8 (raft)]');
    process.exit(2);
  }
  const simulate = simulations[which];
  const single = argument('seed');
  const first = Number(single ?? argument('first-seed') ?? 1);
  const count = single !== undefined ? 1 : Number(argument('seeds') ?? 1000);
  let failed = 0;
  const startedMs = Date.now();
  for (let seed = first; seed < first + count; seed++) {
    const report = await simulate(seed);
    if (single !== undefined) console.log(JSON.stringify(report.stats));
    if (report.violations.length > 0) {
      failed += 1;
      console.log(`seed ${seed}: ${report.violations.length} violations (replay: npm run simulate -- ${which} --seed ${seed})`);
      for (const violation of report.violations.slice(0, 20)) console.log(`  ${violation}`);
      // The raft simulation keeps a trace of its last events when replaying one seed.
      if (single !== undefined && 'trace' in report && Array.isArray(report.trace)) console.log(report.trace.slice(-80).join('\n'));
    }
    if ((seed - first + 1) % 100 === 0) console.log(`${seed - first + 1}/${count} seeds, ${failed} failing, ${((Date.now() - startedMs) / 1000).toFixed(0)} s`);
  }
  console.log(`${which} simulation: ${count} seeds from ${first}, ${failed} failing`);
  process.exit(failed > 0 ? 1 : 0);
}

void main();
