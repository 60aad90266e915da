// An application process for the two-phase message crash test. It serves queryPrepared on a
// fixed port (backed by its PostgreSQL barrier) and, for each gid given, prepares a message,
// runs its local transaction (an order row plus the barrier row), then submits. It can be told
// to SIGKILL itself at one gid: inside the local transaction (so it rolls back) or right after
// the local commit (so the coordinator never hears the submit).
import http from 'node:http';
import pg from 'pg';
import { PostgresBarrier, msgBranchRef } from '../../src/sdk/barrier.js';
import { TandemApiError, TandemClient } from '../../src/sdk/client.js';
import { createParticipant, nodeHttpHandler, queryPreparedHandler } from '../../src/sdk/participant.js';

export interface MsgAppConfig {
  coordinatorUrl: string;
  pgUrl: string;
  ordersTable: string;
  barrierTable: string;
  port: number;
  gids: string[];
  /** Where the message's steps go, in order. */
  targets: string[];
  die?: { gid: string; when: 'inside-local-transaction' | 'after-local-commit' };
}

const attemptsMax = 200;
const retryDelayMs = 50;

/**
 * Retries an API call while the coordinator is unreachable (it may be restarting), as a real
 * app would; `alreadyDone` recognises the answer of a retry whose first attempt landed.
 */
async function withRetries<T>(call: () => Promise<T>, alreadyDone: (error: unknown) => boolean = () => false): Promise<T | undefined> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (alreadyDone(error)) return undefined;
      if (error instanceof TandemApiError && error.status < 500) throw error;
      if (attempt >= attemptsMax) throw error;
      await new Promise((resolve) => setTimeout(resolve, retryDelayMs));
    }
  }
}

function isTakenByUs(error: unknown): boolean {
  return error instanceof TandemApiError && error.status === 409;
}

async function main(config: MsgAppConfig): Promise<void> {
  const pool = new pg.Pool({ connectionString: config.pgUrl, max: 4 });
  const barrier = new PostgresBarrier(pool, { tableName: config.barrierTable });
  const server = http.createServer(nodeHttpHandler(createParticipant({ '/query-prepared': queryPreparedHandler(barrier) })));
  await new Promise<void>((resolve) => server.listen(config.port, '127.0.0.1', resolve));
  process.stdout.write('ready\n');
  const client = new TandemClient({ url: config.coordinatorUrl });
  for (const gid of config.gids) {
    const message = client.msg({ gid, timeoutToFailMs: 300, retryIntervalMs: 50 });
    for (const target of config.targets) message.add(target, { gid });
    await withRetries(() => message.prepare(`http://127.0.0.1:${config.port}/query-prepared`), isTakenByUs);
    const dieHere = config.die?.gid === gid ? config.die.when : undefined;
    await barrier.call(msgBranchRef(gid), async (tx) => {
      await tx.query(`INSERT INTO ${config.ordersTable} (gid) VALUES ($1)`, [gid]);
      if (dieHere === 'inside-local-transaction') process.kill(process.pid, 'SIGKILL');
    });
    if (dieHere === 'after-local-commit') process.kill(process.pid, 'SIGKILL');
    await withRetries(() => client.submit(gid));
  }
  // Keeps serving queryPrepared, as a live app does, until the test stops it.
  process.stdout.write('done\n');
}

main(JSON.parse(process.argv[2] ?? '{}') as MsgAppConfig).catch((error: unknown) => {
  process.stderr.write(`msg app failed: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
