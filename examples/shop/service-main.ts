// One shop service as a process of its own: `node service-main.js '<ServiceConfig JSON>'`.
// It opens (and on first start seeds) its own SQLite database, serves its branches on
// 127.0.0.1 and prints "shop <name> listening on <url>" once ready. The parent may SIGKILL it
// at any moment and start it again on the same port and files: that is the point.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { SqliteBarrier } from '../../src/sdk/barrier.js';
import { createParticipant } from '../../src/sdk/participant.js';
import { serviceNames, type ServiceName, type ShopSeed } from './catalog.js';
import { inventoryService } from './inventory.js';
import { orderService } from './order.js';
import { paymentService } from './payment.js';
import { seededPrng } from './prng.js';
import type { ServiceDefinition } from './service.js';
import { Counters, InjectedFault, counterNames, makeKit, serveService, type ServiceConfig } from './service-kit.js';

const definitions: Record<ServiceName, ServiceDefinition<unknown>> = {
  inventory: inventoryService,
  payment: paymentService,
  order: orderService,
};

function parseConfig(text: string | undefined): ServiceConfig {
  if (!text) throw new Error('usage: service-main.js <ServiceConfig JSON>');
  const config = JSON.parse(text) as ServiceConfig;
  if (!serviceNames.includes(config.service)) throw new Error(`unknown service ${String(config.service)}`);
  return config;
}

function openDatabase(file: string): Database.Database {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  // NORMAL survives a killed process (the demo's crash), though not a power cut.
  db.pragma('synchronous = NORMAL');
  return db;
}

async function main(): Promise<void> {
  const config = parseConfig(process.argv[2]);
  const definition = definitions[config.service];
  const seed = JSON.parse(fs.readFileSync(config.seedFile, 'utf8')) as ShopSeed;
  const dbFile = path.join(config.dataDir, `${config.service}.db`);
  const db = openDatabase(dbFile);
  definition.prepare(db, seed);
  const barrier = new SqliteBarrier(db);
  await barrier.ensureSchema();
  const counters = new Counters(new Database(path.join(config.dataDir, `${config.service}-counters.db`)));
  counters.bump(counterNames.lives);
  const life = counters.all()[counterNames.lives] ?? 1;
  // Each life draws different faults, so a restart does not replay the same ones.
  const kit = makeKit({ barrier, counters, faults: config.faults, prng: seededPrng(config.prngSeed * 31 + life) });
  const participant = createParticipant(definition.routes(kit), {
    onUnexpectedError: (error, request) => {
      if (error instanceof InjectedFault) return;
      const message = error instanceof Error ? error.message : String(error);
      process.stderr.write(`shop ${config.service}: ${request.branch.op} of ${request.branch.gid} failed: ${message}\n`);
    },
  });
  // Reads for the audit go through their own connection, never into an open branch transaction.
  const reader = new Database(dbFile, { readonly: true });
  const audit = () => ({ ...(definition.audit(reader) as object), counters: counters.all() });
  const { port } = await serveService(participant, config.port, audit);
  process.stdout.write(`shop ${config.service} listening on http://127.0.0.1:${port}\n`);
  // The parent holds our stdin open; when it goes away, so do we.
  process.stdin.resume();
  process.stdin.once('end', () => process.exit(0));
  process.once('SIGTERM', () => process.exit(0));
}

main().catch((error: unknown) => {
  process.stderr.write(`shop service failed to start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
