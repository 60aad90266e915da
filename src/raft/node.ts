// The Raft algorithm as a pure state machine, in the manner of etcd-io/raft's RawNode: the shell
// feeds it messages (step), clock ticks (tick) and requests (propose, readIndex, ...), then
// takes a Ready, persists, sends, applies, and calls advance. Nothing here touches a clock,
// a socket, a file or a random source other than the injected one, so a seeded simulation
// replays exactly.
import { RaftLog } from './log.js';
import { Progress } from './progress.js';
import {
  entryBytes,
  message,
  none,
  type ConfChange,
  type ConfState,
  type Entry,
  type HardState,
  type Message,
  type NodeId,
  type PersistedState,
  type RaftConfig,
  type ReadState,
  type Ready,
  type Role,
  type Snapshot,
  type SoftState,
} from './types.js';

export type Refusal = 'notLeader' | 'transferring' | 'uncommittedBytesMax' | 'confChangePending' | 'invalidConfChange';
export type ProposeResult = { ok: true; index: number; term: number } | { ok: false; reason: Refusal; lead: NodeId };
export type ReadRequestResult = 'accepted' | 'forwarded' | 'noLeader' | 'duplicate';

interface PendingRead {
  context: string;
  from: NodeId;
  /** The commit index when the read arrived: what it must reflect at least. */
  index: number;
  acks: Set<NodeId>;
}

/** Switches that break the algorithm on purpose, so tests can show the simulation notices. */
export interface RaftMutations {
  /** Commit any entry a quorum holds, not only entries of the leader's term (Figure 8). */
  commitOlderTerms?: boolean;
  /** Grant a vote without checking the candidate's log is up to date. */
  skipUpToDateCheck?: boolean;
  /** Answer a read index without the quorum heartbeat round. */
  readWithoutQuorum?: boolean;
}

export class RaftNode {
  readonly id: NodeId;
  term = 0;
  vote: NodeId = none;
  lead: NodeId = none;
  role: Role = 'follower';
  readonly log: RaftLog;
  voters = new Set<NodeId>();
  learners = new Set<NodeId>();
  /** Index of the last conf entry applied to voters/learners. */
  private confIndex = 0;
  readonly progress = new Map<NodeId, Progress>();
  private readonly votes = new Map<NodeId, boolean>();

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  /** Ticks since this incarnation started: the leader's clock for the lease. */
  private ticks = 0;
  /**
   * With check-quorum, a node that just started may have acked a leader's heartbeat before it
   * crashed; it refuses votes for one election timeout so that leader's lease stays valid.
   */
  private startupQuiet: boolean;
  leadTransferee: NodeId = none;
  private pendingConfIndex = 0;
  private uncommittedBytes = 0;

  private readQueue: PendingRead[] = [];
  /** Reads that arrived before this leader committed an entry of its term. */
  private readsBeforeCommit: Array<{ context: string; from: NodeId }> = [];
  /** Reads this follower forwarded to its leader and has not had answered. */
  private readsForwarded = new Set<string>();

  /** Chunks of a snapshot on its way from the leader, by offset. */
  private incoming: { index: number; term: number; total: number; chunks: Map<number, string>; bytes: number } | null = null;

  private msgs: Message[] = [];
  private readStates: ReadState[] = [];
  private readsDropped: string[] = [];
  private prevSoft: SoftState;
  private prevHard: HardState;

  constructor(
    private readonly config: RaftConfig,
    persisted?: PersistedState,
    private readonly mutations: RaftMutations = {},
  ) {
    this.id = config.id;
    const state: PersistedState = persisted ?? { hardState: { term: 0, vote: none, commit: 0 }, snapshot: null, entries: [] };
    this.log = new RaftLog(state.snapshot, state.entries, state.hardState.commit, state.snapshot?.index ?? 0);
    this.setConf(state.snapshot?.conf ?? { voters: config.voters, learners: config.learners ?? [] });
    this.confIndex = state.snapshot?.index ?? 0;
    // Membership is what the committed log says, so a restarted node never counts votes with
    // a configuration the cluster has moved past.
    for (let index = this.log.firstIndex(); index <= this.log.committed; index++) this.applyConfEntry(this.log.entry(index)!);
    this.term = state.hardState.term;
    this.vote = state.hardState.vote;
    // A fresh member (term 0) has acked no leader, so it has no lease to honour.
    this.startupQuiet = config.checkQuorum && state.hardState.term > 0;
    this.becomeFollower(this.term, none);
    this.prevSoft = this.softState();
    this.prevHard = this.hardState();
  }

  // ---- inputs -------------------------------------------------------------------------------

  tick(): void {
    this.ticks += 1;
    if (this.role === 'leader') {
      this.tickLeader();
      return;
    }
    this.electionElapsed += 1;
    if (this.electionElapsed >= this.config.electionTicks) this.startupQuiet = false;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.campaign(this.config.preVote ? 'preElection' : 'election');
    }
  }

  step(m: Message): void {
    if (m.to !== this.id) return;
    if (m.term > this.term) {
      if (m.type === 'vote' || m.type === 'preVote') {
        // Leader stickiness: while we hear from a leader, a higher term does not depose it.
        if (m.context !== 'transfer' && this.inLease()) return;
      }
      if (m.type === 'preVote') {
        // A pre-vote never changes our term.
      } else if (m.type === 'preVoteResp' && !m.reject) {
        // The term of a granted pre-vote is the one we would campaign in.
      } else if (m.type === 'app' || m.type === 'heartbeat' || m.type === 'snap') {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, none);
      }
    } else if (m.term < this.term) {
      if ((this.config.checkQuorum || this.config.preVote) && (m.type === 'heartbeat' || m.type === 'app')) {
        // A stale leader (or one cut off and back) learns our term and steps down; without
        // this a node that pre-votes and never raises its term could wait forever.
        this.send(message({ type: 'appResp', to: m.from, term: this.term }));
      } else if (m.type === 'preVote') {
        this.send(message({ type: 'preVoteResp', to: m.from, term: this.term, reject: true }));
      }
      return;
    }

    if (m.type === 'vote' || m.type === 'preVote') {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.role) {
      case 'leader':
        this.stepLeader(m);
        return;
      case 'candidate':
      case 'preCandidate':
        this.stepCandidate(m);
        return;
      case 'follower':
        this.stepFollower(m);
        return;
    }
  }

  /** Starts an election now (etcd's MsgHup), through pre-vote when it is on. */
  campaignNow(): void {
    if (this.role !== 'leader') this.campaign(this.config.preVote ? 'preElection' : 'election');
  }

  propose(data: string): ProposeResult {
    const refusal = this.proposeRefusal(data.length + 16);
    if (refusal) return { ok: false, reason: refusal, lead: this.lead };
    return this.appendProposal('normal', data);
  }

  proposeConfChange(change: ConfChange): ProposeResult {
    const refusal = this.proposeRefusal(64) ?? (this.pendingConfIndex > this.log.applied ? 'confChangePending' : null) ?? this.confChangeRefusal(change);
    if (refusal) return { ok: false, reason: refusal, lead: this.lead };
    const result = this.appendProposal('conf', JSON.stringify(change));
    if (result.ok) this.pendingConfIndex = result.index;
    return result;
  }

  /**
   * Asks for a linearizable read. `context` must be unique per request and per retry (a retry
   * gets a fresh one): a ReadState answers exactly the request that carried its context.
   */
  readIndex(context: string): ReadRequestResult {
    if (this.role === 'leader') {
      if (this.readQueue.some((r) => r.context === context) || this.readsBeforeCommit.some((r) => r.context === context)) return 'duplicate';
      this.leaderRead(context, this.id);
      return 'accepted';
    }
    if (this.lead === none || this.role !== 'follower') return 'noLeader';
    if (this.readsForwarded.has(context)) return 'duplicate';
    this.readsForwarded.add(context);
    this.send(message({ type: 'readIndex', to: this.lead, term: this.term, context }));
    return 'forwarded';
  }

  /** Hands leadership to `to` once its log is caught up; false when it cannot start. */
  transferLeadership(to: NodeId): boolean {
    if (this.role !== 'leader' || to === this.id || !this.voters.has(to)) return false;
    if (this.leadTransferee === to) return true;
    this.leadTransferee = to;
    // The transfer must end within one election timeout or it is abandoned.
    this.electionElapsed = 0;
    const pr = this.progress.get(to)!;
    if (pr.match === this.log.lastIndex()) this.send(message({ type: 'timeoutNow', to, term: this.term }));
    else this.sendAppend(to);
    return true;
  }

  /**
   * The shell has persisted a snapshot of its state machine at the applied index: the log
   * before it can go. `data` must be the state machine exactly as of log.applied.
   */
  compact(data: string): Snapshot | null {
    const index = this.log.applied;
    if (index <= this.log.snapshotIndex) return null;
    const snapshot: Snapshot = { index, term: this.log.term(index)!, conf: this.confState(), data };
    this.log.compact(snapshot);
    return snapshot;
  }

  // ---- outputs ------------------------------------------------------------------------------

  hasReady(): boolean {
    const soft = this.softState();
    const hard = this.hardState();
    return (
      soft.lead !== this.prevSoft.lead ||
      soft.role !== this.prevSoft.role ||
      !sameHardState(hard, this.prevHard) ||
      this.log.unstableSnapshot !== null ||
      this.log.stable < this.log.lastIndex() ||
      this.msgs.length > 0 ||
      this.log.committed > Math.max(this.log.applied, this.log.snapshotIndex) ||
      this.readStates.length > 0 ||
      this.readsDropped.length > 0
    );
  }

  ready(): Ready {
    const soft = this.softState();
    const hard = this.hardState();
    const rd: Ready = {
      softState: soft.lead !== this.prevSoft.lead || soft.role !== this.prevSoft.role ? soft : null,
      hardState: sameHardState(hard, this.prevHard) ? null : hard,
      entries: this.log.unstableEntries(),
      snapshot: this.log.unstableSnapshot,
      messages: this.msgs,
      committedEntries: this.log.nextCommitted(),
      readStates: this.readStates,
      readsDropped: this.readsDropped,
    };
    this.msgs = [];
    this.readStates = [];
    this.readsDropped = [];
    this.prevSoft = soft;
    this.prevHard = hard;
    return rd;
  }

  /** The shell did everything `rd` asked (persisted, sent, applied). */
  advance(rd: Ready): void {
    if (rd.snapshot) {
      this.log.stable = Math.max(this.log.stable, rd.snapshot.index);
      if (this.log.unstableSnapshot === rd.snapshot) this.log.unstableSnapshot = null;
      this.log.applied = Math.max(this.log.applied, rd.snapshot.index);
      this.confIndex = Math.max(this.confIndex, rd.snapshot.index);
    }
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      // Only if no newer append replaced that entry meanwhile.
      if (this.log.matchTerm(last.index, last.term)) this.log.stable = Math.max(this.log.stable, last.index);
    }
    for (const entry of rd.committedEntries) {
      if (entry.index <= this.log.applied) continue;
      this.log.applied = entry.index;
      this.applyConfEntry(entry);
    }
    if (this.role === 'leader') {
      // The leader counts itself only for what it has on disk.
      const self = this.progress.get(this.id);
      if (self && self.maybeUpdate(this.log.stable) && this.maybeCommit()) this.bcastAppend(true);
    }
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  softState(): SoftState {
    return { lead: this.lead, role: this.role };
  }

  confState(): ConfState {
    return { voters: [...this.voters].sort(), learners: [...this.learners].sort() };
  }

  /** For status pages: whether a lease read would be answered right now. */
  leaseValid(): boolean {
    if (this.role !== 'leader' || !this.config.checkQuorum || this.leadTransferee !== none) return false;
    // A follower that acked a heartbeat sent at leader tick t refuses votes until at least
    // t + electionTicks - 1 on a clock of the same rate; one tick more is the margin for
    // ticks not being aligned across members.
    const acked = [...this.voters].map((v) => (v === this.id ? this.ticks : this.progress.get(v)?.ackedTick ?? -Infinity));
    acked.sort((a, b) => b - a);
    const quorumTick = acked[this.quorum() - 1];
    return this.ticks - quorumTick < this.config.electionTicks - 1;
  }

  // ---- roles --------------------------------------------------------------------------------

  private becomeFollower(term: number, lead: NodeId): void {
    this.reset(term);
    this.role = 'follower';
    this.lead = lead;
  }

  private becomePreCandidate(): void {
    // Term and vote stay: a pre-election that fails leaves no trace.
    this.dropReads();
    this.votes.clear();
    this.role = 'preCandidate';
    this.lead = none;
    this.electionElapsed = 0;
    this.randomizeTimeout();
  }

  private becomeCandidate(): void {
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
  }

  private becomeLeader(): void {
    this.reset(this.term);
    this.role = 'leader';
    this.lead = this.id;
    for (const pr of this.progress.values()) pr.ackedTick = -Infinity;
    // An empty entry of the new term: committing it commits everything before it (the
    // current-term rule), and until it commits no read or conf change is served.
    this.appendEntry({ index: this.log.lastIndex() + 1, term: this.term, type: 'normal', data: '' });
    this.pendingConfIndex = this.log.lastIndex();
    this.bcastAppend();
  }

  private reset(term: number): void {
    if (term !== this.term) {
      this.term = term;
      this.vote = none;
    }
    this.dropReads();
    this.lead = none;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizeTimeout();
    this.leadTransferee = none;
    this.votes.clear();
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    this.progress.clear();
    for (const node of [...this.voters, ...this.learners]) this.addProgress(node);
  }

  private addProgress(node: NodeId): void {
    const pr = new Progress(this.log.lastIndex() + 1, this.config.inflightMessagesMax);
    if (node === this.id) pr.match = this.log.stable;
    this.progress.set(node, pr);
  }

  private randomizeTimeout(): void {
    const e = this.config.electionTicks;
    this.randomizedElectionTimeout = e + Math.floor(this.config.random() * e);
  }

  private dropReads(): void {
    for (const read of this.readQueue) if (read.from === this.id) this.readsDropped.push(read.context);
    for (const read of this.readsBeforeCommit) if (read.from === this.id) this.readsDropped.push(read.context);
    for (const context of this.readsForwarded) this.readsDropped.push(context);
    this.readQueue = [];
    this.readsBeforeCommit = [];
    this.readsForwarded.clear();
  }

  private promotable(): boolean {
    return this.voters.has(this.id);
  }

  private inLease(): boolean {
    return this.config.checkQuorum && this.electionElapsed < this.config.electionTicks && (this.lead !== none || this.startupQuiet);
  }

  private quorum(): number {
    return Math.floor(this.voters.size / 2) + 1;
  }

  // ---- elections ----------------------------------------------------------------------------

  private campaign(kind: 'preElection' | 'election' | 'transfer'): void {
    if (!this.promotable()) return;
    let voteTerm: number;
    let type: 'preVote' | 'vote';
    if (kind === 'preElection') {
      this.becomePreCandidate();
      voteTerm = this.term + 1;
      type = 'preVote';
    } else {
      this.becomeCandidate();
      voteTerm = this.term;
      type = 'vote';
    }
    if (this.poll(this.id, true) === 'won') {
      if (kind === 'preElection') this.campaign('election');
      else this.becomeLeader();
      return;
    }
    for (const voter of this.voters) {
      if (voter === this.id) continue;
      this.send(
        message({
          type,
          to: voter,
          term: voteTerm,
          index: this.log.lastIndex(),
          logTerm: this.log.lastTerm(),
          context: kind === 'transfer' ? 'transfer' : '',
        }),
      );
    }
  }

  private poll(from: NodeId, granted: boolean): 'won' | 'lost' | 'pending' {
    if (!this.votes.has(from)) this.votes.set(from, granted);
    let yes = 0;
    let no = 0;
    for (const [voter, vote] of this.votes) {
      if (!this.voters.has(voter)) continue;
      if (vote) yes++;
      else no++;
    }
    const q = this.quorum();
    if (yes >= q) return 'won';
    if (no > this.voters.size - q) return 'lost';
    return 'pending';
  }

  private handleVoteRequest(m: Message): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === none && this.lead === none) ||
      (m.type === 'preVote' && m.term > this.term);
    const upToDate = this.mutations.skipUpToDateCheck || this.log.isUpToDate(m.index, m.logTerm);
    const respType = m.type === 'vote' ? 'voteResp' : 'preVoteResp';
    if (canVote && upToDate) {
      // A granted pre-vote answers in the term asked about; a real vote changes ours.
      this.send(message({ type: respType, to: m.from, term: m.term }));
      if (m.type === 'vote') {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send(message({ type: respType, to: m.from, term: this.term, reject: true }));
    }
  }

  private stepCandidate(m: Message): void {
    switch (m.type) {
      case 'app':
      case 'heartbeat':
      case 'snap':
        this.becomeFollower(m.term, m.from);
        this.stepFollower(m);
        return;
      case 'voteResp':
      case 'preVoteResp': {
        if ((m.type === 'voteResp') !== (this.role === 'candidate')) return;
        const result = this.poll(m.from, !m.reject);
        if (result === 'won') {
          if (this.role === 'preCandidate') this.campaign('election');
          else this.becomeLeader();
        } else if (result === 'lost') {
          this.becomeFollower(this.term, none);
        }
        return;
      }
      default:
        return;
    }
  }

  // ---- follower -----------------------------------------------------------------------------

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'app':
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case 'heartbeat':
        this.electionElapsed = 0;
        this.lead = m.from;
        this.log.commitTo(m.commit);
        this.send(message({ type: 'heartbeatResp', to: m.from, term: this.term, context: m.context, tick: m.tick }));
        return;
      case 'snap':
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case 'timeoutNow':
        this.campaign('transfer');
        return;
      case 'readIndexResp':
        // Only for a read still waiting here: once dropped (leader changed), a late answer
        // is not taken; the shell retries under a new context.
        if (this.readsForwarded.delete(m.context)) this.readStates.push({ context: m.context, index: m.index });
        return;
      case 'readIndex':
        // Sent to us as leader of an earlier role; the sender times out and retries.
        return;
      default:
        return;
    }
  }

  private handleAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.send(message({ type: 'appResp', to: m.from, term: this.term, index: this.log.committed }));
      return;
    }
    const last = this.log.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (last !== null) {
      this.send(message({ type: 'appResp', to: m.from, term: this.term, index: last }));
      return;
    }
    const hint = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    this.send(message({ type: 'appResp', to: m.from, term: this.term, index: m.index, reject: true, hintIndex: hint.index, hintTerm: hint.term }));
  }

  private handleSnapshot(m: Message): void {
    const snap = this.assembleSnapshot(m);
    if (!snap) return;
    if (snap.index <= this.log.committed) {
      this.send(message({ type: 'appResp', to: m.from, term: this.term, index: this.log.committed }));
      return;
    }
    if (this.log.matchTerm(snap.index, snap.term)) {
      // We already hold that prefix: just learn it is committed.
      this.log.commitTo(snap.index);
    } else {
      this.log.restore(snap);
      this.setConf(snap.conf);
      this.confIndex = snap.index;
    }
    this.send(message({ type: 'appResp', to: m.from, term: this.term, index: this.log.lastIndex() }));
  }

  /** The whole snapshot once its last missing chunk is here; null until then. */
  private assembleSnapshot(m: Message): Snapshot | null {
    const chunk = m.snapshot;
    if (!chunk) return null;
    if (m.offset === 0 && chunk.data.length === m.total) return chunk;
    let incoming = this.incoming;
    if (!incoming || incoming.index !== chunk.index || incoming.term !== chunk.term || incoming.total !== m.total) {
      incoming = { index: chunk.index, term: chunk.term, total: m.total, chunks: new Map(), bytes: 0 };
      this.incoming = incoming;
    }
    if (!incoming.chunks.has(m.offset) && m.offset + chunk.data.length <= m.total) {
      incoming.chunks.set(m.offset, chunk.data);
      incoming.bytes += chunk.data.length;
    }
    if (incoming.bytes < incoming.total) return null;
    const offsets = [...incoming.chunks.keys()].sort((a, b) => a - b);
    const data = offsets.map((offset) => incoming.chunks.get(offset)!).join('');
    this.incoming = null;
    if (data.length !== m.total) return null;
    return { ...chunk, data };
  }

  // ---- leader -------------------------------------------------------------------------------

  private tickLeader(): void {
    this.heartbeatElapsed += 1;
    this.electionElapsed += 1;
    if (this.electionElapsed >= this.config.electionTicks) {
      this.electionElapsed = 0;
      if (this.config.checkQuorum) {
        if (!this.quorumActive()) {
          this.becomeFollower(this.term, none);
          return;
        }
        for (const [node, pr] of this.progress) if (node !== this.id) pr.recentActive = false;
      }
      this.leadTransferee = none;
    }
    for (const [node, pr] of this.progress) {
      if (pr.state !== 'snapshot') continue;
      pr.snapshotTicks += 1;
      // A snapshot lost on the way: try again through a probe.
      if (pr.snapshotTicks >= this.config.electionTicks) {
        pr.becomeProbe();
        this.sendAppend(node);
      }
    }
    if (this.heartbeatElapsed >= this.config.heartbeatTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat('');
    }
  }

  private quorumActive(): boolean {
    let active = 0;
    for (const voter of this.voters) if (voter === this.id || this.progress.get(voter)?.recentActive) active++;
    return active >= this.quorum();
  }

  private stepLeader(m: Message): void {
    const pr = this.progress.get(m.from);
    switch (m.type) {
      case 'appResp':
        if (pr) this.handleAppendResponse(m, pr);
        return;
      case 'heartbeatResp':
        if (pr) this.handleHeartbeatResponse(m, pr);
        return;
      case 'readIndex':
        if (!this.readQueue.some((r) => r.context === m.context) && !this.readsBeforeCommit.some((r) => r.context === m.context)) {
          this.leaderRead(m.context, m.from);
        }
        return;
      default:
        return;
    }
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      const probeAt = m.hintTerm > 0 ? this.log.findConflictByTerm(m.hintIndex, m.hintTerm).index : m.hintIndex;
      if (pr.maybeDecrease(m.index, probeAt)) this.sendAppend(m.from);
      return;
    }
    if (!pr.maybeUpdate(m.index)) {
      if (pr.state === 'replicate') pr.freeInflightsTo(m.index);
      return;
    }
    pr.stalledHeartbeats = 0;
    if (pr.state === 'probe') pr.becomeReplicate();
    else if (pr.state === 'snapshot' && pr.match >= pr.pendingSnapshot) pr.becomeReplicate();
    else if (pr.state === 'replicate') pr.freeInflightsTo(m.index);
    if (this.maybeCommit()) this.bcastAppend(true);
    // Pipelining: keep sending until the in-flight window is full or nothing is left.
    else while (this.sendAppend(m.from));
    if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.send(message({ type: 'timeoutNow', to: m.from, term: this.term }));
    }
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    pr.ackedTick = Math.max(pr.ackedTick, m.tick);
    pr.probeSent = false;
    if (pr.state === 'replicate' && pr.inflights.length > 0) {
      // Appends in flight and no ack across heartbeats: they were lost, probe again.
      pr.stalledHeartbeats += 1;
      if (pr.stalledHeartbeats >= 2) {
        pr.stalledHeartbeats = 0;
        pr.becomeProbe();
      }
    }
    if (pr.match < this.log.lastIndex()) this.sendAppend(m.from, pr.state === 'probe');
    if (m.context !== '') this.readAcked(m.from, m.context);
  }

  private maybeCommit(): boolean {
    const matches = [...this.voters].map((v) => this.progress.get(v)?.match ?? 0).sort((a, b) => b - a);
    const index = matches[this.quorum() - 1];
    if (index <= this.log.committed) return false;
    // Raft's commit rule: only an entry of the current term is committed by counting
    // replicas; earlier entries commit with it (Figure 8 of the paper).
    if (!this.mutations.commitOlderTerms && this.log.term(index) !== this.term) return false;
    const before = this.log.committed;
    this.log.commitTo(index);
    let bytes = 0;
    for (let i = before + 1; i <= index; i++) bytes += entryBytes(this.log.entry(i)!);
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - bytes);
    if (this.readsBeforeCommit.length > 0 && this.committedInTerm()) {
      const waiting = this.readsBeforeCommit;
      this.readsBeforeCommit = [];
      for (const read of waiting) this.leaderRead(read.context, read.from);
    }
    return true;
  }

  private committedInTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  private appendEntry(entry: Entry): void {
    this.log.append([entry]);
  }

  private proposeRefusal(bytes: number): Refusal | null {
    if (this.role !== 'leader') return 'notLeader';
    if (this.leadTransferee !== none) return 'transferring';
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > this.config.uncommittedBytesMax) return 'uncommittedBytesMax';
    return null;
  }

  private appendProposal(type: 'normal' | 'conf', data: string): ProposeResult {
    const entry: Entry = { index: this.log.lastIndex() + 1, term: this.term, type, data };
    this.appendEntry(entry);
    this.uncommittedBytes += entryBytes(entry);
    this.bcastAppend();
    return { ok: true, index: entry.index, term: entry.term };
  }

  private confChangeRefusal(change: ConfChange): Refusal | null {
    const isVoter = this.voters.has(change.node);
    const isLearner = this.learners.has(change.node);
    switch (change.type) {
      case 'addLearner':
        return isVoter || isLearner ? 'invalidConfChange' : null;
      case 'addVoter': {
        // Only a learner that has caught up may vote: a new empty voter could stall commits.
        if (!isLearner) return 'invalidConfChange';
        const match = this.progress.get(change.node)?.match ?? 0;
        return this.log.lastIndex() - match > this.config.learnerCatchUpEntriesMax ? 'invalidConfChange' : null;
      }
      case 'removeNode':
        if (!isVoter && !isLearner) return 'invalidConfChange';
        // The leader hands over first (transferLeadership), then is removed.
        if (change.node === this.id) return 'invalidConfChange';
        return null;
    }
  }

  private sendAppend(to: NodeId, allowEmpty = false): boolean {
    const pr = this.progress.get(to);
    if (!pr || to === this.id || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined) return this.sendSnapshot(to, pr);
    const entries = this.log.slice(pr.next, this.log.lastIndex(), this.config.entriesPerMessageMax, this.config.bytesPerMessageMax);
    if (entries.length === 0 && !allowEmpty) return false;
    this.send(message({ type: 'app', to, term: this.term, index: prevIndex, logTerm: prevTerm, entries, commit: this.log.committed }));
    if (pr.state === 'replicate' && entries.length > 0) {
      const last = entries[entries.length - 1].index;
      pr.optimisticUpdate(last);
      pr.addInflight(last);
    } else if (pr.state === 'probe') {
      pr.probeSent = true;
    }
    return entries.length > 0;
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    const snapshot = this.log.snapshot;
    if (!snapshot) return false;
    const size = Math.max(1, this.config.snapshotChunkBytesMax);
    const total = snapshot.data.length;
    for (let offset = 0; offset === 0 || offset < total; offset += size) {
      const chunk = { ...snapshot, data: snapshot.data.slice(offset, offset + size) };
      this.send(message({ type: 'snap', to, term: this.term, snapshot: chunk, offset, total }));
    }
    pr.becomeSnapshot(snapshot.index);
    return false;
  }

  /** `spreadCommit`: send even an empty append, so followers learn a new commit index now. */
  private bcastAppend(spreadCommit = false): void {
    for (const node of this.progress.keys()) if (node !== this.id) this.sendAppend(node, spreadCommit);
  }

  private bcastHeartbeat(context: string): void {
    for (const [node, pr] of this.progress) {
      if (node === this.id) continue;
      // Never tell a follower to commit past what it is known to hold.
      const commit = Math.min(pr.match, this.log.committed);
      this.send(message({ type: 'heartbeat', to: node, term: this.term, commit, context, tick: this.ticks }));
    }
  }

  // ---- reads --------------------------------------------------------------------------------

  private leaderRead(context: string, from: NodeId): void {
    if (!this.committedInTerm()) {
      // Our commit index may lag the real one until an entry of our term commits.
      this.readsBeforeCommit.push({ context, from });
      return;
    }
    const index = this.log.committed;
    if (this.mutations.readWithoutQuorum || (this.voters.size === 1 && this.voters.has(this.id))) {
      this.answerRead(context, from, index);
      return;
    }
    if (this.config.readOnly === 'lease' && this.leaseValid()) {
      this.answerRead(context, from, index);
      return;
    }
    this.readQueue.push({ context, from, index, acks: new Set([this.id]) });
    // The heartbeat carrying this context is sent after the read arrived: an ack for it
    // proves we were still leader after that moment.
    this.bcastHeartbeat(context);
  }

  private readAcked(from: NodeId, context: string): void {
    const at = this.readQueue.findIndex((r) => r.context === context);
    if (at < 0) return;
    const read = this.readQueue[at];
    read.acks.add(from);
    let votes = 0;
    for (const node of read.acks) if (this.voters.has(node)) votes++;
    if (votes < this.quorum()) return;
    // Every read queued before this one arrived before its heartbeat was sent, so the same
    // acks confirm them too.
    for (const done of this.readQueue.splice(0, at + 1)) this.answerRead(done.context, done.from, done.index);
  }

  private answerRead(context: string, from: NodeId, index: number): void {
    if (from === this.id) this.readStates.push({ context, index });
    else this.send(message({ type: 'readIndexResp', to: from, term: this.term, context, index }));
  }

  // ---- membership ---------------------------------------------------------------------------

  private setConf(conf: ConfState): void {
    this.voters = new Set(conf.voters);
    this.learners = new Set(conf.learners.filter((n) => !this.voters.has(n)));
  }

  private applyConfEntry(entry: Entry): void {
    if (entry.type !== 'conf' || entry.index <= this.confIndex) return;
    this.confIndex = entry.index;
    const change = JSON.parse(entry.data) as ConfChange;
    switch (change.type) {
      case 'addLearner':
        if (!this.voters.has(change.node)) this.learners.add(change.node);
        break;
      case 'addVoter':
        this.learners.delete(change.node);
        this.voters.add(change.node);
        break;
      case 'removeNode':
        this.voters.delete(change.node);
        this.learners.delete(change.node);
        break;
    }
    if (this.role !== 'leader') return;
    if (!this.voters.has(this.id)) {
      this.becomeFollower(this.term, none);
      return;
    }
    for (const node of [...this.voters, ...this.learners]) if (!this.progress.has(node)) this.addProgress(node);
    for (const node of [...this.progress.keys()]) if (!this.voters.has(node) && !this.learners.has(node)) this.progress.delete(node);
    if (this.leadTransferee !== none && !this.voters.has(this.leadTransferee)) this.leadTransferee = none;
    this.maybeCommit();
    this.bcastAppend();
  }

  private send(m: Message): void {
    m.from = this.id;
    this.msgs.push(m);
  }
}

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
