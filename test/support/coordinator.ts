// Starts a real coordinator in this process on 127.0.0.1, port 0, with a fresh SQLite file.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Limits } from '../../src/config.js';
import { serve, type RunningCoordinator } from '../../src/server/serve.js';
import { TandemClient } from '../../src/sdk/client.js';
import type { TxView } from '../../src/shared/views.js';

export interface TestCoordinator extends RunningCoordinator {
  client: TandemClient;
  dbPath: string;
}

export function tempDir(prefix = 'tandem-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function startCoordinator(
  options: { limits?: Partial<Limits>; dbPath?: string; rabbitmqUrl?: string; jetstreamUrl?: string } = {},
): Promise<TestCoordinator> {
  const dbPath = options.dbPath ?? path.join(tempDir(), 'tandem.db');
  const running = await serve({
    host: '127.0.0.1',
    port: 0,
    storeUrl: `sqlite:${dbPath}`,
    sqliteSync: 'normal',
    logLevel: 'silent',
    limits: { recoveryIntervalMs: 100, ...options.limits },
    ...(options.rabbitmqUrl ? { rabbitmqUrl: options.rabbitmqUrl } : {}),
    ...(options.jetstreamUrl ? { jetstreamUrl: options.jetstreamUrl } : {}),
  });
  return { ...running, client: new TandemClient({ url: running.url }), dbPath };
}

/** Stops a test coordinator and removes its database directory. */
export async function closeCoordinator(coordinator: TestCoordinator): Promise<void> {
  await coordinator.close();
  fs.rmSync(path.dirname(coordinator.dbPath), { recursive: true, force: true });
}

/** Waits (long poll) for the transaction's end and asserts it ended. */
export async function endOf(client: TandemClient, gid: string, timeoutMs = 15_000): Promise<TxView> {
  const tx = await client.waitResult(gid, { timeoutMs });
  assert.ok(tx.status === 'succeeded' || tx.status === 'failed', `transaction ${gid} has not ended: ${tx.status}/${tx.phase}`);
  return tx;
}
