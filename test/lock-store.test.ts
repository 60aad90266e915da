// The SQLite lock store keeps the LockStore contract's fail-stop rule: after a failed commit,
// later writes fail unapplied until load().
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { Lease } from '../src/locks/manager.js';
import { SqliteLockStore } from '../src/locks/store.js';

function lease(leaseId: string, token: number): Lease {
  return { leaseId, name: 'fail-stop', mode: 'exclusive', permits: 1, token, owner: '', sessionId: null, ttlMs: 1000, grantedAtMs: 1, expiresAtMs: 1001 };
}

test('SQLite lock store: a failed commit fails later writes unapplied until load()', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-lock-store-'));
  const store = new SqliteLockStore(path.join(dir, 'locks.db'), { sync: 'normal' });
  try {
    // A NOT NULL column left empty: the commit fails.
    const broken = { ...lease('broken', 1), name: null } as unknown as Lease;
    await assert.rejects(store.write([{ type: 'putLease', lease: broken }]));
    await assert.rejects(store.write([{ type: 'putLease', lease: lease('after', 2) }]), 'a write after the failed one is refused');
    const snapshot = await store.load();
    assert.deepEqual(snapshot.leases, [], 'nothing of either write was applied');
    await store.write([{ type: 'putLease', lease: lease('after-load', 3) }]);
    assert.deepEqual((await store.load()).leases.map((held) => held.leaseId), ['after-load']);
  } finally {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
