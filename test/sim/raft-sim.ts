// Whole clusters of the pure Raft core (src/raft) under a seeded simulation: a network that
// loses, duplicates, delays and reorders messages and cuts links both ways or one way; a disk
// whose writes take time and are lost (or land) when the process crashes before they finish;
// crashes and restarts; pauses longer than the election timeout (a paused process catches up
// its missed ticks when it resumes, as a shell reading a monotonic clock would); leadership
// transfers, compaction and single-server membership changes. Checked after every event:
// - election safety: at most one leader per term;
// - log matching: an (index, term) pair names one entry with one predecessor term, on every
//   disk, so equal pairs mean equal prefixes;
// - leader completeness: a new leader holds every entry known committed;
// - state machine safety: every member reaches the same digest at each applied index
//   (snapshots included);
// - linearizable reads: a read answered at index i has i >= every index applied anywhere
//   before the read was issued;
// and at the end, after healing: the cluster commits again and every live member applied every
// acknowledged proposal, each being the entry that was acknowledged.
import { RaftNode, type RaftMutations } from '../../src/raft/node.js';
import type { Entry, Message, NodeId, PersistedState, RaftConfig, Ready, Snapshot } from '../../src/raft/types.js';
import { seededPrng } from '../support/prng.js';

export interface RaftSimOptions {
  mutations: RaftMutations;
  /** Keep the last events as text, for a failing seed's replay. */
  trace: boolean;
  /** Pauses stop the clock (no catch-up of missed ticks): what lease reads cannot survive. */
  pausesStopClock: boolean;
  /**
   * 'figure8': five voters, one entry per append, and leaders killed again and again soon
   * after they win, the histories of Figure 8 in the Raft paper (where the current-term
   * commit rule matters); only crashes and restarts, no other faults.
   */
  profile: 'mixed' | 'figure8';
}

export interface RaftSimReport {
  violations: string[];
  trace: string[];
  stats: {
    events: number;
    messages: number;
    elections: number;
    committed: number;
    acked: number;
    reads: number;
    leaseReads: number;
    crashes: number;
    pauses: number;
    partitions: number;
    snapshotsSent: number;
    compactions: number;
    transfers: number;
    confChanges: number;
  };
}

const tickMs = 10;
const faultyMs = 2500;
const healMs = 2000;
/** Clients stop this long before the end so the last acknowledged writes can spread. */
const quietMs = 500;

interface Disk {
  hardState: PersistedState['hardState'];
  snapshot: Snapshot | null;
  entries: Entry[];
}

interface Member {
  id: NodeId;
  node: RaftNode | null;
  disk: Disk;
  /** A Ready whose disk write is under way. */
  writing: { rd: Ready; event: Scheduled } | null;
  pausedUntilMs: number;
  missedTicks: number;
  /** What arrived while paused (messages and client requests), run on resume in any order. */
  inbox: Array<() => void>;
  /** The state machine: a digest chain over applied entries. */
  applied: number;
  digest: string;
  incarnation: number;
  /** Removed from the cluster and shut down by its operator; rejoins only with a wiped disk. */
  removed: boolean;
}

interface Scheduled {
  atMs: number;
  seq: number;
  run: () => void;
  cancelled: boolean;
}

class EventQueue {
  nowMs = 0;
  private seq = 0;
  private readonly heap: Scheduled[] = [];

  schedule(delayMs: number, run: () => void): Scheduled {
    const event = { atMs: this.nowMs + delayMs, seq: this.seq++, run, cancelled: false };
    const heap = this.heap;
    heap.push(event);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!earlier(heap[i], heap[parent])) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
    return event;
  }

  pop(): Scheduled | undefined {
    const heap = this.heap;
    const top = heap[0];
    if (!top) return undefined;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        let m = i;
        if (l < heap.length && earlier(heap[l], heap[m])) m = l;
        if (l + 1 < heap.length && earlier(heap[l + 1], heap[m])) m = l + 1;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m], heap[i]];
        i = m;
      }
    }
    this.nowMs = Math.max(this.nowMs, top.atMs);
    return top;
  }
}

function earlier(a: Scheduled, b: Scheduled): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}

/** A cheap stable digest chain (FNV-1a over the previous digest and the entry). */
function chain(prev: string, entry: Entry): string {
  let h = 0x811c9dc5;
  const text = `${prev}|${entry.index}|${entry.term}|${entry.type}|${entry.data}`;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16);
}

export function runRaftSimulation(seed: number, partial: Partial<RaftSimOptions> = {}): RaftSimReport {
  const options: RaftSimOptions = { mutations: {}, trace: false, pausesStopClock: false, profile: 'mixed', ...partial };
  const figure8 = options.profile === 'figure8';
  const prng = seededPrng(seed);
  const violations: string[] = [];
  const trace: string[] = [];
  const stats: RaftSimReport['stats'] = {
    events: 0, messages: 0, elections: 0, committed: 0, acked: 0, reads: 0, leaseReads: 0, crashes: 0,
    pauses: 0, partitions: 0, snapshotsSent: 0, compactions: 0, transfers: 0, confChanges: 0,
  };
  const queue = new EventQueue();
  const violate = (text: string) => {
    if (violations.length < 50) violations.push(`t=${queue.nowMs}ms ${text}`);
  };
  const note = (text: string) => {
    if (!options.trace) return;
    trace.push(`t=${queue.nowMs} ${text}`);
    if (trace.length > 400) trace.splice(1, 200); // the first line is the cluster's shape
  };

  // ---- the cluster's shape, drawn from the seed ----
  const size = figure8 ? 5 : prng.pick([3, 3, 5]);
  const spares = !figure8 && prng.chance(0.5) ? 1 : 0; // members that may join later as learners
  const ids = Array.from({ length: size + spares }, (_, i) => `n${i + 1}`);
  const initialVoters = ids.slice(0, size);
  const preVote = prng.chance(0.7);
  const checkQuorum = prng.chance(0.7);
  const readOnly = checkQuorum && prng.chance(0.5) ? 'lease' : 'safe';
  const lossRate = figure8 ? 0 : prng.pick([0, 0.01, 0.05, 0.1]);
  const duplicateRate = figure8 ? 0 : prng.pick([0, 0.02, 0.05]);
  const delayMaxMs = prng.pick([2, 5, 15]);
  const baseConfig = {
    voters: initialVoters,
    learners: [] as NodeId[],
    electionTicks: 10,
    heartbeatTicks: prng.pick([1, 2, 3]),
    preVote,
    checkQuorum,
    readOnly,
    entriesPerMessageMax: figure8 ? 1 : prng.pick([1, 4, 64]),
    bytesPerMessageMax: prng.pick([64, 1024 * 1024]),
    inflightMessagesMax: figure8 ? 1 : prng.pick([1, 4, 256]),
    // Half the seeds cut every snapshot into chunks of a few bytes.
    snapshotChunkBytesMax: seed % 2 === 0 ? 8 : 1024 * 1024,
    learnerCatchUpEntriesMax: 50,
    uncommittedBytesMax: 64 * 1024,
  } satisfies Omit<RaftConfig, 'id' | 'random'>;
  const configOf = (id: NodeId, incarnation: number): RaftConfig => {
    // Each incarnation draws its election timeouts from its own seeded stream.
    const own = seededPrng(seed * 1000 + ids.indexOf(id) * 37 + incarnation);
    return { ...baseConfig, id, random: () => own.next() };
  };

  note(`cluster ${initialVoters.join(',')}${spares ? ` + ${ids.length - size} spare` : ''}; preVote=${preVote} checkQuorum=${checkQuorum} readOnly=${readOnly} loss=${lossRate} dup=${duplicateRate} delay<=${delayMaxMs}ms entries/msg=${baseConfig.entriesPerMessageMax} inflight=${baseConfig.inflightMessagesMax}`);
  const members = new Map<NodeId, Member>();
  for (const id of ids) {
    const member: Member = {
      id, node: null, disk: { hardState: { term: 0, vote: '', commit: 0 }, snapshot: null, entries: [] },
      writing: null, pausedUntilMs: 0, missedTicks: 0, inbox: [], applied: 0, digest: '0', incarnation: 0, removed: false,
    };
    members.set(id, member);
    // Spares start later, empty, once they are added as learners.
    if (initialVoters.includes(id)) start(member);
  }

  // ---- what the checks remember ----
  const leaderOfTerm = new Map<number, NodeId>();
  const entryAt = new Map<string, string>(); // `${index}:${term}` -> data and previous term
  const digestAt = new Map<number, string>(); // applied index -> state machine digest
  const committedTermAt = new Map<number, number>();
  /** The highest term with a leader when an index was first applied: it was committed in a term no later. */
  const committedByTermAtMost = new Map<number, number>();
  let highestLeaderTerm = 0;
  let maxApplied = 0;
  const proposals = new Map<string, { node: NodeId; index: number; term: number }>(); // data -> where
  const acked = new Map<string, number>(); // data -> index, once applied at its proposer
  const reads = new Map<string, { node: NodeId; floor: number; answered: boolean }>();
  const blocked = new Set<string>(); // `${from}>${to}`
  let faulty = true;

  function start(member: Member): void {
    member.incarnation += 1;
    const persisted: PersistedState = structuredClone(member.disk);
    member.node = new RaftNode(configOf(member.id, member.incarnation), persisted, options.mutations);
    member.applied = persisted.snapshot?.index ?? 0;
    member.digest = persisted.snapshot ? snapshotDigest(persisted.snapshot) : '0';
    member.writing = null;
    member.inbox = [];
    member.missedTicks = 0;
    member.pausedUntilMs = 0;
  }

  function snapshotDigest(snapshot: Snapshot): string {
    return (JSON.parse(snapshot.data) as { digest: string }).digest;
  }

  function running(member: Member): boolean {
    return member.node !== null && member.pausedUntilMs <= queue.nowMs;
  }

  /** Runs one input on a member and starts its next disk write if it has a Ready. */
  function drive(member: Member, input: (node: RaftNode) => void): void {
    const node = member.node;
    if (!node) return;
    try {
      input(node);
    } catch (error) {
      violate(`${member.id} threw: ${(error as Error).message}`);
      return;
    }
    checkLeader(member);
    maybeWrite(member);
  }

  function checkLeader(member: Member): void {
    const node = member.node!;
    if (node.role !== 'leader') return;
    const known = leaderOfTerm.get(node.term);
    if (known === undefined) {
      leaderOfTerm.set(node.term, member.id);
      highestLeaderTerm = Math.max(highestLeaderTerm, node.term);
      stats.elections += 1;
      note(`${member.id} leader of term ${node.term}`);
      // Sometimes a new leader dies while it is still repairing the others' logs: the history
      // of Figure 8 in the Raft paper needs that.
      if (faulty && prng.chance(0.15)) queue.schedule(prng.int(0, 30), () => crash(member));
      // Leader completeness: everything known committed is in the new leader's log.
      for (const [index, term] of committedTermAt) {
        // Only leaders of terms after the one that committed it must hold it; a leader of an
        // old term may still win late (its votes were cast before the newer terms began).
        if (index <= node.log.snapshotIndex || node.term <= (committedByTermAtMost.get(index) ?? Infinity)) continue;
        if (node.log.term(index) !== term) violate(`leader completeness: ${member.id} leads term ${node.term} without committed entry ${index} (term ${term})`);
      }
    } else if (known !== member.id) {
      violate(`election safety: ${known} and ${member.id} both lead term ${node.term}`);
    }
  }

  function maybeWrite(member: Member): void {
    const node = member.node;
    if (!node || member.writing || !node.hasReady()) return;
    const rd = node.ready();
    const incarnation = member.incarnation;
    const complete = () => {
      if (member.incarnation !== incarnation || member.writing?.rd !== rd) return;
      // A paused process does nothing with its finished write until it runs again.
      if (member.pausedUntilMs > queue.nowMs) {
        queue.schedule(member.pausedUntilMs - queue.nowMs, complete);
        return;
      }
      finishWrite(member, rd);
    };
    const event = queue.schedule(prng.int(0, 3), complete);
    member.writing = { rd, event };
  }

  function persist(member: Member, rd: Ready): void {
    const disk = member.disk;
    if (rd.snapshot) {
      disk.snapshot = rd.snapshot;
      disk.entries = disk.entries.filter((e) => e.index > rd.snapshot!.index);
      // A restored snapshot replaces a log that does not contain it.
      const at = disk.entries[0];
      if (at && at.index !== rd.snapshot.index + 1) disk.entries = [];
    }
    if (rd.entries.length > 0) {
      const first = rd.entries[0].index;
      const base = disk.snapshot?.index ?? 0;
      disk.entries.length = Math.max(0, first - base - 1);
      let prevTerm = first - 1 === base ? (disk.snapshot?.term ?? 0) : disk.entries[first - base - 2]?.term;
      for (const entry of rd.entries) {
        if (entry.index !== base + disk.entries.length + 1) violate(`${member.id} disk: entry ${entry.index} after ${base + disk.entries.length}`);
        disk.entries.push(entry);
        // Log matching, on every disk: an (index, term) pair has one entry and one predecessor.
        const key = `${entry.index}:${entry.term}`;
        const value = `${prevTerm}|${entry.type}|${entry.data}`;
        const seen = entryAt.get(key);
        if (seen === undefined) entryAt.set(key, value);
        else if (seen !== value) violate(`log matching: ${member.id} holds ${key} as ${value}, another member as ${seen}`);
        prevTerm = entry.term;
      }
    }
    if (rd.hardState) disk.hardState = rd.hardState;
  }

  function finishWrite(member: Member, rd: Ready): void {
    member.writing = null;
    const node = member.node!;
    persist(member, rd);
    for (const m of rd.messages) send(m);
    if (rd.snapshot) {
      const digest = snapshotDigest(rd.snapshot);
      const known = digestAt.get(rd.snapshot.index);
      if (known !== undefined && known !== digest) violate(`state machine safety: ${member.id} restored a snapshot at ${rd.snapshot.index} unlike what others applied`);
      if (rd.snapshot.index > member.applied) {
        member.applied = rd.snapshot.index;
        member.digest = digest;
      }
    }
    for (const entry of rd.committedEntries) apply(member, entry);
    for (const read of rd.readStates) answerRead(member, read.context, read.index);
    for (const context of rd.readsDropped) {
      const read = reads.get(context);
      if (read) read.answered = true;
    }
    try {
      node.advance(rd);
    } catch (error) {
      violate(`${member.id} advance threw: ${(error as Error).message}`);
    }
    checkLeader(member);
    maybeCompact(member);
    maybeWrite(member);
  }

  function apply(member: Member, entry: Entry): void {
    if (entry.index <= member.applied) return;
    if (entry.index !== member.applied + 1) violate(`${member.id} applies ${entry.index} after ${member.applied}`);
    member.applied = entry.index;
    member.digest = chain(member.digest, entry);
    const known = digestAt.get(entry.index);
    if (known === undefined) {
      digestAt.set(entry.index, member.digest);
      committedTermAt.set(entry.index, entry.term);
      committedByTermAtMost.set(entry.index, highestLeaderTerm);
      stats.committed += 1;
    } else if (known !== member.digest) {
      violate(`state machine safety: ${member.id} applied a different entry at ${entry.index}`);
    }
    maxApplied = Math.max(maxApplied, entry.index);
    if (entry.type === 'conf') {
      const change = JSON.parse(entry.data) as { type: string; node: NodeId };
      const target = members.get(change.node)!;
      // The operator shuts a removed member down once its removal is committed: a removed
      // member that kept running without pre-vote or check-quorum would keep calling
      // elections nobody can win (the Raft thesis, 4.2.3).
      if (change.type === 'removeNode' && !target.removed) {
        target.removed = true;
        queue.schedule(0, () => {
          if (!target.removed) return;
          note(`${target.id} removed and shut down`);
          target.node = null;
          target.writing = null;
        });
      }
    }
    const proposal = entry.type === 'normal' ? proposals.get(entry.data) : undefined;
    if (proposal && proposal.node === member.id && !acked.has(entry.data)) {
      acked.set(entry.data, entry.index);
      stats.acked += 1;
    }
  }

  function answerRead(member: Member, context: string, index: number): void {
    const read = reads.get(context);
    if (!read) {
      violate(`${member.id} answered a read nobody asked for (${context})`);
      return;
    }
    if (read.node !== member.id) violate(`${member.id} answered ${context}, asked of ${read.node}`);
    if (read.answered) return;
    read.answered = true;
    stats.reads += 1;
    if (index < read.floor) violate(`linearizable read: ${context} answered at index ${index} after ${read.floor} was applied`);
  }

  function maybeCompact(member: Member): void {
    const node = member.node!;
    if (member.writing || node.log.applied - node.log.snapshotIndex < 30 || !prng.chance(0.2)) return;
    if (member.applied !== node.log.applied) return;
    // The shell persists the snapshot before the core forgets the log.
    const snapshot = node.compact(JSON.stringify({ digest: member.digest }));
    if (!snapshot) return;
    stats.compactions += 1;
    member.disk.snapshot = snapshot;
    member.disk.entries = member.disk.entries.filter((e) => e.index > snapshot.index);
  }

  // ---- the network ----
  function send(m: Message): void {
    stats.messages += 1;
    if (m.type === 'snap') stats.snapshotsSent += 1;
    if (blocked.has(`${m.from}>${m.to}`)) return;
    if (faulty && prng.chance(lossRate)) return;
    const copies = faulty && prng.chance(duplicateRate) ? 2 : 1;
    for (let i = 0; i < copies; i++) queue.schedule(prng.int(1, delayMaxMs), () => deliver(m));
  }

  function deliver(m: Message): void {
    const member = members.get(m.to);
    if (!member || !member.node || blocked.has(`${m.from}>${m.to}`)) return;
    if (member.pausedUntilMs > queue.nowMs) {
      if (member.inbox.length < 1000) member.inbox.push(() => drive(member, (node) => node.step(m)));
      return;
    }
    note(`${m.from}->${m.to} ${m.type} t${m.term} i${m.index} lt${m.logTerm} n${m.entries.length} c${m.commit}${m.reject ? ' reject' : ''}${m.context ? ` ctx=${m.context}` : ''}`);
    drive(member, (node) => node.step(m));
  }

  // ---- clocks ----
  for (const member of members.values()) {
    const loop = () => {
      queue.schedule(tickMs, loop);
      if (!member.node) return;
      if (member.pausedUntilMs > queue.nowMs) {
        member.missedTicks += 1;
        return;
      }
      drive(member, (node) => node.tick());
    };
    queue.schedule(prng.int(0, tickMs - 1), loop);
  }

  function resume(member: Member): void {
    if (!member.node) return;
    member.pausedUntilMs = 0;
    const missed = options.pausesStopClock ? 0 : member.missedTicks;
    member.missedTicks = 0;
    note(`${member.id} resumes (${missed} missed ticks)`);
    for (let i = 0; i < missed; i++) drive(member, (node) => node.tick());
    const inbox = member.inbox;
    member.inbox = [];
    // Sockets are read in no particular order after a pause.
    for (let i = inbox.length - 1; i > 0; i--) {
      const j = prng.int(0, i);
      [inbox[i], inbox[j]] = [inbox[j], inbox[i]];
    }
    for (const run of inbox) if (member.node && member.pausedUntilMs <= queue.nowMs) run();
  }

  // ---- clients ----
  let proposalSeq = 0;
  let readSeq = 0;
  const liveMembers = () => [...members.values()].filter((m) => m.node !== null);
  const clientLoop = () => {
    if (queue.nowMs >= faultyMs + healMs - quietMs) return;
    queue.schedule(prng.int(1, 8), clientLoop);
    const live = liveMembers();
    if (live.length === 0) return;
    const member = prng.pick(live);
    const request = prng.chance(0.6) ? 'propose' : 'read';
    const floor = maxApplied;
    const issue = () => clientRequest(member, request, floor);
    if (running(member)) issue();
    else if (member.inbox.length < 1000) member.inbox.push(issue);
  };

  function clientRequest(member: Member, request: 'propose' | 'read', floor: number): void {
    if (request === 'propose') {
      const data = `p${++proposalSeq}`;
      drive(member, (node) => {
        const result = node.propose(data);
        if (result.ok) proposals.set(data, { node: member.id, index: result.index, term: result.term });
      });
    } else {
      const context = `r${++readSeq}`;
      // The read must reflect everything applied anywhere before it was issued.
      reads.set(context, { node: member.id, floor, answered: false });
      drive(member, (node) => {
        const result = node.readIndex(context);
        if (result !== 'accepted' && result !== 'forwarded') reads.get(context)!.answered = true;
        else if (readOnly === 'lease' && node.leaseValid()) stats.leaseReads += 1;
      });
    }
  }
  queue.schedule(1, clientLoop);

  // ---- faults ----
  function crash(victim: Member): void {
    if (!victim.node) return;
      stats.crashes += 1;
    note(`${victim.id} crashes`);
    // A disk write under way either landed or was lost; nothing after it happened.
    if (victim.writing && prng.chance(0.5)) persist(victim, victim.writing.rd);
    victim.node = null;
    victim.writing = null;
    victim.inbox = [];
    queue.schedule(prng.int(30, 400), () => {
      if (victim.node || victim.removed) return;
      note(`${victim.id} restarts`);
      start(victim);
    });
  }

  const figure8Loop = () => {
    if (!faulty) return;
    queue.schedule(prng.int(5, 40), figure8Loop);
    const live = liveMembers();
    const leader = live.find((m) => m.node?.role === 'leader');
    if (leader && prng.chance(0.7)) crash(leader);
    else if (live.length > 3 && prng.chance(0.3)) crash(prng.pick(live));
  };

  const faultLoop = () => {
    if (!faulty) return;
    queue.schedule(prng.int(20, 120), faultLoop);
    const live = liveMembers();
    if (live.length === 0) return;
    const roll = prng.next();
    if (roll < 0.2) {
      // Leaders half the time: the interesting histories (Figure 8 of the paper) need a new
      // leader to die while it is still repairing the others' logs.
      const leaders = live.filter((m) => m.node?.role === 'leader');
      const victim = leaders.length > 0 && prng.chance(0.5) ? prng.pick(leaders) : prng.pick(live);
      if (!victim.node) return;
      crash(victim);
    } else if (roll < 0.35) {
      stats.partitions += 1;
      const shuffled = [...ids];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = prng.int(0, i);
        [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
      }
      const cut = prng.int(1, ids.length - 1);
      const side = new Set(shuffled.slice(0, cut));
      const oneWay = prng.chance(0.3);
      const added: string[] = [];
      for (const a of ids) for (const b of ids) {
        if (side.has(a) && !side.has(b)) added.push(`${a}>${b}`);
        if (!oneWay && !side.has(a) && side.has(b)) added.push(`${a}>${b}`);
      }
      for (const link of added) blocked.add(link);
      note(`partition ${[...side].join(',')} ${oneWay ? '->|' : '|'} rest`);
      queue.schedule(prng.int(50, 600), () => {
        for (const link of added) blocked.delete(link);
      });
    } else if (roll < 0.45) {
      const victim = prng.pick(live);
      if (victim.pausedUntilMs > queue.nowMs) return;
      stats.pauses += 1;
      const ms = prng.int(150, 600); // longer than the election timeout (100-200 ms)
      note(`${victim.id} pauses ${ms}ms`);
      victim.pausedUntilMs = queue.nowMs + ms;
      queue.schedule(ms, () => resume(victim));
    } else if (roll < 0.5) {
      const leader = live.find((m) => m.node?.role === 'leader' && running(m));
      if (!leader) return;
      const to = prng.pick([...leader.node!.voters]);
      stats.transfers += 1;
      drive(leader, (node) => node.transferLeadership(to));
    } else if (roll < 0.55 && spares > 0) {
      changeMembership();
    }
  };
  queue.schedule(50, figure8 ? figure8Loop : faultLoop);

  function changeMembership(): void {
    const leader = liveMembers().find((m) => m.node?.role === 'leader' && running(m));
    if (!leader) return;
    const node = leader.node!;
    // A removed member never comes back under its old id: with a wiped disk it would have
    // forgotten the votes it cast.
    const candidates = ids.filter((id) => id !== leader.id && !members.get(id)!.removed);
    if (candidates.length === 0) return;
    const target = prng.pick(candidates);
    const type = node.voters.has(target) ? 'removeNode' : node.learners.has(target) ? (prng.chance(0.7) ? 'addVoter' : 'removeNode') : 'addLearner';
    // Keep at least three voters so the faults above stay survivable by design.
    if (type === 'removeNode' && node.voters.has(target) && node.voters.size <= 3) return;
    drive(leader, (n) => {
      const result = n.proposeConfChange({ type, node: target });
      if (result.ok) {
        stats.confChanges += 1;
        note(`${leader.id} proposes ${type} ${target} at ${result.index}`);
      }
    });
    // A member added for the first time starts empty; the leader sends it a snapshot or the log.
    const spare = members.get(target)!;
    if (type === 'addLearner' && !spare.node) start(spare);
  }

  // ---- run: faults, then healing ----
  const run = (untilMs: number) => {
    for (;;) {
      const event = queue.pop();
      if (!event) return;
      if (event.cancelled) continue;
      stats.events += 1;
      event.run();
      if (queue.nowMs >= untilMs) return;
      if (violations.length > 0 && !options.trace) return;
    }
  };
  run(faultyMs);
  faulty = false;
  blocked.clear();
  for (const member of members.values()) {
    if (member.pausedUntilMs > queue.nowMs) resume(member);
    if (!member.node && !member.removed && (initialVoters.includes(member.id) || member.disk.hardState.term > 0)) start(member);
  }
  const appliedAtHeal = maxApplied;
  run(faultyMs + healMs);
  // Slow configurations (one entry per message, one in flight) may need longer to catch up.
  for (let extra = 0; extra < 20 && violations.length === 0 && !converged(); extra++) run(queue.nowMs + 500);
  if (violations.length === 0 && maxApplied <= appliedAtHeal) violate(`nothing committed in the ${healMs} ms after healing`);

  if (violations.length === 0) finalChecks();
  return { violations, trace, stats };

  function converged(): boolean {
    const maxAcked = Math.max(0, ...acked.values());
    return liveMembers().every((m) => m.applied >= maxAcked) && liveMembers().some((m) => m.node!.role === 'leader');
  }

  function finalChecks(): void {
    const live = liveMembers();
    const leader = live.find((m) => m.node!.role === 'leader');
    if (!leader) {
      violate(`no leader ${healMs} ms after healing`);
      return;
    }
    const voters = leader.node!.voters;
    const maxAcked = Math.max(0, ...acked.values());
    for (const member of live) {
      if (!voters.has(member.id) && !leader.node!.learners.has(member.id)) continue;
      if (member.applied < maxAcked) violate(`${member.id} applied ${member.applied}, below acknowledged ${maxAcked}`);
    }
    for (const [data, index] of acked) {
      const proposal = proposals.get(data)!;
      if (committedTermAt.get(index) !== proposal.term) violate(`acknowledged ${data} at ${index} is not what was applied there`);
    }
  }
}
