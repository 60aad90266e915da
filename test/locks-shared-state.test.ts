// The pure part of locks on a shared store: one lock name's record, decided by the manager's
// own step. No store here: views are built by hand, as a backend would read them.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { limitDefaults } from '../src/config.js';
import type { AcquireEvent, LockEvent } from '../src/locks/manager.js';
import { decide, emptyRecord, type LockRecord, type RecordView } from '../src/locks/shared-state.js';

const view = (record: LockRecord, nowMs: number, live: string[] = [], sessions: RecordView['sessions'] = new Map()): RecordView => ({ record, sessions, nowMs, liveCoordinators: new Set(live) });

const acquire = (requestId: string, overrides: Partial<AcquireEvent> = {}): AcquireEvent => ({
  type: 'acquire',
  requestId,
  leaseId: `lease-${requestId}`,
  name: 'n',
  mode: 'exclusive',
  permits: 1,
  ttlMs: 1000,
  sessionId: null,
  owner: requestId,
  fair: true,
  waitMs: 5000,
  ...overrides,
});

function run(record: LockRecord, nowMs: number, events: LockEvent[], writer: string, live: string[] = [writer, 'A', 'B']) {
  return decide(limitDefaults, 'n', view(record, nowMs, live), events, writer);
}

describe('shared lock records', () => {
  test('a grant raises the record\'s last token; the record keeps it after the release', () => {
    const first = run(emptyRecord(), 1000, [acquire('A.1')], 'A');
    assert.equal(first.record.leases[0].token, 1);
    assert.equal(first.record.lastToken, 1);
    assert.equal(first.changed, true);
    const released = run(first.record, 1100, [{ type: 'release', requestId: 'A.2', name: 'n', leaseId: 'lease-A.1' }], 'A');
    assert.deepEqual(released.record, { lastToken: 1, leases: [], waiters: [] });
    assert.equal(run(released.record, 1200, [acquire('A.3')], 'A').record.leases[0].token, 2);
  });

  test('a queued request lives in the record; a release by another coordinator grants it and notifies', () => {
    const held = run(emptyRecord(), 1000, [acquire('A.1')], 'A').record;
    const queued = run(held, 1010, [acquire('B.1')], 'B');
    assert.equal(queued.record.waiters.length, 1);
    assert.equal(queued.notify, false, 'only B waits, and B wrote');
    const handed = run(queued.record, 1020, [{ type: 'release', requestId: 'A.2', name: 'n', leaseId: 'lease-A.1' }], 'A');
    assert.equal(handed.notify, true, 'B waited here: B must hear of it');
    assert.deepEqual(handed.record.leases.map((lease) => lease.leaseId), ['lease-B.1']);
    assert.ok(handed.effects.some((effect) => effect.type === 'wake' && effect.requestId === 'B.1'));
  });

  test('requests of a coordinator that stopped heartbeating are dropped, and the next in line moves up', () => {
    let record = run(emptyRecord(), 1000, [acquire('A.1', { ttlMs: 100 })], 'A').record;
    record = run(record, 1001, [acquire('DEAD.1')], 'DEAD', ['DEAD', 'A', 'B']).record;
    record = run(record, 1002, [acquire('B.1')], 'B', ['DEAD', 'A', 'B']).record;
    assert.deepEqual(record.waiters.map((waiter) => waiter.requestId), ['DEAD.1', 'B.1']);
    // DEAD is no longer live; the lease ran out: B, not DEAD, gets the lock.
    const after = run(record, 1200, [], 'A', ['A', 'B']);
    assert.deepEqual(after.record.leases.map((lease) => lease.owner), ['B.1']);
    assert.deepEqual(after.record.waiters, []);
  });

  test('expiry is judged by the view\'s clock only: the same record is held at one now and free at a later one', () => {
    const record = run(emptyRecord(), 1000, [acquire('A.1', { ttlMs: 500 })], 'A').record;
    const early = run(record, 1499, [acquire('B.1', { waitMs: 0 })], 'B');
    assert.ok(early.effects.some((effect) => effect.type === 'reply' && effect.answer.kind === 'busy'));
    const late = run(record, 1500, [acquire('B.2', { waitMs: 0 })], 'B');
    assert.deepEqual(late.record.leases.map((lease) => lease.owner), ['B.2']);
    assert.equal(late.record.leases[0].token, 2);
  });

  test('a lease bound to a session the store no longer has is released, and waiters move up', () => {
    const session = { sessionId: 'S', owner: '', ttlMs: 1000, expiresAtMs: 5000 };
    const bound = decide(limitDefaults, 'n', view(emptyRecord(), 1000, ['A'], new Map([['S', session]])), [acquire('A.1', { ttlMs: null, sessionId: 'S' })], 'A');
    assert.equal(bound.record.leases[0].sessionId, 'S');
    assert.deepEqual(bound.sessionIds, ['S']);
    const waiting = decide(limitDefaults, 'n', view(bound.record, 1100, ['A', 'B'], new Map([['S', session]])), [acquire('B.1')], 'B');
    assert.deepEqual(waiting.record.waiters.map((waiter) => waiter.requestId), ['B.1'], 'held while the session lives');
    // The session row is gone (closed through another coordinator): no session in the view.
    const freed = decide(limitDefaults, 'n', view(waiting.record, 1200, ['A', 'B']), [], 'A');
    assert.deepEqual(freed.record.leases.map((lease) => lease.owner), ['B.1']);
    assert.ok(freed.effects.some((effect) => effect.type === 'expire' && effect.reason === 'session-ended'));
  });

  test('a change that changes nothing says so', () => {
    const record = run(emptyRecord(), 1000, [acquire('A.1')], 'A').record;
    const again = run(record, 1001, [acquire('B.1', { waitMs: 0 })], 'B');
    assert.equal(again.changed, false);
    assert.equal(again.notify, false);
  });
});
