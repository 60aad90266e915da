// Three-phase commit: canCommit (a vote), preCommit (everyone learns the vote was yes), then
// doCommit. A participant that acknowledged preCommit and then hears nothing commits on its
// own timeout (the participant helper does that), so the coordinator only ever moves forward
// after preCommit is acknowledged by all. Before that, a refusal, the retry limit or the
// deadline aborts. Under a network partition this can still diverge: see the README.
import { enterPhase, onResults, onWake, type PhaseTable } from './phased.js';
import { refuse, unchanged } from './rounds.js';
import type { StepFunction } from './types.js';

export const threePhaseOps = { canCommit: 'canCommit', preCommit: 'preCommit', doCommit: 'doCommit', abort: 'abort' } as const;

const phases: PhaseTable = {
  canCommit: { op: 'canCommit', status: 'submitted', next: { status: 'submitted', phase: 'preCommit' }, rollbackTo: 'abort' },
  preCommit: { op: 'preCommit', status: 'submitted', next: { status: 'submitted', phase: 'doCommit' }, rollbackTo: 'abort' },
  doCommit: { op: 'doCommit', status: 'submitted', next: { status: 'succeeded', phase: 'done' } },
  abort: { op: 'abort', status: 'aborting', next: { status: 'failed', phase: 'done' } },
};

export const stepThreePhase: StepFunction = (tx, event, ctx) => {
  switch (event.type) {
    case 'submit':
      if (tx.status !== 'prepared') return unchanged(tx);
      return enterPhase(tx, phases, 'canCommit', ctx);
    case 'results':
      return onResults(tx, phases, event.results, ctx);
    case 'wake':
      return onWake(tx, phases, ctx);
    case 'abort':
      if (tx.status === 'prepared' || tx.phase === 'canCommit' || tx.phase === 'preCommit') {
        return enterPhase(tx, phases, 'abort', ctx, event.reason);
      }
      if (tx.status === 'aborting' || tx.status === 'failed') return unchanged(tx);
      return refuse(tx, 'not-allowed-in-status', `cannot abort a 3pc transaction in phase ${tx.phase}: doCommit is decided`);
    case 'register':
      return refuse(tx, 'not-allowed-in-status', '3pc branches are given when the transaction is created');
  }
};
