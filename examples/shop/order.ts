// The order service: one row per order. Saga: create places the order, cancel marks it
// cancelled. TCC: Try records it as pending, Confirm places it, Cancel cancels it.
import type Database from 'better-sqlite3';
import { z } from 'zod';
import { routeByOp } from '../../src/sdk/participant.js';
import { branchPath } from './catalog.js';
import type { ServiceDefinition } from './service.js';
import { payloadOf } from './service-kit.js';

export type OrderStatus = 'pending' | 'placed' | 'cancelled';

export interface OrderAudit {
  orders: Array<{ gid: string; customer: string; sku: string; quantity: number; amountCents: number; status: OrderStatus }>;
}

export const orderPayload = z.object({
  customer: z.string().min(1),
  sku: z.string().min(1),
  quantity: z.number().int().positive(),
  amountCents: z.number().int().positive(),
});
export type OrderPayload = z.infer<typeof orderPayload>;

function insertOrder(db: Database.Database, gid: string, order: OrderPayload, status: OrderStatus): void {
  db.prepare('INSERT INTO orders (gid, customer, sku, quantity, amount_cents, status) VALUES (?, ?, ?, ?, ?, ?)').run(
    gid,
    order.customer,
    order.sku,
    order.quantity,
    order.amountCents,
    status,
  );
}

/** Under the barrier the order is always in `from` here; anything else is a bug worth a 500. */
function moveOrder(db: Database.Database, gid: string, from: OrderStatus, to: OrderStatus): void {
  const changed = db.prepare('UPDATE orders SET status = ? WHERE gid = ? AND status = ?').run(to, gid, from).changes;
  if (changed !== 1) throw new Error(`order: order ${gid} is not ${from}`);
}

export const orderService: ServiceDefinition<OrderAudit> = {
  name: 'order',

  prepare(db: Database.Database): void {
    db.exec(`CREATE TABLE IF NOT EXISTS orders (
      gid TEXT PRIMARY KEY, customer TEXT NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL,
      amount_cents INTEGER NOT NULL, status TEXT NOT NULL)`);
  },

  routes(kit) {
    const rejectedAddress = 'delivery address rejected';
    return {
      [branchPath('order', 'saga')]: routeByOp({
        action: kit.branch((db, request) => {
          const order = payloadOf(orderPayload, request);
          kit.refuseSometimes(rejectedAddress);
          insertOrder(db, request.branch.gid, order, 'placed');
        }),
        compensate: kit.branch((db, request) => moveOrder(db, request.branch.gid, 'placed', 'cancelled')),
      }),
      [branchPath('order', 'tcc')]: routeByOp({
        try: kit.branch((db, request) => {
          const order = payloadOf(orderPayload, request);
          kit.refuseSometimes(rejectedAddress);
          insertOrder(db, request.branch.gid, order, 'pending');
        }),
        confirm: kit.branch((db, request) => moveOrder(db, request.branch.gid, 'pending', 'placed')),
        cancel: kit.branch((db, request) => moveOrder(db, request.branch.gid, 'pending', 'cancelled')),
      }),
    };
  },

  audit(reader) {
    return {
      orders: reader
        .prepare('SELECT gid, customer, sku, quantity, amount_cents AS amountCents, status FROM orders ORDER BY gid')
        .all() as OrderAudit['orders'],
    };
  },
};
