// Three-phase commit: canCommit (a vote), preCommit (everyone learns the vote was yes), then
// doCommit. A participant that acknowledged preCommit and then hears nothing commits on its
// own timeout (the participant helper does that). For that never to contradict the
// coordinator, the commit decision is the move to preCommit: the phase change is persisted
// before any preCommit call goes out, and from then on the only way is forward. preCommit is
// retried until every participant acknowledges it (no deadline, no retry limit, an answer of
// FAILURE is retried like a transient error: the participant already voted yes, so a refusal
// now is a protocol error, not a vote), and an abort is refused. Only canCommit, the vote, may
// end in abort: a refusal, the retry limit or the deadline there.
import { enterPhase, onResults, onWake, type PhaseTable } from './phased.js';
import { refuse, unchanged } from './rounds.js';
import type { StepFunction } from './types.js';

export const threePhaseOps = { canCommit: 'canCommit', preCommit: 'preCommit', doCommit: 'doCommit', abort: 'abort' } as const;

const phases: PhaseTable = {
  canCommit: { op: 'canCommit', status: 'submitted', next: { status: 'submitted', phase: 'preCommit' }, rollbackTo: 'abort' },
  // No rollbackTo: a participant may already have acknowledged preCommit and be counting down
  // to its own commit, so aborting here could split the outcome.
  preCommit: { op: 'preCommit', status: 'submitted', next: { status: 'submitted', phase: 'doCommit' } },
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
      if (tx.status === 'prepared' || tx.phase === 'canCommit') return enterPhase(tx, phases, 'abort', ctx, event.reason);
      if (tx.status === 'aborting' || tx.status === 'failed') return unchanged(tx);
      return refuse(tx, 'not-allowed-in-status', `cannot abort a 3pc transaction in phase ${tx.phase}: the commit decision was made when preCommit began (participants that acknowledged preCommit may already have committed)`);
    case 'register':
      return refuse(tx, 'not-allowed-in-status', '3pc branches are given when the transaction is created');
  }
};
