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

export const statusBusinessFailure = 409;
export const statusOngoing = 425;

/**
 * Classifies an HTTP answer: 409 or a FAILURE body is a business refusal; 425 or an ONGOING
 * body means not yet; any other 2xx is success; everything else (5xx, other 4xx) is transient.
 */
export function classifyAnswer(statusCode: number, body: string): BranchOutcome {
  if (statusCode === statusBusinessFailure) return 'failure';
  if (statusCode === statusOngoing) return 'ongoing';
  // As in DTM, a FAILURE or ONGOING body means that whatever the status code.
  const word = resultWordOf(body);
  if (word === resultWords.failure) return 'failure';
  if (word === resultWords.ongoing) return 'ongoing';
  return statusCode >= 200 && statusCode < 300 ? 'success' : 'transient';
}

/** Finds FAILURE/ONGOING in a body: a bare word, or `dtm_result`/`result` in a JSON object. */
function resultWordOf(body: string): string | undefined {
  const trimmed = body.trim();
  if (trimmed.length === 0) return undefined;
  if (trimmed === resultWords.failure || trimmed === resultWords.ongoing) return trimmed;
  if (trimmed[0] !== '{' || (!trimmed.includes(resultWords.failure) && !trimmed.includes(resultWords.ongoing))) {
    return undefined;
  }
  try {
    const parsed: unknown = JSON.parse(trimmed);
    if (parsed && typeof parsed === 'object') {
      const record = parsed as Record<string, unknown>;
      const word = record.dtm_result ?? record.result;
      return typeof word === 'string' ? word : undefined;
    }
  } catch {
    return undefined;
  }
  return undefined;
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
