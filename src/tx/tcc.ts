// TCC: the application opens the transaction (status prepared), registers each branch's
// confirm and cancel before calling its Try itself, then submits (confirm all) or aborts
// (cancel all). A transaction still prepared when timeoutToFailMs passes is cancelled.
import type { PhaseTable } from './phased.js';
import { registeredBranchMachine } from './registered.js';

const phases: PhaseTable = {
  confirm: { op: 'confirm', status: 'submitted', next: { status: 'succeeded', phase: 'done' } },
  cancel: { op: 'cancel', status: 'aborting', next: { status: 'failed', phase: 'done' } },
};

export const stepTcc = registeredBranchMachine({ mode: 'tcc', forward: 'confirm', undo: 'cancel', phases });
