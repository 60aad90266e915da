// Scenarios of the pure Raft core (src/raft), driven by hand: which messages arrive, in what
// order, and which are dropped. The seeded cluster simulation is in raft-sim.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RaftNode, type RaftMutations } from '../src/raft/node.js';
import type { Entry, Message, NodeId, PersistedState, RaftConfig, ReadState } from '../src/raft/types.js';
import { seededPrng } from './support/prng.js';

type Filter = (m: Message) => boolean;

/** Nodes, a FIFO of messages in flight, and a shell that persists and applies at once. */
class Cluster {
  readonly nodes = new Map<NodeId, RaftNode>();
  readonly applied = new Map<NodeId, Entry[]>();
  readonly reads = new Map<NodeId, ReadState[]>();
  readonly dropped = new Map<NodeId, string[]>();
  inFlight: Message[] = [];
  /** Messages for which this returns false are lost. */
  allow: Filter = () => true;

  constructor(
    readonly ids: NodeId[],
    readonly overrides: Partial<RaftConfig> = {},
    states: Partial<Record<NodeId, PersistedState>> = {},
    readonly mutations: RaftMutations = {},
  ) {
    for (const id of ids) this.add(id, states[id]);
  }

  add(id: NodeId, state?: PersistedState, voters = this.ids): RaftNode {
    const prng = seededPrng(this.ids.indexOf(id) + 1);
    const config: RaftConfig = {
      id, voters, electionTicks: 10, heartbeatTicks: 1, preVote: false, checkQuorum: false, readOnly: 'safe',
      random: () => prng.next(), entriesPerMessageMax: 64, bytesPerMessageMax: 1 << 20, inflightMessagesMax: 256,
      snapshotChunkBytesMax: 1 << 20, learnerCatchUpEntriesMax: 10, uncommittedBytesMax: 1 << 20, ...this.overrides,
    };
    const node = new RaftNode(config, state, this.mutations);
    this.nodes.set(id, node);
    this.applied.set(id, this.applied.get(id) ?? []);
    this.reads.set(id, []);
    this.dropped.set(id, []);
    this.drain(id);
    return node;
  }

  node(id: NodeId): RaftNode {
    return this.nodes.get(id)!;
  }

  drain(id: NodeId): void {
    const node = this.nodes.get(id);
    if (!node) return;
    for (let round = 0; round < 100 && node.hasReady(); round++) {
      const rd = node.ready();
      for (const m of rd.messages) this.inFlight.push(m);
      this.applied.get(id)!.push(...rd.committedEntries);
      this.reads.get(id)!.push(...rd.readStates);
      this.dropped.get(id)!.push(...rd.readsDropped);
      node.advance(rd);
    }
  }

  /** Delivers messages in order (and what they cause) until none is left. */
  deliver(limit = 10_000): void {
    for (let i = 0; i < limit && this.inFlight.length > 0; i++) {
      const m = this.inFlight.shift()!;
      if (!this.allow(m) || !this.nodes.has(m.to)) continue;
      this.node(m.to).step(m);
      this.drain(m.to);
    }
  }

  /** Takes the messages in flight that match, out of the queue. */
  hold(match: Filter): Message[] {
    const held = this.inFlight.filter(match);
    this.inFlight = this.inFlight.filter((m) => !match(m));
    return held;
  }

  tick(id: NodeId, times = 1): void {
    for (let i = 0; i < times; i++) {
      this.node(id).tick();
      this.drain(id);
    }
  }

  elect(id: NodeId): void {
    this.node(id).campaignNow();
    this.drain(id);
    this.deliver();
  }

  propose(id: NodeId, data: string): number {
    const result = this.node(id).propose(data);
    assert.ok(result.ok, `propose on ${id}`);
    this.drain(id);
    return result.index;
  }

  crash(id: NodeId): void {
    this.nodes.delete(id);
  }
}

const isolate = (id: NodeId): Filter => (m) => m.from !== id && m.to !== id;
const entries = (...terms: number[]): Entry[] => terms.map((term, i) => ({ index: i + 1, term, type: 'normal', data: `e${i + 1}t${term}` }));
const state = (term: number, log: Entry[]): PersistedState => ({ hardState: { term, vote: '', commit: 0 }, snapshot: null, entries: log });

describe('raft core: elections', () => {
  it('elects one leader and replicates proposals to every member', () => {
    const c = new Cluster(['n1', 'n2', 'n3']);
    c.elect('n1');
    assert.equal(c.node('n1').role, 'leader');
    assert.equal(c.node('n2').lead, 'n1');
    const index = c.propose('n1', 'x');
    c.deliver();
    c.tick('n1');
    c.deliver();
    for (const id of c.ids) assert.deepEqual(c.applied.get(id)!.map((e) => e.data).filter(Boolean), ['x'], id);
    assert.equal(c.node('n3').log.committed, index);
  });

  it('refuses a vote to a candidate whose log is behind (the election restriction)', () => {
    for (const skipUpToDateCheck of [false, true]) {
      const c = new Cluster(['n1', 'n2', 'n3'], {}, { n1: state(1, entries(1)), n2: state(1, entries(1, 1)), n3: state(1, entries(1, 1)) }, { skipUpToDateCheck });
      c.elect('n1');
      // With the check, n2 and n3 hold an entry n1 lacks: n1 must not win.
      assert.equal(c.node('n1').role === 'leader', skipUpToDateCheck, `skipUpToDateCheck=${skipUpToDateCheck}`);
    }
  });

  it('a randomized timeout elects a leader from ticks alone, with pre-vote', () => {
    const c = new Cluster(['n1', 'n2', 'n3'], { preVote: true, checkQuorum: true });
    for (let t = 0; t < 40 && ![...c.nodes.values()].some((n) => n.role === 'leader'); t++) {
      for (const id of c.ids) c.tick(id);
      c.deliver();
    }
    const leaders = [...c.nodes.values()].filter((n) => n.role === 'leader');
    assert.equal(leaders.length, 1);
    assert.equal(leaders[0].term, 1, 'pre-vote: the winner raised its term once');
  });

  it('pre-vote: a partitioned node does not raise its term, and does not depose the leader when it returns', () => {
    for (const preVote of [true, false]) {
      const c = new Cluster(['n1', 'n2', 'n3'], { preVote });
      c.elect('n1');
      const term = c.node('n1').term;
      c.allow = isolate('n3');
      c.tick('n3', 100);
      c.deliver();
      c.allow = () => true;
      // n3 comes back: its pre-votes (or votes) reach the others while n1 keeps heartbeating.
      c.tick('n3', 30);
      c.tick('n1', 1);
      c.deliver();
      if (preVote) {
        assert.equal(c.node('n3').term, term, 'no term inflation behind a partition');
        assert.equal(c.node('n1').role, 'leader');
        assert.equal(c.node('n1').term, term);
      } else {
        assert.ok(c.node('n3').term > term + 5, 'without pre-vote the isolated node inflates its term');
        assert.notEqual(c.node('n1').term, term, 'and deposes the leader when it returns');
      }
    }
  });

  it('check-quorum: a leader cut off from a majority steps down within two election timeouts', () => {
    for (const checkQuorum of [true, false]) {
      const c = new Cluster(['n1', 'n2', 'n3'], { checkQuorum });
      c.elect('n1');
      c.allow = isolate('n1');
      for (let t = 0; t < 20; t++) {
        c.tick('n1');
        c.deliver();
      }
      assert.equal(c.node('n1').role, checkQuorum ? 'follower' : 'leader', `checkQuorum=${checkQuorum}`);
    }
  });

  it('check-quorum: a follower that hears from its leader ignores a higher-term vote request (leader stickiness)', () => {
    const c = new Cluster(['n1', 'n2', 'n3'], { checkQuorum: true });
    c.elect('n1');
    // n3 forces an election at once (as if its timer fired early); n2 just heard from n1.
    c.tick('n1');
    c.deliver();
    c.node('n3').campaignNow();
    c.drain('n3');
    c.deliver();
    assert.equal(c.node('n1').role, 'leader');
    assert.notEqual(c.node('n3').role, 'leader');
  });
});

describe('raft core: replication and commit', () => {
  it('Figure 8: a leader does not commit an entry of an earlier term by counting replicas', () => {
    for (const commitOlderTerms of [false, true]) {
      // (c) of Figure 8: S1 leads term 4 holding 2@t2; S5 holds 2@t3 from its own term.
      const c = new Cluster(
        ['s1', 's2', 's3', 's4', 's5'],
        { entriesPerMessageMax: 1 },
        { s1: state(3, entries(1, 2)), s2: state(3, entries(1, 2)), s3: state(3, entries(1)), s4: state(3, entries(1)), s5: state(3, entries(1, 3)) },
        { commitOlderTerms },
      );
      // S5 is cut off; S1's entry of term 4 is stored by nobody (S3 and S4 see it only while
      // they cannot take it), and S2 only votes, so S1 never learns S2 holds 2@t2: S1 repairs
      // S3 and S4 one entry per message.
      const storable = (m: Message) => m.entries.some((e) => e.term === 4) && (c.nodes.get(m.to)?.log.lastIndex() ?? 0) >= 2;
      c.allow = (m) =>
        m.to !== 's5' && m.from !== 's5' && !storable(m) && !((m.to === 's2' || m.from === 's2') && (m.type === 'app' || m.type === 'appResp'));
      c.node('s1').campaignNow();
      c.drain('s1');
      c.deliver();
      assert.equal(c.node('s1').role, 'leader');
      assert.equal(c.node('s1').term, 4);
      c.tick('s1', 3);
      c.deliver();
      assert.equal(c.node('s3').log.term(2), 2, 's3 now holds 2@t2');
      assert.equal(c.node('s4').log.term(2), 2, 's4 now holds 2@t2');
      const committedBy1 = c.node('s1').log.committed;
      // S1 dies; S5 wins term 5 with S2, S3 and S4 (its last term, 3, beats their 2).
      c.crash('s1');
      c.inFlight = [];
      c.allow = () => true;
      // Its first try is in term 4, where everyone voted already; the second is term 5.
      c.elect('s5');
      if (c.node('s5').role !== 'leader') c.elect('s5');
      assert.equal(c.node('s5').role, 'leader');
      assert.equal(c.node('s5').term, 5);
      c.tick('s5');
      c.deliver();
      if (!commitOlderTerms) {
        assert.ok(committedBy1 < 2, 'index 2 was never committed by S1...');
        assert.equal(c.node('s3').log.term(2), 3, '...so S5 replacing it everywhere is safe');
      } else {
        // The broken rule committed 2@t2 (S3 and S4 learned it from heartbeats); S5 now leads
        // with 2@t3: two members hold different entries at a committed index.
        assert.equal(committedBy1, 2);
        assert.equal(c.node('s3').log.committed >= 2 && c.node('s3').log.term(2), 2);
        assert.equal(c.node('s5').log.term(2), 3);
      }
    }
  });

  it('a follower with a long divergent log is repaired by term-based back-off in few round trips', () => {
    const divergent = entries(1, 1, ...Array.from({ length: 50 }, () => 2));
    const c = new Cluster(['n1', 'n2', 'n3'], {}, { n1: state(3, entries(1, 1, 3)), n2: state(3, entries(1, 1, 3)), n3: state(2, divergent) });
    c.elect('n1');
    let appends = 0;
    c.allow = (m) => {
      if (m.type === 'app' && m.to === 'n3') appends += 1;
      return true;
    };
    c.tick('n1');
    c.deliver();
    assert.equal(c.node('n3').log.lastIndex(), c.node('n1').log.lastIndex());
    assert.equal(c.node('n3').log.term(3), 3);
    assert.ok(appends < 8, `repaired in ${appends} appends, not one per divergent entry`);
  });

  it('pipelines at most inflightMessagesMax appends, batched by entriesPerMessageMax', () => {
    const c = new Cluster(['n1', 'n2', 'n3'], { entriesPerMessageMax: 2, inflightMessagesMax: 3 });
    c.elect('n1');
    for (let i = 0; i < 20; i++) c.propose('n1', `p${i}`);
    const toN2 = c.inFlight.filter((m) => m.type === 'app' && m.to === 'n2');
    assert.equal(toN2.length, 3, 'three appends in flight, then it waits for acks');
    assert.ok(toN2.every((m) => m.entries.length <= 2));
    c.deliver();
    c.tick('n1');
    c.deliver();
    assert.equal(c.node('n2').log.committed, c.node('n1').log.lastIndex());
  });

  it('a lagging follower past the compacted log gets a snapshot, then the rest', () => {
    const c = new Cluster(['n1', 'n2', 'n3']);
    c.elect('n1');
    c.allow = isolate('n3');
    for (let i = 0; i < 30; i++) c.propose('n1', `p${i}`);
    c.deliver();
    c.tick('n1');
    c.deliver();
    const snapshot = c.node('n1').compact('state@' + c.node('n1').log.applied);
    assert.ok(snapshot && snapshot.index >= 30);
    c.propose('n1', 'after');
    c.allow = () => true;
    let snaps = 0;
    const base = c.allow;
    c.allow = (m) => (m.type === 'snap' && snaps++, base(m));
    c.tick('n1');
    c.deliver();
    c.tick('n1');
    c.deliver();
    assert.equal(snaps, 1);
    assert.equal(c.node('n3').log.snapshotIndex, snapshot.index);
    assert.equal(c.node('n3').log.committed, c.node('n1').log.committed);
    assert.equal(c.applied.get('n3')!.at(-1)!.data, 'after');
  });
});

describe('raft core: snapshots in chunks', () => {
  it('a snapshot goes in chunks that may arrive out of order or twice; a lost chunk means a resend', () => {
    const c = new Cluster(['n1', 'n2', 'n3'], { snapshotChunkBytesMax: 3 });
    c.elect('n1');
    c.allow = isolate('n3');
    for (let i = 0; i < 10; i++) c.propose('n1', `p${i}`);
    c.deliver();
    c.tick('n1');
    c.deliver();
    const data = 'state-machine-image';
    const snapshot = c.node('n1').compact(data)!;
    // The first attempt loses its second chunk; the rest arrive reversed, one of them twice.
    const chunks: Message[] = [];
    c.allow = (m) => (m.type === 'snap' ? (chunks.push(m), false) : true);
    // The leader notices n3's appends were lost after two heartbeat rounds, probes, and
    // finds the entries n3 needs compacted away.
    for (let t = 0; t < 5 && chunks.length === 0; t++) {
      c.tick('n1');
      c.deliver();
    }
    c.allow = () => true;
    assert.equal(chunks.length, Math.ceil(data.length / 3));
    assert.ok(chunks.every((m) => m.snapshot!.data.length <= 3 && m.total === data.length));
    for (const m of [...chunks.slice(2).reverse(), chunks[0], chunks[0]]) c.node('n3').step(m);
    c.drain('n3');
    assert.equal(c.node('n3').log.snapshotIndex, 0, 'incomplete: not restored');
    c.deliver();
    // No answer: after an election timeout the leader sends it again, whole this time.
    for (let t = 0; t < 12; t++) {
      c.tick('n1');
      c.deliver();
    }
    assert.equal(c.node('n3').log.snapshotIndex, snapshot.index);
    assert.equal(c.node('n3').log.snapshot!.data, data);
    assert.equal(c.node('n3').log.committed, c.node('n1').log.committed);
  });
});

describe('raft core: reads', () => {
  it('ReadIndex answers only after a quorum acknowledged a heartbeat sent after the read arrived', () => {
    const c = new Cluster(['n1', 'n2', 'n3']);
    c.elect('n1');
    c.propose('n1', 'x');
    c.deliver();
    // A heartbeat round goes out before the read; its acks come back after the read.
    c.tick('n1');
    const early = c.hold(() => true);
    for (const m of early) {
      c.node(m.to).step(m);
      c.drain(m.to);
    }
    const earlyAcks = c.hold((m) => m.type === 'heartbeatResp');
    assert.equal(c.node('n1').readIndex('read-1'), 'accepted');
    c.drain('n1');
    for (const m of earlyAcks) c.node('n1').step(m);
    c.drain('n1');
    assert.deepEqual(c.reads.get('n1'), [], 'acks of an earlier heartbeat prove nothing about this read');
    c.deliver();
    assert.deepEqual(c.reads.get('n1'), [{ context: 'read-1', index: c.node('n1').log.committed }]);
  });

  it('ReadIndex: a pending context is refused when reused, and is dropped (never answered) when leadership is lost', () => {
    const c = new Cluster(['n1', 'n2', 'n3'], { checkQuorum: true });
    c.elect('n1');
    c.allow = isolate('n1');
    assert.equal(c.node('n1').readIndex('r'), 'accepted');
    assert.equal(c.node('n1').readIndex('r'), 'duplicate');
    c.drain('n1');
    c.deliver();
    for (let t = 0; t < 20 && c.node('n1').role === 'leader'; t++) c.tick('n1');
    assert.equal(c.node('n1').role, 'follower');
    assert.deepEqual(c.dropped.get('n1'), ['r']);
    assert.deepEqual(c.reads.get('n1'), []);
  });

  it('ReadIndex from a follower goes through the leader and comes back with the leader’s commit index', () => {
    const c = new Cluster(['n1', 'n2', 'n3']);
    c.elect('n1');
    c.propose('n1', 'x');
    c.deliver();
    assert.equal(c.node('n3').readIndex('f-1'), 'forwarded');
    c.drain('n3');
    c.deliver();
    assert.deepEqual(c.reads.get('n3'), [{ context: 'f-1', index: c.node('n1').log.committed }]);
  });

  it('a forwarded read is dropped when the follower’s leader changes, and a late answer to it is not taken', () => {
    const c = new Cluster(['n1', 'n2', 'n3']);
    c.elect('n1');
    c.propose('n1', 'x');
    c.deliver();
    assert.equal(c.node('n3').readIndex('f-2'), 'forwarded');
    assert.equal(c.node('n3').readIndex('f-2'), 'duplicate');
    c.drain('n3');
    const late: Message[] = [];
    c.allow = (m) => (m.type === 'readIndexResp' ? (late.push(m), false) : true);
    c.deliver();
    assert.equal(late.length, 1);
    c.allow = () => true;
    c.elect('n2');
    assert.equal(c.node('n3').lead, 'n2');
    assert.deepEqual(c.dropped.get('n3'), ['f-2']);
    // The old leader's answer arrives now: from an older term, for a read no longer waiting.
    c.node('n3').step(late[0]);
    c.drain('n3');
    assert.deepEqual(c.reads.get('n3'), []);
  });

  it('a new leader answers no read until it has committed an entry of its own term', () => {
    const c = new Cluster(['n1', 'n2', 'n3']);
    c.allow = (m) => m.type !== 'app' && m.type !== 'appResp';
    c.elect('n1');
    c.node('n1').readIndex('early');
    c.drain('n1');
    c.deliver();
    c.tick('n1');
    c.deliver();
    assert.deepEqual(c.reads.get('n1'), []);
    c.allow = () => true;
    c.tick('n1');
    c.deliver();
    c.tick('n1');
    c.deliver();
    assert.equal(c.reads.get('n1')!.length, 1);
    assert.equal(c.reads.get('n1')![0].index, c.node('n1').log.committed);
  });

  it('check-quorum: a member restarted with a term refuses votes for one election timeout (it may have acked a lease)', () => {
    const c = new Cluster(['n1', 'n2', 'n3'], { checkQuorum: true, readOnly: 'lease' });
    c.elect('n1');
    c.tick('n1');
    c.deliver();
    assert.ok(c.node('n1').leaseValid());
    // n2 restarts from its disk; n1 is cut off from everyone; n3 campaigns at once.
    const n2 = c.node('n2');
    const disk: PersistedState = { hardState: n2.hardState(), snapshot: n2.log.snapshot, entries: [...n2.log.entries] };
    c.crash('n2');
    c.add('n2', disk);
    c.allow = isolate('n1');
    c.node('n3').campaignNow();
    c.drain('n3');
    c.deliver();
    assert.notEqual(c.node('n3').role, 'leader', 'n2 honours the lease it may have acked before the crash');
    // After an election timeout of its own, it votes again.
    for (let t = 0; t < 10; t++) c.tick('n2');
    c.node('n3').campaignNow();
    c.drain('n3');
    c.deliver();
    assert.equal(c.node('n3').role, 'leader');
  });

  it('lease reads: answered at once while a quorum acked recently, a heartbeat round once the lease ran out', () => {
    const c = new Cluster(['n1', 'n2', 'n3'], { checkQuorum: true, readOnly: 'lease' });
    c.elect('n1');
    c.tick('n1');
    c.deliver();
    assert.ok(c.node('n1').leaseValid());
    c.node('n1').readIndex('lease-1');
    c.drain('n1');
    assert.equal(c.reads.get('n1')!.length, 1, 'answered with no round trip');
    assert.equal(c.inFlight.length, 0);
    // Silence from the followers for most of an election timeout: the lease is gone.
    c.allow = isolate('n1');
    c.tick('n1', 9);
    c.deliver();
    assert.equal(c.node('n1').leaseValid(), false);
    c.node('n1').readIndex('lease-2');
    c.drain('n1');
    assert.equal(c.reads.get('n1')!.length, 1, 'no answer without the lease or a quorum round');
  });
});

describe('raft core: leadership transfer and membership', () => {
  it('transfers leadership to a caught-up voter, which wins the next term at once', () => {
    const c = new Cluster(['n1', 'n2', 'n3'], { preVote: true, checkQuorum: true });
    c.elect('n1');
    const term = c.node('n1').term;
    c.propose('n1', 'x');
    c.deliver();
    assert.ok(c.node('n1').transferLeadership('n2'));
    assert.equal(c.node('n1').propose('y').ok, false, 'proposals wait while transferring');
    c.drain('n1');
    c.deliver();
    assert.equal(c.node('n2').role, 'leader');
    assert.equal(c.node('n2').term, term + 1);
    assert.equal(c.node('n1').role, 'follower');
  });

  it('adds a learner that catches up, then promotes it; a voter that is not yet a learner is refused', () => {
    const c = new Cluster(['n1', 'n2', 'n3']);
    c.elect('n1');
    for (let i = 0; i < 5; i++) c.propose('n1', `p${i}`);
    c.deliver();
    const refused = c.node('n1').proposeConfChange({ type: 'addVoter', node: 'n4' });
    assert.deepEqual(refused.ok ? null : refused.reason, 'invalidConfChange');
    assert.ok(c.node('n1').proposeConfChange({ type: 'addLearner', node: 'n4' }).ok);
    c.drain('n1');
    c.add('n4', undefined, ['n1', 'n2', 'n3']);
    c.deliver();
    c.tick('n1');
    c.deliver();
    assert.deepEqual(c.node('n1').confState(), { voters: ['n1', 'n2', 'n3'], learners: ['n4'] });
    assert.equal(c.node('n4').log.committed, c.node('n1').log.committed, 'the learner caught up');
    assert.ok(c.node('n1').proposeConfChange({ type: 'addVoter', node: 'n4' }).ok);
    c.drain('n1');
    c.deliver();
    c.tick('n1');
    c.deliver();
    assert.deepEqual(c.node('n1').confState().voters, ['n1', 'n2', 'n3', 'n4']);
    assert.deepEqual(c.node('n4').confState().voters, ['n1', 'n2', 'n3', 'n4']);
    // Four voters: a commit now needs three of them.
    c.allow = (m) => m.to !== 'n3' && m.to !== 'n4';
    c.propose('n1', 'needs-three');
    c.deliver();
    c.tick('n1');
    c.deliver();
    assert.notEqual(c.node('n1').log.entry(c.node('n1').log.committed)?.data, 'needs-three');
  });
});
