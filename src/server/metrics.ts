// Prometheus metrics (prom-client) on their own registry, so several coordinators in one
// process (tests) do not collide.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineObserver } from '../tx/engine.js';
import type { CommitObservation } from '../store/store.js';

export class Metrics {
  readonly registry = new Registry();
  private readonly txEndedTotal = new Counter({
    name: 'tandem_transactions_ended_total',
    help: 'Transactions that reached an end, by mode and outcome',
    labelNames: ['mode', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly branchCallSeconds = new Histogram({
    name: 'tandem_branch_call_duration_seconds',
    help: 'Latency of branch calls, by mode, op and outcome',
    labelNames: ['mode', 'op', 'outcome'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly retriesTotal = new Counter({
    name: 'tandem_retries_scheduled_total',
    help: 'Rounds that ended without settling every call, so a retry was scheduled, by mode',
    labelNames: ['mode'] as const,
    registers: [this.registry],
  });
  private readonly purgedTotal = new Counter({
    name: 'tandem_transactions_purged_total',
    help: 'Finished transactions deleted by the retention (finishedRetentionMs), with their branches and history',
    registers: [this.registry],
  });
  private readonly storeCommitSeconds = new Histogram({
    name: 'tandem_store_commit_duration_seconds',
    help: 'Duration of one group commit to the store',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
    registers: [this.registry],
  });
  private readonly storeBatchSize = new Histogram({
    name: 'tandem_store_commit_batch_size',
    help: 'Writes sharing one group commit',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    registers: [this.registry],
  });

  /** Host wall clock minus the store's clock, as last measured (see clockDriftMsMax). */
  readonly clockDriftMs = new Gauge({
    name: 'tandem_clock_drift_ms',
    help: "This coordinator's wall clock minus the store's clock, in ms, at the last measurement",
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'tandem_' });
  }

  readonly engineObserver: EngineObserver = {
    txEnded: (mode, status) => this.txEndedTotal.inc({ mode, outcome: status }),
    branchCalled: (mode, op, outcome, durationMs) => this.branchCallSeconds.observe({ mode, op, outcome }, durationMs / 1000),
    retryScheduled: (mode) => this.retriesTotal.inc({ mode }),
    purged: (count) => this.purgedTotal.inc(count),
  };

  observeCommit = (observation: CommitObservation): void => {
    this.storeCommitSeconds.observe(observation.durationMs / 1000);
    this.storeBatchSize.observe(observation.batchSize);
  };
}
