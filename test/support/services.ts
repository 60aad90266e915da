// Tests that need a real service call these. Outside CI an absent service skips the test
// with a loud message; with CI=true it fails, because CI promises every service is up.
import net from 'node:net';
import type { TestContext } from 'node:test';

export const services = {
  postgres: { host: '127.0.0.1', port: 5432, url: 'postgres://postgres@127.0.0.1:5432/test' },
  mariadb: { host: '127.0.0.1', port: 3306, url: 'mysql://root@127.0.0.1:3306/test' },
  redis: { host: '127.0.0.1', port: 6379, url: 'redis://127.0.0.1:6379' },
  rabbitmq: { host: '127.0.0.1', port: 5672, url: 'amqp://guest:guest@127.0.0.1:5672' },
  nats: { host: '127.0.0.1', port: 4222, url: 'nats://127.0.0.1:4222' },
  zookeeper: { host: '127.0.0.1', port: 2181, url: '127.0.0.1:2181' },
} as const;

export type ServiceName = keyof typeof services;

const reachable = new Map<ServiceName, Promise<boolean>>();

function probe(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export function isReachable(name: ServiceName): Promise<boolean> {
  let cached = reachable.get(name);
  if (!cached) {
    cached = probe(services[name].host, services[name].port);
    reachable.set(name, cached);
  }
  return cached;
}

/** Returns true when the test may go on; otherwise skips (outside CI) or throws (in CI). */
export async function requireService(t: TestContext, name: ServiceName): Promise<boolean> {
  if (await isReachable(name)) return true;
  const where = `${services[name].host}:${services[name].port}`;
  if (process.env.CI === 'true') {
    throw new Error(`${name} is not reachable at ${where}; CI must start it (see .ci/run)`);
  }
  const message = `!!! SKIPPED: ${name} is not reachable at ${where}; start it to run this test !!!`;
  console.error(message);
  t.skip(message);
  return false;
}

/** A port free on 127.0.0.1 right now, for a server that must keep one port across restarts. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** What turns a server setting on; named in the skip message. */
const prepareHint = 'run `npm run services` (as root), which sets it and restarts the server';

let preparedTransactionsMax: Promise<number> | undefined;

function readPreparedTransactionsMax(): Promise<number> {
  preparedTransactionsMax ??= (async () => {
    const { default: pg } = await import('pg');
    const client = new pg.Client({ connectionString: services.postgres.url });
    await client.connect();
    try {
      const result = await client.query<{ max_prepared_transactions: string }>('SHOW max_prepared_transactions');
      return Number(result.rows[0]?.max_prepared_transactions ?? 0);
    } finally {
      await client.end();
    }
  })();
  return preparedTransactionsMax;
}

/**
 * PostgreSQL XA needs `max_prepared_transactions` above 0, which the server ships without.
 * Returns true when the test may go on; otherwise skips loudly (outside CI) or throws (in CI).
 */
export async function requirePostgresPreparedTransactions(t: TestContext): Promise<boolean> {
  if (!(await requireService(t, 'postgres'))) return false;
  const max = await readPreparedTransactionsMax();
  if (max > 0) return true;
  const problem = `PostgreSQL at ${services.postgres.host}:${services.postgres.port} has max_prepared_transactions = ${max} (prepared transactions are disabled)`;
  if (process.env.CI === 'true') throw new Error(`${problem}; CI must set it (scripts/services.sh)`);
  const message = `!!! SKIPPED: ${problem}; ${prepareHint} !!!`;
  console.error(message);
  t.skip(message);
  return false;
}
