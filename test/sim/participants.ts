// Simulated participants for the engine simulation: each branch keeps its local state behind
// the barrier (every op applied at most once, a compensation before its action is a no-op
// that also blocks the late action), answers on virtual time, and may be slow (the call
// times out while the effect still lands), fail transiently, or receive a call twice. 3PC
// participants commit on their own after acknowledging preCommit, as the SDK's helper does.
import type { BranchCaller, CallContext } from '../../src/tx/engine.js';
import type { BranchCall, CallResult, Mode, Tx } from '../../src/tx/types.js';
import type { Prng } from '../support/prng.js';
import type { SimNode } from './store.js';
import type { SimWorld } from './world.js';

export interface ParticipantFaults {
  transient: number;
  /** Chance the answer comes after the request timeout (the effect may still land). */
  slow: number;
  duplicate: number;
}

export const noParticipantFaults: ParticipantFaults = { transient: 0, slow: 0, duplicate: 0 };

/** One branch's local state at its participant. */
export interface BranchState {
  /** Ops recorded in the barrier table (applied, or skipped as hanging/null). */
  barrier: Set<string>;
  /** The forward effect took place (action, try, prepare vote, xa action). */
  forward: boolean;
  /** The forward effect was undone (compensate, cancel, rollback, abort after a vote). */
  undone: boolean;
  committed: boolean;
  autoCommitted: boolean;
  /** 3PC: preCommit acknowledged; the auto-commit timer runs. */
  preCommitted: boolean;
  deliveries: number;
}

export interface MessageApp {
  /** When the app's local transaction is decided (committed or rolled back). */
  decidedAtMs: number;
  committed: boolean;
}

export class SimParticipants {
  readonly branches = new Map<string, BranchState>();
  /** Branches that refuse their forward op (a business failure), by `${gid}/${branchId}`. */
  readonly refusing = new Set<string>();
  readonly apps = new Map<string, MessageApp>();
  readonly violations: string[] = [];
  faults: ParticipantFaults = noParticipantFaults;
  staleCalls = 0;
  /** TCC and XA: branch ids in the order their second phase first took effect, by gid. */
  readonly secondPhaseOrder = new Map<string, string[]>();
  /** Messages: when the first step first took effect, by gid (virtual ms). */
  readonly firstDeliveryAtMs = new Map<string, number>();
  private readonly fences = new Map<string, number>();

  constructor(private readonly world: SimWorld, private readonly prng: Prng, private readonly autoCommitAfterMs: number) {}

  stateOf(gid: string, branchId: string): BranchState {
    const key = `${gid}/${branchId}`;
    let state = this.branches.get(key);
    if (!state) {
      state = { barrier: new Set(), forward: false, undone: false, committed: false, autoCommitted: false, preCommitted: false, deliveries: 0 };
      this.branches.set(key, state);
    }
    return state;
  }

  /** The caller an Engine on `node` is given. */
  callerFor(node: SimNode): BranchCaller {
    return {
      call: (tx, call, context) => this.call(node, tx, call, context),
    };
  }

  private call(node: SimNode, tx: Tx, call: BranchCall, context: CallContext): Promise<CallResult> {
    const incarnation = node.incarnation;
    const timeoutMs = tx.options.requestTimeoutMs;
    const transient = this.prng.chance(this.faults.transient);
    const slow = this.prng.chance(this.faults.slow);
    const duplicate = this.prng.chance(this.faults.duplicate);
    const effectLands = !slow || this.prng.chance(0.5);
    const latencyMs = slow ? this.prng.int(timeoutMs + 1, timeoutMs * 3) : this.prng.int(0, Math.max(1, Math.floor(timeoutMs / 4)));
    return new Promise<CallResult>((resolve) => {
      const answer = (result: CallResult) => {
        if (node.alive && node.incarnation === incarnation) resolve(result);
      };
      if (transient) {
        this.world.schedule(latencyMs % timeoutMs, () => answer({ branchId: call.branchId, op: call.op, outcome: 'transient', detail: 'simulated 503' }));
        return;
      }
      const deliver = () => this.handle(tx.mode, tx.gid, call, context.fence);
      this.world.schedule(latencyMs, () => {
        if (!effectLands) return;
        const outcome = deliver();
        if (duplicate) this.world.schedule(this.prng.int(0, 5), () => void deliver());
        if (!slow) answer({ branchId: call.branchId, op: call.op, outcome });
      });
      if (slow) this.world.schedule(timeoutMs, () => answer({ branchId: call.branchId, op: call.op, outcome: 'transient', detail: 'simulated timeout' }));
    });
  }

  /** What the participant does with one delivered call; returns its answer. */
  handle(mode: Mode, gid: string, call: BranchCall, fence: number): CallResult['outcome'] {
    const seen = this.fences.get(gid) ?? 0;
    if (fence < seen) this.staleCalls += 1;
    else this.fences.set(gid, fence);
    if (mode === 'msg' && call.op === 'msg') return this.queryPrepared(gid);
    const state = this.stateOf(gid, call.branchId);
    state.deliveries += 1;
    if (mode === 'msg' && !this.firstDeliveryAtMs.has(gid)) this.firstDeliveryAtMs.set(gid, this.world.nowMs);
    if ((mode === 'tcc' || mode === 'xa') && !state.committed && !state.barrier.has('cancel-or-rollback')) {
      const order = this.secondPhaseOrder.get(gid) ?? [];
      order.push(call.branchId);
      this.secondPhaseOrder.set(gid, order);
    }
    const refuses = this.refusing.has(`${gid}/${call.branchId}`);
    switch (call.op) {
      case 'action':
        return mode === 'saga' ? this.forward(state, 'action', 'compensate', refuses) : this.forward(state, 'action', 'none', false);
      case 'prepare':
      case 'canCommit':
        return this.forward(state, call.op, call.op === 'prepare' ? 'rollback' : 'abort', refuses);
      case 'compensate':
      case 'cancel':
      case 'rollback':
        return this.undo(gid, call.branchId, state, call.op);
      case 'abort':
        if (state.committed) this.violations.push(`${gid}/${call.branchId}: 3pc abort after the participant committed${state.autoCommitted ? ' on its own (autoCommitAfterMs)' : ''}`);
        return this.undo(gid, call.branchId, state, 'abort');
      case 'confirm':
      case 'commit':
      case 'doCommit':
        return this.commit(gid, call.branchId, state, call.op);
      case 'preCommit':
        return this.preCommit(state);
      default:
        this.violations.push(`${gid}/${call.branchId}: unexpected op ${call.op}`);
        return 'failure';
    }
  }

  /** The app's own first-phase call (TCC try, XA action), outside the coordinator. */
  appForward(gid: string, branchId: string): 'success' | 'failure' {
    const state = this.stateOf(gid, branchId);
    const undoOp = 'cancel-or-rollback';
    // A try that arrives after its cancel is hanging: the barrier refuses it.
    if (state.barrier.has(undoOp)) return 'failure';
    if (this.refusing.has(`${gid}/${branchId}`)) return 'failure';
    state.barrier.add('forward');
    state.forward = true;
    return 'success';
  }

  private forward(state: BranchState, op: string, undoOp: string, refuses: boolean): CallResult['outcome'] {
    if (state.barrier.has(undoOp)) return 'failure';
    if (state.barrier.has(op)) return 'success';
    if (refuses) return 'failure';
    state.barrier.add(op);
    state.forward = true;
    return 'success';
  }

  private undo(gid: string, branchId: string, state: BranchState, op: string): CallResult['outcome'] {
    const key = op === 'cancel' || op === 'rollback' ? 'cancel-or-rollback' : op;
    if (state.barrier.has(key)) return 'success';
    state.barrier.add(key);
    // 2PC rollback and the TCC/XA second phase share one barrier row, so keep both keys.
    state.barrier.add(op);
    if (state.committed) {
      this.violations.push(`${gid}/${branchId}: ${op} after commit`);
      return 'success';
    }
    if (state.forward) state.undone = true;
    return 'success';
  }

  private commit(gid: string, branchId: string, state: BranchState, op: string): CallResult['outcome'] {
    if (state.committed) return 'success';
    if (state.undone) this.violations.push(`${gid}/${branchId}: ${op} after the branch was undone`);
    if (!state.forward && op !== 'doCommit') this.violations.push(`${gid}/${branchId}: ${op} before the first phase took effect`);
    state.committed = true;
    return 'success';
  }

  private preCommit(state: BranchState): CallResult['outcome'] {
    if (state.undone) return 'failure';
    if (!state.preCommitted) {
      state.preCommitted = true;
      this.world.schedule(this.autoCommitAfterMs, () => {
        if (state.committed || state.undone) return;
        state.committed = true;
        state.autoCommitted = true;
      });
    }
    return 'success';
  }

  private queryPrepared(gid: string): CallResult['outcome'] {
    const app = this.apps.get(gid);
    if (!app || this.world.nowMs < app.decidedAtMs) return 'ongoing';
    return app.committed ? 'success' : 'failure';
  }
}
