// Every limit and default of the coordinator, by name with its unit last. Each can be set
// through the environment as TANDEM_<NAME_IN_UPPER_SNAKE_CASE>, e.g. TANDEM_PAYLOAD_BYTES_MAX.
// The README's configuration table lists them; keep the two in step.

export const limitDefaults = {
  /** Largest request body the API accepts. */
  requestBodyBytesMax: 1024 * 1024,
  /**
   * Deepest nesting of arrays and objects in a JSON request body. Checked on the raw text
   * before parsing, so nothing recursive (validation, JSON.stringify, the stores) ever sees a
   * body deep enough to overflow the stack.
   */
  jsonDepthMax: 64,
  /** Largest payload of one branch. */
  payloadBytesMax: 64 * 1024,
  /** Branches in one transaction. */
  branchCountMax: 100,
  /** Transactions in one POST /v1/transactions/batch. */
  batchTransactionsMax: 500,
  /** Total size of the headers passed to branches (names plus values). */
  branchHeadersBytesMax: 8 * 1024,
  gidLengthMax: 128,
  branchIdLengthMax: 64,
  urlLengthMax: 2048,
  /** Longest timeoutToFailMs a transaction may ask for (7 days). */
  timeoutToFailMsMax: 7 * 24 * 3600 * 1000,
  requestTimeoutMsMax: 5 * 60 * 1000,
  /** Longest hold a message may ask for before its steps are delivered (DTM's custom_data delay; 7 days). */
  messageDelayMsMax: 7 * 24 * 3600 * 1000,
  retryIntervalMsMin: 10,
  /** Cap of the exponential backoff between retries. */
  retryIntervalMsMax: 60 * 1000,
  retryLimitMax: 100_000,
  /** Longest a client may wait for a transaction's end in one request. */
  resultWaitMsMax: 60 * 1000,
  /** Result long polls waiting at once; beyond it they answer 503. */
  resultWaitersMax: 10_000,
  /** Items per page in list calls. */
  listLimitMax: 100,
  /** Transactions worked on at once; beyond it creation answers 503 and recovery waits. */
  activeTransactionsMax: 20_000,
  /** How often the store is scanned for due retries, deadlines and work left by a crash. */
  recoveryIntervalMs: 1000,
  recoveryBatchMax: 500,
  /** The lease an instance holds on a transaction it works on, renewed every third of it while calls are in flight. */
  leaseMs: 10_000,
  /** How long SIGTERM waits for rounds in flight to end (and give up their leases) before the process exits. */
  shutdownDrainMs: 10_000,
  /** A coordinator whose wall clock differs from the store's by more than this says so (log and metric). */
  clockDriftMsMax: 1000,
  /** How often a coordinator records in the store that it is alive. */
  heartbeatIntervalMs: 1000,
  /** A coordinator silent this long is dead; its share of recovery work moves to the others. */
  instanceTtlMs: 5000,
  /**
   * Finished (succeeded or failed) transactions are deleted, with their branches and history,
   * this long after they finished (7 days); 0 keeps them all. A gid is free to reuse once its
   * transaction is deleted, so keep this longer than any client retries a create.
   */
  finishedRetentionMs: 7 * 24 * 3600 * 1000,
  /** Finished transactions one purge batch deletes at most (one store statement or script). */
  purgeBatchMax: 500,
  /** How often each coordinator runs one purge batch: up to purgeBatchMax per purgeIntervalMs. */
  purgeIntervalMs: 1000,
  /** Connections from one coordinator to a PostgreSQL store. */
  postgresPoolSizeMax: 16,
  /**
   * Group commits to PostgreSQL in flight at once. One is fastest here: writes queue while it
   * runs and go out together in the next (measured: 1433 sagas/s at 1, 1097 at 8, 743 at 16).
   */
  postgresFlushesInFlightMax: 1,
  /** Time to reach a PostgreSQL or Redis store before it counts as unavailable (503). */
  storeConnectTimeoutMs: 3000,
  /** Longest one PostgreSQL query or Redis command may take before the store counts as unavailable (503). */
  storeCommandTimeoutMs: 5000,
  /** Services in the registry. */
  servicesMax: 1000,
  /** Registered instances of one service. */
  instancesPerServiceMax: 1000,
  /** Shortest and longest TTL of a service registration (instances heartbeat within it). */
  registrationTtlMsMin: 1000,
  registrationTtlMsMax: 300_000,
  /** Instances one branch call may try when connections to them fail. */
  failoverAttemptsMax: 3,
  /** Keep-alive connections per participant origin. */
  connectionsPerOriginMax: 256,
  /** Part of a branch's answer kept for classification and error detail. */
  answerBytesMax: 64 * 1024,
  /** Message-step publishes awaiting a broker confirm at once, per broker connection. */
  publishesInFlightMax: 256,
  /** Longest lock name, in characters (owner labels share it). */
  lockNameLengthMax: 256,
  /** Shortest and longest TTL of a lease or a lock session. */
  lockTtlMsMin: 100,
  lockTtlMsMax: 10 * 60 * 1000,
  /** Longest one acquire request may wait in a lock's queue. */
  lockWaitMsMax: 5 * 60 * 1000,
  lockWaitersPerLockMax: 1000,
  /** Leases held at once over all locks; beyond it acquire answers 503. */
  lockLeasesMax: 100_000,
  lockSessionsMax: 10_000,
  /** Largest permit count of a counting semaphore. */
  lockPermitsMax: 10_000,
  /**
   * Shared stores (PostgreSQL, Redis): the longest a queued acquire goes without its lock being
   * re-checked in the store, the bound on a lost wake-up notification.
   */
  lockRecheckMs: 1000,
  /** Shared stores: how often a coordinator tells the store it is alive. */
  lockCoordinatorHeartbeatMs: 1000,
  /** Shared stores: requests queued through a coordinator silent this long (store clock) are dropped. */
  lockCoordinatorLivenessMs: 3000,
  /** Shared stores: lock requests for one name that share one store change at most. */
  lockEventsPerChangeMax: 256,
  /** Redis store: reads and decisions one lock change may take while other coordinators keep changing that lock. */
  lockCasAttemptsMax: 50,
  /** Shared stores: longest a coordinator's copy of the service registry lags the store. */
  registrySyncMs: 1000,
  /** Key-value store: key length in UTF-8 bytes, value size as JSON text, keys in all, items per list page. */
  kvKeyBytesMax: 512,
  kvValueBytesMax: 64 * 1024,
  kvKeysMax: 1_000_000,
  kvListLimitMax: 1000,
  /** Operator actions (force-stop, retry-now) kept in memory for GET /v1/audit; older ones stay only in the audit file. */
  auditEntriesMax: 10_000,
  /** Longest reason an operator may give for an action, in characters. */
  operatorReasonLengthMax: 1000,
  /** Unfinished transactions one GET /v1/stuck reads at most (newest first), so it stays fast on a large store. */
  stuckScanMax: 2000,
  /** The lease a worker holds on a workflow it runs; every step it records and every heartbeat renews it. */
  workflowLeaseMs: 15_000,
  /** Longest one claim request (a worker asking for work) may wait. */
  workflowClaimWaitMsMax: 60_000,
  /** Claim requests waiting at once; beyond it they answer 503. */
  workflowClaimWaitersMax: 10_000,
  /** Workflows announced as ready kept in memory for claimers (the rest are found again when due). */
  workflowReadyMax: 10_000,
  /** Longest an unclaimed ready workflow waits before the coordinator announces it again. */
  workflowRedispatchMsMax: 10_000,
  /** Steps in one workflow (actions; each may also have a compensation). */
  workflowStepsMax: 1000,
  /** A workflow's input, output, one step's result or error, and one signal's value, as JSON text. */
  workflowValueBytesMax: 64 * 1024,
  /** The whole stored workflow (its input and every step's result), as JSON text. */
  workflowBytesMax: 4 * 1024 * 1024,
} as const;

export const txDefaults = {
  /** TCC, 2PC and 3PC roll back when not decided within this; sagas have no deadline by default. */
  timeoutToFailMs: 35_000,
  sagaTimeoutToFailMs: 0,
  requestTimeoutMs: 3000,
  retryIntervalMs: 1000,
} as const;

export type Limits = { -readonly [K in keyof typeof limitDefaults]: number };

/** The limits for which 0 means something (off: keep everything) rather than nothing allowed. */
const zeroAllowed: ReadonlySet<keyof Limits> = new Set<keyof Limits>(['finishedRetentionMs']);

export function envNameOf(name: string): string {
  return `TANDEM_${name.replace(/([A-Z])/g, '_$1').toUpperCase()}`;
}

/** Defaults overridden by TANDEM_* variables; a malformed value is an error naming the variable. */
export function limitsFromEnv(env: NodeJS.ProcessEnv): Limits {
  const limits = { ...limitDefaults } as Limits;
  for (const name of Object.keys(limitDefaults) as Array<keyof Limits>) {
    const raw = env[envNameOf(name)];
    if (raw === undefined || raw === '') continue;
    const value = Number(raw);
    const least = zeroAllowed.has(name) ? 0 : 1;
    if (!Number.isSafeInteger(value) || value < least) {
      throw new Error(`${envNameOf(name)} must be a ${least === 0 ? 'non-negative' : 'positive'} integer, got "${raw}"`);
    }
    limits[name] = value;
  }
  return limits;
}
