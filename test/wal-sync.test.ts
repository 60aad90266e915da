// The SQLite store's off-loop WAL fsync: commits resolve once synced, reads of a key wait for
// the commit that wrote it, and a failed fsync makes every later write fail instead of being
// retried over a WAL the kernel may have lost pages of.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { WalSyncer } from '../src/store/wal-sync.js';
import { SqliteStore } from '../src/store/sqlite.js';
import { tempDir } from './support/coordinator.js';

class Fatal extends Error {}

test('commits made while an fsync runs are covered by the next one, and each resolves once covered', async () => {
  const dir = tempDir('tandem-wal-');
  const walPath = path.join(dir, 'x.db-wal');
  fs.writeFileSync(walPath, 'frames');
  const syncer = new WalSyncer(walPath, (cause) => new Fatal(cause.message));
  const order: string[] = [];
  const first = syncer.committed(['a']).then(() => order.push('a'));
  const second = syncer.committed(['b', 'a']).then(() => order.push('b'));
  const readOfA = syncer.durable('a').then(() => order.push('read a'));
  await Promise.all([first, second, readOfA]);
  // The first fsync starts with commit 1 alone; commit 2 and the read of a (last written by
  // commit 2) wait for the second.
  assert.deepEqual(order, ['a', 'b', 'read a']);
  await syncer.durable('never-written');
  await syncer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a failed fsync fails the commits waiting on it and every later one', async () => {
  const dir = tempDir('tandem-wal-');
  const syncer = new WalSyncer(path.join(dir, 'missing', 'x.db-wal'), (cause) => new Fatal(`fatal: ${cause.message}`));
  await assert.rejects(syncer.committed(['a']), Fatal);
  assert.ok(syncer.failed instanceof Fatal);
  await assert.rejects(syncer.committed(['b']), Fatal);
  await assert.rejects(syncer.durable('a'), Fatal);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('the SQLite store with sync full answers writes and reads as before, and closes cleanly', async () => {
  const dir = tempDir('tandem-wal-');
  const store = new SqliteStore(path.join(dir, 't.db'), { sync: 'full' });
  const tx = {
    gid: 'g1', mode: 'saga' as const, status: 'prepared' as const, phase: 'prepared', branches: [],
    options: { timeoutToFailMs: 0, requestTimeoutMs: 1000, retryIntervalMs: 100, retryIntervalMsMax: 1000, retryLimit: null, branchHeaders: {}, concurrent: false },
    createdAtMs: 1, updatedAtMs: 1, nextAttemptAtMs: null, roundsWithoutProgress: 0, version: 1,
  };
  const inserts = await Promise.all([store.insert(tx, []), store.insert({ ...tx, gid: 'g2' }, [])]);
  assert.deepEqual(inserts, [true, true]);
  assert.ok(await store.update({ ...tx, status: 'submitted', version: 2 }, 1, [{ atMs: 2, status: 'submitted', phase: 'action' }]));
  assert.equal((await store.get('g1'))?.status, 'submitted');
  assert.equal((await store.history('g1')).length, 1);
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
