// A workflow is a Tx of mode 'workflow': it must keep every field (step results, timings, the
// worker lease as due time) on every store backend, and the recovery scan's due() must find it
// when its worker's lease or its sleep has run out.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { Redis } from 'ioredis';
import { openStore } from '../src/store/open.js';
import { WorkflowService } from '../src/tx/workflow-service.js';
import { limitDefaults } from '../src/config.js';
import { tempDir } from './support/coordinator.js';
import { requireService, services } from './support/services.js';

const runId = randomBytes(4).toString('hex');
const pgSchema = `tandem_h11_wf_${runId}`;
const redisPrefix = `tandem-h11-wf:${runId}:`;
const storeOptions = { sqliteSync: 'normal' as const, postgresPoolSizeMax: 2, postgresFlushesInFlightMax: 1, storeConnectTimeoutMs: 3000, storeCommandTimeoutMs: 5000 };
let pgUsed = false;
let redisUsed = false;

after(async () => {
  if (pgUsed) {
    const client = new pg.Client({ connectionString: services.postgres.url });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${pgSchema} CASCADE`);
    await client.end();
  }
  if (redisUsed) {
    const redis = new Redis(services.redis.url);
    const keys = await redis.keys(`${redisPrefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  }
});

const backends: Array<{ name: string; service?: 'postgres' | 'redis'; url: () => Promise<string> }> = [
  { name: 'sqlite', url: async () => `sqlite:${path.join(tempDir('tandem-h11-wf-'), 'tandem.db')}` },
  {
    name: 'postgres',
    service: 'postgres',
    async url() {
      pgUsed = true;
      const client = new pg.Client({ connectionString: services.postgres.url });
      await client.connect();
      await client.query(`CREATE SCHEMA ${pgSchema}`);
      await client.end();
      return `${services.postgres.url}?options=${encodeURIComponent(`-c search_path=${pgSchema}`)}`;
    },
  },
  {
    name: 'redis',
    service: 'redis',
    async url() {
      redisUsed = true;
      return `${services.redis.url}/0?prefix=${encodeURIComponent(redisPrefix)}`;
    },
  },
];

describe('workflows on every store', () => {
  for (const backend of backends) {
    test(`${backend.name}: steps, results, timings and the lease survive; due() finds an expired lease and an ended sleep`, async (t) => {
      if (backend.service && !(await requireService(t, backend.service))) return;
      const store = await openStore(await backend.url(), storeOptions);
      try {
        let nowMs = 1_800_000_000_000;
        const service = new WorkflowService({
          store,
          limits: { ...limitDefaults, workflowLeaseMs: 1000 },
          nowMs: () => nowMs,
          defaults: { timeoutToFailMs: 0, requestTimeoutMs: 3000, retryIntervalMs: 1000, retryIntervalMsMax: 10_000, retryLimit: null, branchHeaders: {}, concurrent: false },
        });
        await service.start({ gid: 'wf-store-1', name: 'order', input: '{"id":"é\u{1F600}"}' });
        const claimed = await service.claim('w', ['order'], 0);
        assert.ok(claimed);
        await service.recordStep('wf-store-1', claimed.leaseId, { name: 'reserve', op: 'action', status: 'retrying', error: 'busy', index: 0, durationMs: 3 });
        await service.recordStep('wf-store-1', claimed.leaseId, { name: 'reserve', op: 'action', status: 'succeeded', result: '{"hold":"\u{1F600}"}', index: 0, durationMs: 4 });
        const stored = await store.get('wf-store-1');
        assert.ok(stored);
        assert.equal(stored.mode, 'workflow');
        assert.deepEqual(stored.branches[0].ops.action, { url: '', status: 'succeeded', attempts: 2, lastError: 'busy', result: '{"hold":"\u{1F600}"}', startedAtMs: nowMs - 3, settledAtMs: nowMs });
        assert.equal(stored.extra?.input, '{"id":"é\u{1F600}"}');
        assert.equal(stored.lease?.owner, claimed.leaseId);
        // Held: not due. Lease run out: due, and the engine may take it.
        assert.ok(!(await store.due(nowMs + 999, 10, 'engine-1')).includes('wf-store-1'));
        assert.ok((await store.due(nowMs + 1000, 10, 'engine-1')).includes('wf-store-1'));
        // A sleep lets go and is due when it ends.
        await service.sleep('wf-store-1', claimed.leaseId, 'nap', 1, 60_000);
        assert.ok(!(await store.due(nowMs + 59_999, 10, 'engine-1')).includes('wf-store-1'));
        assert.ok((await store.due(nowMs + 60_000, 10, 'engine-1')).includes('wf-store-1'));
        const page = await store.list({ mode: 'workflow', limit: 10 });
        assert.deepEqual(page.items.map((item) => [item.gid, item.mode, item.phase, item.branchCount]), [['wf-store-1', 'workflow', 'sleeping', 2]]);
        nowMs += 60_000;
      } finally {
        await store.close();
      }
    });
  }
});
