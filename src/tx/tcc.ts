// TCC: the application opens the transaction (status prepared), registers each branch's
// confirm and cancel before calling its Try itself, then submits (confirm all) or aborts
// (cancel all). A transaction still prepared when timeoutToFailMs passes is cancelled. As in
// DTM, confirms and cancels go one branch at a time, the last registered first (a later Try may
// rely on an earlier one, so it is undone first), unless the transaction is concurrent.
import type { PhaseTable } from './phased.js';
import { registeredBranchMachine } from './registered.js';

const phases: PhaseTable = {
  confirm: { op: 'confirm', status: 'submitted', next: { status: 'succeeded', phase: 'done' }, order: 'reverse' },
  cancel: { op: 'cancel', status: 'aborting', next: { status: 'failed', phase: 'done' }, order: 'reverse' },
};

export const stepTcc = registeredBranchMachine({ mode: 'tcc', forward: 'confirm', undo: 'cancel', phases });
