// XA: the application opens the transaction (status prepared) and, for each branch, registers
// it and then calls it with op=action; the participant runs its local work inside a database
// XA transaction and prepares it (PREPARE TRANSACTION / XA PREPARE) before answering. The
// coordinator drives phase two: on submit it records the commit decision and calls op=commit
// on every branch; on abort, or when the deadline passes first, op=rollback. Neither op may
// fail, so both are retried until acknowledged; a participant that crashed keeps its prepared
// transaction and finds it again (pg_prepared_xacts, XA RECOVER) to apply the durable decision.
// As in DTM, commits and rollbacks go one branch at a time in registration order, unless the
// transaction is concurrent.
import type { PhaseTable } from './phased.js';
import { registeredBranchMachine } from './registered.js';

const phases: PhaseTable = {
  commit: { op: 'commit', status: 'submitted', next: { status: 'succeeded', phase: 'done' }, order: 'registration' },
  rollback: { op: 'rollback', status: 'aborting', next: { status: 'failed', phase: 'done' }, order: 'registration' },
};

export const stepXa = registeredBranchMachine({ mode: 'xa', forward: 'commit', undo: 'rollback', phases });
