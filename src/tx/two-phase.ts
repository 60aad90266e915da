// Two-phase commit: prepare on every participant; if all vote yes the commit decision is made
// durable (the phase change below is persisted before any commit call goes out), then commit
// is retried on every participant until each acknowledges. A no vote, the retry limit or the
// deadline during prepare rolls every participant back.
import { enterPhase, onResults, onWake, type PhaseTable } from './phased.js';
import { refuse, unchanged } from './rounds.js';
import type { StepFunction } from './types.js';

export const twoPhaseOps = { prepare: 'prepare', commit: 'commit', rollback: 'rollback' } as const;

const phases: PhaseTable = {
  prepare: { op: 'prepare', status: 'submitted', next: { status: 'submitted', phase: 'commit' }, rollbackTo: 'rollback' },
  commit: { op: 'commit', status: 'submitted', next: { status: 'succeeded', phase: 'done' } },
  rollback: { op: 'rollback', status: 'aborting', next: { status: 'failed', phase: 'done' } },
};

export const stepTwoPhase: StepFunction = (tx, event, ctx) => {
  switch (event.type) {
    case 'submit':
      if (tx.status !== 'prepared') return unchanged(tx);
      return enterPhase(tx, phases, 'prepare', ctx);
    case 'results':
      return onResults(tx, phases, event.results, ctx);
    case 'wake':
      return onWake(tx, phases, ctx);
    case 'abort':
      if (tx.status === 'prepared' || tx.phase === 'prepare') return enterPhase(tx, phases, 'rollback', ctx, event.reason);
      if (tx.status === 'aborting' || tx.status === 'failed') return unchanged(tx);
      return refuse(tx, 'not-allowed-in-status', `cannot abort a 2pc transaction in status ${tx.status}/${tx.phase}: the commit decision is made`);
    case 'register':
      return refuse(tx, 'not-allowed-in-status', '2pc branches are given when the transaction is created');
  }
};
