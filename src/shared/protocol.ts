// The wire conventions shared by the coordinator (which calls branches) and the SDK's
// participant helpers (which answer them). They follow DTM's published protocol so that
// participants written for DTM work unchanged.

/** Query parameters on every branch call (DTM's names). */
export const branchQuery = {
  gid: 'gid',
  transType: 'trans_type',
  branchId: 'branch_id',
  op: 'op',
} as const;

/** Headers on every branch call, for participants that prefer headers to query strings. */
export const branchHeaders = {
  gid: 'tandem-gid',
  transType: 'tandem-trans-type',
  branchId: 'tandem-branch-id',
  op: 'tandem-op',
  /** Which coordinator instance made the call (several may share a store). */
  coordinator: 'tandem-coordinator',
  /**
   * The caller's lease epoch on the transaction: strictly larger after the lease passes to
   * another coordinator (or the holder restarts). A participant that remembers the largest
   * fence seen per gid can refuse a smaller one: a call from a coordinator that lost its lease.
   */
  fence: 'tandem-fence',
} as const;

/** What a branch answer means to the coordinator. */
export type BranchOutcome = 'success' | 'failure' | 'ongoing' | 'transient';

/** Answer bodies, as DTM participants send them. */
export const resultWords = {
  success: 'SUCCESS',
  failure: 'FAILURE',
  ongoing: 'ONGOING',
} as const;

/** The only status that counts as success (DTM's rule): other 2xx answers are retried. */
export const statusSuccess = 200;
export const statusBusinessFailure = 409;
export const statusOngoing = 425;

/**
 * Classifies an HTTP answer exactly as DTM does, in this order: 425 or a body containing
 * ONGOING anywhere means not yet; else 409 or a body containing FAILURE anywhere is a business
 * refusal; else only 200 is success: every other status (201, 204, 3xx, 4xx, 5xx) is a
 * transient error, retried. So `{"dtm_result":"FAILURE"}`, `FAILURE` and
 * `{"error":"… FAILURE"}` all refuse, whatever the status code.
 */
export function classifyAnswer(statusCode: number, body: string): BranchOutcome {
  if (statusCode === statusOngoing || body.includes(resultWords.ongoing)) return 'ongoing';
  if (statusCode === statusBusinessFailure || body.includes(resultWords.failure)) return 'failure';
  return statusCode === statusSuccess ? 'success' : 'transient';
}

/** The op names each mode uses; participants see them in the `op` query parameter. */
export const ops = {
  saga: { action: 'action', compensate: 'compensate' },
  tcc: { try: 'try', confirm: 'confirm', cancel: 'cancel' },
  twoPhase: { prepare: 'prepare', commit: 'commit', rollback: 'rollback' },
  threePhase: { canCommit: 'canCommit', preCommit: 'preCommit', doCommit: 'doCommit', abort: 'abort' },
  xa: { action: 'action', commit: 'commit', rollback: 'rollback' },
  /** A message's steps, and the queryPrepared call (DTM's branch "00", op "msg"). */
  msg: { action: 'action', queryPrepared: 'msg' },
} as const;

/** The branch id a message's queryPrepared call carries, and its barrier row's: DTM's "00". */
export const queryPreparedBranchId = '00';

/** For each undo op, the forward op it undoes; the barrier uses this to spot null compensation and hanging. */
export const undoOf: Readonly<Record<string, string>> = {
  compensate: 'action',
  cancel: 'try',
  rollback: 'prepare',
  abort: 'canCommit',
};
