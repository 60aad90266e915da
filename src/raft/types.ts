// The vocabulary of the pure Raft core: what goes in (messages, ticks, proposals), what comes
// out (a Ready), and what the shell persists. Plain data only, so a shell can serialize it and
// a simulation can copy, drop, duplicate and reorder it.

export type NodeId = string;

/** No node: "no leader known" or "no vote cast". */
export const none: NodeId = '';

export type EntryType = 'normal' | 'conf';

export interface Entry {
  index: number;
  term: number;
  type: EntryType;
  /** Opaque to the core. For 'conf' entries, a JSON ConfChange. */
  data: string;
}

export type ConfChangeType = 'addLearner' | 'addVoter' | 'removeNode';

/** One server at a time: each change moves a single node. */
export interface ConfChange {
  type: ConfChangeType;
  node: NodeId;
}

export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

/** What must be on disk before any message of the same Ready is sent. */
export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
}

export interface Snapshot {
  index: number;
  term: number;
  conf: ConfState;
  /** The state machine as of `index`, opaque to the core. */
  data: string;
}

export type MessageType =
  | 'app'
  | 'appResp'
  | 'vote'
  | 'voteResp'
  | 'preVote'
  | 'preVoteResp'
  | 'heartbeat'
  | 'heartbeatResp'
  | 'snap'
  | 'timeoutNow'
  | 'readIndex'
  | 'readIndexResp';

/**
 * One flat shape for every message, like etcd's raftpb.Message: fields a type does not use
 * stay at their zero value. Meaning per type:
 * - app: index/logTerm = the entry before `entries`; commit = leader's commit.
 * - appResp: index = last index now matching (or, rejected, the index that did not match);
 *   hintIndex/hintTerm = where the follower's log may diverge, for a fast back-off.
 * - vote/preVote: index/logTerm = the candidate's last entry; context 'transfer' when a
 *   leadership transfer asked for it (overrides the leader lease).
 * - heartbeat: commit = min(follower's match, commit); context = a read-index context or '';
 *   tick = the leader's tick when sent, echoed back for the lease.
 * - readIndex / readIndexResp: context = the read's unique id; index = the read index.
 * - snap: snapshot = the snapshot with `data` cut to one chunk starting at `offset` of
 *   `total` bytes (chunks may arrive in any order; a lost one is re-sent with the snapshot).
 */
export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  logTerm: number;
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  hintIndex: number;
  hintTerm: number;
  context: string;
  tick: number;
  snapshot: Snapshot | null;
  offset: number;
  total: number;
}

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

/** Volatile state the shell may want to show (not persisted). */
export interface SoftState {
  lead: NodeId;
  role: Role;
}

/** A read the shell may answer once it has applied up to `index`. */
export interface ReadState {
  context: string;
  index: number;
}

/**
 * What the shell does, in this order: persist `snapshot`, `entries` (replacing any suffix from
 * the first entry's index) and `hardState` (fsync); then send `messages`; then apply
 * `snapshot` and `committedEntries` to the state machine and answer `readStates` once applied
 * reaches their index; fail `readsDropped`; then call advance(ready).
 */
export interface Ready {
  softState: SoftState | null;
  hardState: HardState | null;
  entries: Entry[];
  snapshot: Snapshot | null;
  messages: Message[];
  committedEntries: Entry[];
  readStates: ReadState[];
  /** Contexts of reads this node accepted and will never answer (leadership lost). */
  readsDropped: string[];
}

export type ReadOnlyMode = 'safe' | 'lease';

export interface RaftConfig {
  id: NodeId;
  /** Used only when the persisted state has no snapshot (a fresh cluster). */
  voters: NodeId[];
  learners?: NodeId[];
  /** Ticks without hearing from a leader before an election; randomized in [e, 2e). */
  electionTicks: number;
  heartbeatTicks: number;
  preVote: boolean;
  checkQuorum: boolean;
  readOnly: ReadOnlyMode;
  /** A seeded source in [0, 1): the only randomness (election timeouts). */
  random: () => number;
  /** Entries per append message (batching). */
  entriesPerMessageMax: number;
  /** Bytes of entry data per append message; at least one entry is always sent. */
  bytesPerMessageMax: number;
  /** Append messages in flight to one follower before waiting for acks (pipelining). */
  inflightMessagesMax: number;
  /** Bytes of snapshot data per message: a snapshot goes in chunks of this size. */
  snapshotChunkBytesMax: number;
  /** Entries a learner may still lag by when it is promoted to voter. */
  learnerCatchUpEntriesMax: number;
  /** Proposals' bytes not yet committed; beyond it propose() refuses (back-pressure). */
  uncommittedBytesMax: number;
}

export interface PersistedState {
  hardState: HardState;
  snapshot: Snapshot | null;
  /** Entries after the snapshot (or from index 1), contiguous. */
  entries: Entry[];
}

export const defaultLimits = {
  electionTicks: 10,
  heartbeatTicks: 1,
  entriesPerMessageMax: 64,
  bytesPerMessageMax: 1024 * 1024,
  inflightMessagesMax: 256,
  snapshotChunkBytesMax: 1024 * 1024,
  learnerCatchUpEntriesMax: 1000,
  uncommittedBytesMax: 64 * 1024 * 1024,
} as const;

export function message(fields: Partial<Message> & Pick<Message, 'type' | 'to' | 'term'>): Message {
  return {
    from: '',
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    hintIndex: 0,
    hintTerm: 0,
    context: '',
    tick: 0,
    snapshot: null,
    offset: 0,
    total: 0,
    ...fields,
  };
}

export function entryBytes(entry: Entry): number {
  return entry.data.length + 16;
}
