// Whole Raft clusters of the pure core under the seeded simulation (test/sim/raft-sim.ts):
// lossy, duplicating, reordering network with one-way and two-way partitions, disks that lose
// unfinished writes on a crash, pauses past the election timeout, transfers, compaction and
// membership changes. A failing seed prints its replay command and the tail of its trace.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runRaftSimulation, type RaftSimReport } from './sim/raft-sim.js';

const seeds = Number(process.env.TANDEM_RAFT_SIM_SEEDS ?? 500);
const firstSeed = Number(process.env.TANDEM_RAFT_SIM_FIRST_SEED ?? 1);

function failure(seed: number, report: RaftSimReport): string {
  const replay = runRaftSimulation(seed, { trace: true });
  return `seed ${seed} broke an invariant (replay: npm run simulate -- raft --seed ${seed}):\n  ${report.violations.slice(0, 10).join('\n  ')}\n  last events:\n    ${replay.trace.slice(-30).join('\n    ')}`;
}

describe('raft core: seeded cluster simulation', () => {
  it(`${seeds} seeds keep election safety, log matching, leader completeness, state machine safety, linearizable reads and every acknowledged write`, { timeout: 20 * 60_000 }, () => {
    const totals: RaftSimReport['stats'] = {
      events: 0, messages: 0, elections: 0, committed: 0, acked: 0, reads: 0, leaseReads: 0, crashes: 0,
      pauses: 0, partitions: 0, snapshotsSent: 0, compactions: 0, transfers: 0, confChanges: 0,
    };
    for (let seed = firstSeed; seed < firstSeed + seeds; seed++) {
      const report = runRaftSimulation(seed);
      if (report.violations.length > 0) assert.fail(failure(seed, report));
      for (const key of Object.keys(totals) as Array<keyof typeof totals>) totals[key] += report.stats[key];
    }
    console.log(`raft simulation: ${seeds} seeds, ${JSON.stringify(totals)}`);
    // The faults and features are the point: the runs must have gone through them, often.
    assert.ok(totals.elections > seeds * 3, 'leaders changed');
    assert.ok(totals.acked > seeds * 50, 'proposals were acknowledged');
    assert.ok(totals.reads > seeds * 20, 'reads were answered');
    assert.ok(totals.crashes > seeds * 3 && totals.pauses > seeds && totals.partitions > seeds * 2, 'faults were injected');
    assert.ok(totals.snapshotsSent > 0 && totals.compactions > seeds, 'logs were compacted and snapshots sent');
    assert.ok(totals.confChanges > 0 && totals.transfers > 0, 'membership changed and leadership moved');
  });

  const figure8Seeds = Number(process.env.TANDEM_RAFT_SIM_FIGURE8_SEEDS ?? 100);
  it(`${figure8Seeds} seeds of the figure-8 profile (five voters, leaders killed soon after they win) keep every invariant`, () => {
    for (let seed = firstSeed; seed < firstSeed + figure8Seeds; seed++) {
      const report = runRaftSimulation(seed, { profile: 'figure8' });
      if (report.violations.length > 0) assert.fail(`seed ${seed} (replay: npm run simulate -- raft --profile figure8 --seed ${seed}):\n  ${report.violations.slice(0, 10).join('\n  ')}`);
    }
  });

  // Each of these breaks one rule on purpose; the same checks must notice within a few seeds.
  const firstFailing = (options: Parameters<typeof runRaftSimulation>[1], seedsMax: number): number => {
    for (let seed = 1; seed <= seedsMax; seed++) if (runRaftSimulation(seed, options).violations.length > 0) return seed;
    return 0;
  };

  it('granting votes without the up-to-date check loses committed entries: the checks see it', () => {
    assert.ok(firstFailing({ mutations: { skipUpToDateCheck: true } }, 50) > 0);
  });

  it('answering a read index without the quorum heartbeat round returns stale reads: the checks see it', () => {
    assert.ok(firstFailing({ mutations: { readWithoutQuorum: true } }, 200) > 0);
  });

  it('committing an earlier term’s entry by counting replicas (no current-term rule) loses it: the figure-8 profile sees it', () => {
    assert.ok(firstFailing({ profile: 'figure8', mutations: { commitOlderTerms: true } }, 200) > 0);
  });

  it('lease reads rest on clocks: when a pause stops a leader’s clock, a lease read goes stale', () => {
    assert.ok(firstFailing({ pausesStopClock: true }, 300) > 0);
  });
});
