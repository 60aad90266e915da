// The inventory service: stock per SKU. Saga: reserve takes stock off the shelf, release puts
// it back. TCC: Try freezes stock, Confirm deducts the frozen units, Cancel unfreezes them.
// Each order's units are recorded in `holds` with the state they reached.
import type Database from 'better-sqlite3';
import { z } from 'zod';
import { routeByOp } from '../../src/sdk/participant.js';
import { branchPath, type ShopSeed } from './catalog.js';
import type { ServiceDefinition } from './service.js';
import { seedOnce } from './service.js';
import { counterNames, payloadOf } from './service-kit.js';

export type HoldState = 'taken' | 'returned' | 'frozen' | 'deducted' | 'unfrozen';

export interface InventoryAudit {
  openingStock: number;
  products: Array<{ sku: string; stock: number; frozen: number }>;
  holds: Array<{ gid: string; sku: string; quantity: number; state: HoldState }>;
}

export const itemPayload = z.object({ sku: z.string().min(1), quantity: z.number().int().positive() });
export type ItemPayload = z.infer<typeof itemPayload>;

type Hold = { sku: string; quantity: number; state: HoldState };

function holdOf(db: Database.Database, gid: string): Hold | undefined {
  return db.prepare('SELECT sku, quantity, state FROM holds WHERE gid = ?').get(gid) as Hold | undefined;
}

function setHoldState(db: Database.Database, gid: string, state: HoldState): void {
  db.prepare('UPDATE holds SET state = ? WHERE gid = ?').run(state, gid);
}

/** Takes units off the shelf (into `frozen` too when freezing), or refuses: out of stock. */
function takeStock(db: Database.Database, gid: string, item: ItemPayload, state: 'taken' | 'frozen', refuse: (message: string) => never): void {
  const product = db.prepare('SELECT stock FROM products WHERE sku = ?').get(item.sku) as { stock: number } | undefined;
  if (!product) refuse(`unknown SKU ${item.sku}`);
  if (product.stock < item.quantity) refuse(`out of stock: ${item.quantity} × ${item.sku} asked, ${product.stock} left`);
  const frozenDelta = state === 'frozen' ? item.quantity : 0;
  db.prepare('UPDATE products SET stock = stock - ?, frozen = frozen + ? WHERE sku = ?').run(item.quantity, frozenDelta, item.sku);
  db.prepare('INSERT INTO holds (gid, sku, quantity, state) VALUES (?, ?, ?, ?)').run(gid, item.sku, item.quantity, state);
}

/**
 * Moves a hold from `from` to `to`. Under the barrier an undo or confirm runs only after its
 * forward op applied, so the hold is always in `from`; anything else is a bug worth a 500.
 */
function moveHold(db: Database.Database, gid: string, from: HoldState, to: HoldState, stockDelta: number, frozenSign: -1 | 0): void {
  const hold = holdOf(db, gid);
  if (!hold || hold.state !== from) throw new Error(`inventory: hold of ${gid} is ${hold?.state ?? 'missing'}, expected ${from}`);
  db.prepare('UPDATE products SET stock = stock + ?, frozen = frozen + ? WHERE sku = ?').run(stockDelta * hold.quantity, frozenSign * hold.quantity, hold.sku);
  setHoldState(db, gid, to);
}

export const inventoryService: ServiceDefinition<InventoryAudit> = {
  name: 'inventory',

  prepare(db: Database.Database, seed: ShopSeed): void {
    db.exec(`
      CREATE TABLE IF NOT EXISTS products (
        sku TEXT PRIMARY KEY,
        stock INTEGER NOT NULL CHECK (stock >= 0),
        frozen INTEGER NOT NULL DEFAULT 0 CHECK (frozen >= 0));
      CREATE TABLE IF NOT EXISTS holds (
        gid TEXT PRIMARY KEY, sku TEXT NOT NULL, quantity INTEGER NOT NULL, state TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS opening (total_stock INTEGER NOT NULL);`);
    seedOnce(db, () => {
      const insert = db.prepare('INSERT INTO products (sku, stock) VALUES (?, ?)');
      for (const item of seed.skus) insert.run(item.sku, item.stock);
      db.prepare('INSERT INTO opening (total_stock) VALUES ((SELECT SUM(stock) FROM products))').run();
    });
  },

  routes(kit) {
    const refuseOutOfStock = (message: string): never => kit.refuse(counterNames.refusedOutOfStock, message);
    return {
      [branchPath('inventory', 'saga')]: routeByOp({
        action: kit.branch((db, request) => {
          const item = payloadOf(itemPayload, request);
          kit.refuseSometimes(`${item.sku} was withdrawn from sale`);
          takeStock(db, request.branch.gid, item, 'taken', refuseOutOfStock);
        }),
        compensate: kit.branch((db, request) => moveHold(db, request.branch.gid, 'taken', 'returned', +1, 0)),
      }),
      [branchPath('inventory', 'tcc')]: routeByOp({
        try: kit.branch((db, request) => {
          const item = payloadOf(itemPayload, request);
          kit.refuseSometimes(`${item.sku} was withdrawn from sale`);
          takeStock(db, request.branch.gid, item, 'frozen', refuseOutOfStock);
        }),
        confirm: kit.branch((db, request) => moveHold(db, request.branch.gid, 'frozen', 'deducted', 0, -1)),
        cancel: kit.branch((db, request) => moveHold(db, request.branch.gid, 'frozen', 'unfrozen', +1, -1)),
      }),
    };
  },

  audit(reader) {
    // One read transaction: every figure from the same snapshot.
    return reader.transaction(() => {
      const opening = reader.prepare('SELECT total_stock AS total FROM opening').get() as { total: number };
      return {
        openingStock: opening.total,
        products: reader.prepare('SELECT sku, stock, frozen FROM products ORDER BY sku').all() as InventoryAudit['products'],
        holds: reader.prepare('SELECT gid, sku, quantity, state FROM holds ORDER BY gid').all() as InventoryAudit['holds'],
      };
    })();
  },
};
