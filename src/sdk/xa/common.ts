// What the PostgreSQL and MariaDB XA participants share: the xid scheme, the limits, the
// answers, the HTTP handler and in-doubt recovery. The backends only say how their database
// prepares, commits, rolls back and lists prepared transactions.
//
// The protocol, seen from one branch:
//   action   (called by the app)          local transaction + barrier row (op 'action'), then
//                                          PREPARE: the work survives crashes, undecided.
//   commit   (coordinator, after submit)  COMMIT the prepared xid; retried until 2xx.
//   rollback (coordinator, after abort)   ROLLBACK the prepared xid, then commit a barrier row
//                                          (op 'action', reason 'rollback') so an action that
//                                          arrives later (hanging) collides with it and fails.
// The barrier row is what orders a rollback against an action that is still running: both
// insert the same unique key, so the later one waits for (or collides with) the earlier one.
import { TandemApiError, TandemClient } from '../client.js';
import type { BranchRef } from '../barrier.js';
import { BusinessFailure, routeByOp, type BranchRequest, type Handler } from '../participant.js';
import type { TxStatus } from '../../shared/views.js';
import { ops } from '../../shared/protocol.js';

/** The op names an XA branch sees in its `op` query parameter. */
export const xaOps = ops.xa;

/** The trans_type written on barrier rows and used for branches built by recovery. */
export const xaTransType = 'xa';

// ---------------------------------------------------------------------------------------------
// Limits (each has a name with its unit last and a default)

export const defaultXidPrefix = 'tandem';
/** The prefix is part of every xid, and both databases bound xid lengths: keep it short. */
export const xidPrefixBytesMax = 32;
/**
 * PostgreSQL keeps a prepared transaction's identifier in a 200-byte buffer with its
 * terminating NUL (GIDSIZE), so at most 199 bytes: `<prefix>/<gid>/<branchId>`.
 */
export const postgresXidBytesMax = 199;
/** MySQL/MariaDB XA: gtrid `<prefix>/<gid>` at most 64 bytes (MAXGTRIDSIZE). */
export const mysqlGtridBytesMax = 64;
/** MySQL/MariaDB XA: bqual `<branchId>` at most 64 bytes (MAXBQUALSIZE). */
export const mysqlBqualBytesMax = 64;
/**
 * How long a barrier-row insert may wait for a row held by another transaction (a running
 * action, a prepared xid, a concurrent rollback) before the call answers "ongoing". MySQL
 * counts lock waits in whole seconds, so there it is rounded up.
 */
export const barrierLockWaitMsDefault = 1000;
export const barrierLockWaitMsMax = 60_000;
/** Prepared xids handled in one recovery pass; the rest wait for the next pass. */
export const recoveryXidsMaxDefault = 1000;
/** Time between recovery passes of `startRecoveryLoop`. */
export const recoveryIntervalMsDefault = 30_000;
/** Time allowed for one status request to the coordinator during recovery. */
export const statusRequestTimeoutMsDefault = 5000;

/** gid and branchId: the coordinator's own alphabet, which needs no quoting inside an SQL literal. */
const xidPartPattern = /^[A-Za-z0-9_.:-]+$/;
/** The prefix may not contain the separator characters '.', ':', '-' either, only [A-Za-z0-9_]. */
const xidPrefixPattern = /^[A-Za-z0-9_]+$/;
/** Separates prefix, gid and branchId; outside the gid alphabet, so the split is unambiguous. */
export const xidSeparator = '/';

// ---------------------------------------------------------------------------------------------
// Types

export type XaOptions = {
  /** Marks this participant's xids; default `tandem`. Only [A-Za-z0-9_], at most 32 bytes. */
  xidPrefix?: string;
  /** Barrier table (same schema as the TCC/saga barrier); default `tandem_barrier`. */
  tableName?: string;
  /** Default `barrierLockWaitMsDefault` (1000 ms); from 1 to `barrierLockWaitMsMax`. */
  barrierLockWaitMs?: number;
  /**
   * Told about answers that are given but should not happen in a correct flow (a commit for
   * a branch that never prepared). Default: console.warn.
   */
  onAnomaly?: (message: string, branch: BranchRef) => void;
};

/** What `local` did: prepared now, or skipped (the branch prepared before, or its rollback came first). */
export type XaLocalResult<T> = { applied: true; value: T } | { applied: false; reason: 'duplicate' | 'hanging' };

/**
 * committed: the prepared xid was committed now. already-committed: an earlier commit did.
 * not-prepared: nothing was prepared and nothing committed (reported as an anomaly: a durable
 * commit decision comes only after every action succeeded).
 */
export type XaCommitResult = 'committed' | 'already-committed' | 'not-prepared';

/**
 * rolled-back: a prepared xid was rolled back now. already-rolled-back: an earlier rollback
 * did all there was to do. not-prepared: nothing was prepared; the action, should it come
 * later, now fails.
 */
export type XaRollbackResult = 'rolled-back' | 'already-rolled-back' | 'not-prepared';

/** A coordinator's answer about a gid: its status, or that it never recorded the gid. */
export type DecisionStatus = TxStatus | 'not-found';
export type StatusOf = (gid: string) => Promise<DecisionStatus>;

export type RecoveryCounts = { committed: number; rolledBack: number; leftInDoubt: number };

export type RecoveryOptions = {
  /** Default `recoveryXidsMaxDefault` (1000). */
  xidsMax?: number;
  /** Told about each xid left in doubt because of an error (status lookup, commit, rollback). */
  onError?: (error: unknown, xid: string) => void;
};

export type RecoveryLoopOptions = RecoveryOptions & {
  /** Default `recoveryIntervalMsDefault` (30 s). */
  intervalMs?: number;
  /** Told about each finished pass. */
  onPass?: (counts: RecoveryCounts) => void;
};

export interface RecoveryLoop {
  /** Stops the loop; resolves once a pass in progress has finished. */
  stop(): Promise<void>;
}

/** One xid found prepared in the database; `branch` is absent when it carries our prefix but cannot be parsed. */
export type PreparedXid = { xid: string; branch?: { gid: string; branchId: string } };

/** A gid, branch id or prefix that cannot form a valid xid; `field` names which. */
export class InvalidXid extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = 'InvalidXid';
    this.field = field;
  }
}

/** The coordinator asked for something its own decisions rule out (a rollback after a commit). */
export class XaProtocolViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'XaProtocolViolation';
  }
}

/** An insert into the barrier waited longer than `barrierLockWaitMs`: some other transaction holds the row. */
export class BarrierRowBusy extends Error {
  constructor(branch: BranchRef, lockWaitMs: number) {
    super(`the barrier row of gid ${branch.gid} branch ${branch.branchId} is held by another transaction (waited ${lockWaitMs} ms)`);
    this.name = 'BarrierRowBusy';
  }
}

// ---------------------------------------------------------------------------------------------
// The xid scheme

export function validXidPrefix(prefix: string | undefined): string {
  const value = prefix ?? defaultXidPrefix;
  if (!xidPrefixPattern.test(value)) {
    throw new InvalidXid('xidPrefix', `xidPrefix must be letters, digits and _ only, got ${JSON.stringify(value)}`);
  }
  if (Buffer.byteLength(value, 'utf8') > xidPrefixBytesMax) {
    throw new InvalidXid('xidPrefix', `xidPrefix must be at most ${xidPrefixBytesMax} bytes (xidPrefixBytesMax), got ${value.length}`);
  }
  return value;
}

/** Checks a gid or branch id against the xid alphabet, which is what keeps SQL literals safe. */
export function assertXidPart(field: 'gid' | 'branchId', value: string): void {
  if (!xidPartPattern.test(value)) {
    throw new InvalidXid(field, `${field} ${JSON.stringify(value)} cannot be part of an xid: only letters, digits and _ . : - are allowed`);
  }
}

export function assertXidBytes(field: string, value: string, bytesMax: number, limitName: string): void {
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > bytesMax) {
    throw new InvalidXid(field, `${field} ${JSON.stringify(value)} is ${bytes} bytes; the database allows ${bytesMax} (${limitName})`);
  }
}

/**
 * Quotes an xid part validated by `assertXidPart`/`validXidPrefix`. Their alphabets exclude
 * quotes and backslashes; the check is repeated here so that no unchecked text reaches SQL.
 */
export function xidLiteral(value: string): string {
  if (!/^[A-Za-z0-9_.:/-]+$/.test(value)) throw new InvalidXid('xid', `refusing to put ${JSON.stringify(value)} into SQL`);
  return `'${value}'`;
}

/** Splits `<gid>` + separator + `<branchId>` style text back into its parts, or undefined. */
export function splitXidParts(text: string, expectedParts: number): string[] | undefined {
  const parts = text.split(xidSeparator);
  if (parts.length !== expectedParts || parts.some((part) => !xidPartPattern.test(part))) return undefined;
  return parts;
}

export function validLockWaitMs(lockWaitMs: number | undefined): number {
  const value = lockWaitMs ?? barrierLockWaitMsDefault;
  if (!Number.isInteger(value) || value < 1 || value > barrierLockWaitMsMax) {
    throw new RangeError(`barrierLockWaitMs must be a whole number from 1 to ${barrierLockWaitMsMax}, got ${value}`);
  }
  return value;
}

function reportAnomaly(message: string, branch: BranchRef): void {
  console.warn(`tandem xa: ${message} (gid ${branch.gid}, branch ${branch.branchId})`);
}

// ---------------------------------------------------------------------------------------------
// The shared participant

/**
 * The part of an XA participant that does not depend on the database. `Tx` is the driver's
 * handle on the local transaction that the action's work runs in.
 */
export abstract class XaParticipant<Tx> {
  readonly xidPrefix: string;
  readonly barrierLockWaitMs: number;
  protected readonly onAnomaly: (message: string, branch: BranchRef) => void;

  constructor(options: XaOptions) {
    this.xidPrefix = validXidPrefix(options.xidPrefix);
    this.barrierLockWaitMs = validLockWaitMs(options.barrierLockWaitMs);
    this.onAnomaly = options.onAnomaly ?? reportAnomaly;
  }

  /** Creates the barrier table if it is missing. */
  abstract ensureSchema(): Promise<void>;

  /**
   * The op=action body: runs `fn` in a local transaction with the branch's barrier row, then
   * prepares it. A throw before the prepare rolls everything back and is rethrown. A lock
   * wait on the barrier row beyond `barrierLockWaitMs` throws `Ongoing`.
   */
  abstract local<T>(branch: BranchRef, fn: (tx: Tx) => Promise<T>): Promise<XaLocalResult<T>>;

  /** The op=commit body; idempotent. Throws `Ongoing` while the action's transaction still runs. */
  abstract commit(branch: BranchRef): Promise<XaCommitResult>;

  /** The op=rollback body; idempotent. Throws `Ongoing` while the action's transaction still runs. */
  abstract rollback(branch: BranchRef): Promise<XaRollbackResult>;

  /** This participant's prepared xids (by prefix), oldest first where the database knows, at most `xidsMax`. */
  abstract listPrepared(xidsMax?: number): Promise<PreparedXid[]>;

  /** The xid `local` prepares for a branch, as the database shows it (e.g. in pg_prepared_xacts). */
  abstract xidOf(branch: { gid: string; branchId: string }): string;

  /**
   * A participant handler for op=commit and op=rollback, plus op=action when `action` is
   * given. Serve it with createParticipant and any adapter in participant.ts.
   */
  handler(action?: (tx: Tx, request: BranchRequest) => Promise<unknown>): Handler {
    const routes: Record<string, Handler> = {
      [xaOps.commit]: async (request) => ({ xa: await this.commit(request.branch) }),
      [xaOps.rollback]: async (request) => ({ xa: await this.rollback(request.branch) }),
    };
    if (action) routes[xaOps.action] = (request) => this.serveAction(request, action);
    return routeByOp(routes);
  }

  private async serveAction(request: BranchRequest, action: (tx: Tx, request: BranchRequest) => Promise<unknown>): Promise<unknown> {
    let result: XaLocalResult<unknown>;
    try {
      result = await this.local(request.branch, (tx) => action(tx, request));
    } catch (error) {
      // A branch that cannot have an xid can never prepare: refuse it so the app aborts.
      if (error instanceof InvalidXid) throw new BusinessFailure(error.message);
      throw error;
    }
    if (result.applied) return result.value;
    if (result.reason === 'hanging') {
      throw new BusinessFailure(`action refused: the rollback of gid ${request.branch.gid} branch ${request.branch.branchId} already ran`);
    }
    return undefined;
  }

  /**
   * Resolves this participant's prepared xids by the coordinator's durable decision:
   * submitted/succeeded → commit; aborting/failed → rollback; not-found → rollback (the
   * coordinator never recorded the gid, so it can never decide commit); prepared (undecided)
   * or an error → left in doubt. `coordinator` is its base URL or a status function.
   */
  async recoverInDoubt(coordinator: string | StatusOf, options: RecoveryOptions = {}): Promise<RecoveryCounts> {
    const statusOf = typeof coordinator === 'string' ? coordinatorStatusOf(coordinator) : coordinator;
    const counts: RecoveryCounts = { committed: 0, rolledBack: 0, leftInDoubt: 0 };
    const statusByGid = new Map<string, Promise<DecisionStatus>>();
    for (const prepared of await this.listPrepared(options.xidsMax ?? recoveryXidsMaxDefault)) {
      const outcome = await this.resolveOne(prepared, statusOf, statusByGid).catch((error: unknown) => {
        options.onError?.(error, prepared.xid);
        return 'leftInDoubt' as const;
      });
      counts[outcome] += 1;
    }
    return counts;
  }

  private async resolveOne(
    prepared: PreparedXid,
    statusOf: StatusOf,
    statusByGid: Map<string, Promise<DecisionStatus>>,
  ): Promise<keyof RecoveryCounts> {
    if (!prepared.branch) return 'leftInDoubt';
    const { gid, branchId } = prepared.branch;
    // One question per gid and pass, however many of its branches this database holds.
    let status = statusByGid.get(gid);
    if (!status) {
      status = statusOf(gid);
      statusByGid.set(gid, status);
    }
    const decision = decisionOf(await status);
    if (decision === 'commit') {
      await this.commit({ gid, branchId, op: xaOps.commit, transType: xaTransType });
      return 'committed';
    }
    if (decision === 'rollback') {
      await this.rollback({ gid, branchId, op: xaOps.rollback, transType: xaTransType });
      return 'rolledBack';
    }
    return 'leftInDoubt';
  }

  /** Runs `recoverInDoubt` now and then every `intervalMs` until stopped; passes never overlap. */
  startRecoveryLoop(coordinator: string | StatusOf, options: RecoveryLoopOptions = {}): RecoveryLoop {
    const intervalMs = options.intervalMs ?? recoveryIntervalMsDefault;
    if (!Number.isInteger(intervalMs) || intervalMs < 1) throw new RangeError(`intervalMs must be a positive whole number, got ${intervalMs}`);
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    let pass: Promise<void> = Promise.resolve();
    const runPass = (): void => {
      pass = this.recoverInDoubt(coordinator, options)
        .then((counts) => options.onPass?.(counts))
        .catch((error: unknown) => options.onError?.(error, ''))
        .finally(() => {
          if (stopped) return;
          timer = setTimeout(runPass, intervalMs);
          // The loop must not keep an otherwise finished process alive.
          timer.unref();
        });
    };
    runPass();
    return {
      stop: async () => {
        stopped = true;
        clearTimeout(timer);
        await pass;
      },
    };
  }
}

function decisionOf(status: DecisionStatus): 'commit' | 'rollback' | 'wait' {
  switch (status) {
    case 'submitted':
    case 'succeeded':
      return 'commit';
    case 'aborting':
    case 'failed':
    case 'not-found':
      return 'rollback';
    default:
      return 'wait';
  }
}

/**
 * A StatusOf asking a Tandem coordinator (`GET /v1/transactions/:gid`). Only the
 * coordinator's own not-found problem counts as not-found: a 404 from some other server (a
 * wrong URL) must not roll back branches whose decision may be commit.
 */
export function coordinatorStatusOf(url: string, options: { requestTimeoutMs?: number } = {}): StatusOf {
  const client = new TandemClient({ url, requestTimeoutMs: options.requestTimeoutMs ?? statusRequestTimeoutMsDefault });
  return async (gid) => {
    try {
      const tx = await client.get(gid);
      return tx.status;
    } catch (error) {
      if (isCoordinatorNotFound(error, gid)) return 'not-found';
      throw error;
    }
  };
}

/**
 * Only the coordinator's own "no such transaction" for this very gid: a wrong base URL (no
 * route) or a proxy's 404 must not read as "never recorded", which would roll work back.
 */
function isCoordinatorNotFound(error: unknown, gid: string): boolean {
  if (!(error instanceof TandemApiError) || error.status !== 404 || typeof error.problem !== 'object') return false;
  return error.problem.type === 'urn:tandem:problem:not-found' && error.problem.detail === `no transaction has gid ${gid}`;
}


// ---------------------------------------------------------------------------------------------
// Small helpers for the backends

/** What a commit found when no prepared xid was left: the reason on the action's barrier row, if any. */
export function commitWithoutPrepared(reason: string | undefined, branch: BranchRef, onAnomaly: (message: string, branch: BranchRef) => void): XaCommitResult {
  if (reason === xaOps.action) return 'already-committed';
  // A durable commit decision comes only after every action answered success, so neither
  // case below happens in a correct flow. Refusing would make the coordinator retry forever
  // with nothing left to commit; answering success and saying so loudly is the useful choice.
  const what = reason === xaOps.rollback ? 'its rollback already ran' : 'its action never prepared';
  onAnomaly(`commit answered success although nothing was committed: ${what}`, branch);
  return 'not-prepared';
}
