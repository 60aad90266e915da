// The shape each shop service fills in: its tables, its branch handlers, and its audit.
import type Database from 'better-sqlite3';
import type { Handler } from '../../src/sdk/participant.js';
import type { ServiceName, ShopSeed } from './catalog.js';
import type { Counts, ServiceKit } from './service-kit.js';

export interface ServiceDefinition<Audit> {
  name: ServiceName;
  /** Creates the tables if needed and seeds a fresh database (never a restarted one). */
  prepare(db: Database.Database, seed: ShopSeed): void;
  routes(kit: ServiceKit): Record<string, Handler>;
  /** Everything the closing report needs, read on a connection of its own. */
  audit(reader: Database.Database): Audit;
}

/** An audit as served on GET /audit: the service's state plus its counters. */
export type Audited<Audit> = Audit & { counters: Counts };

/** Runs `seedRows` once, in one transaction, on a database that has never been seeded. */
export function seedOnce(db: Database.Database, seedRows: () => void): void {
  db.exec('CREATE TABLE IF NOT EXISTS seeded (at TEXT NOT NULL)');
  db.transaction(() => {
    if (db.prepare('SELECT 1 FROM seeded').get() !== undefined) return;
    seedRows();
    db.prepare("INSERT INTO seeded (at) VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))").run();
  }).immediate();
}
