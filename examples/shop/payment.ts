// The payment service: a balance per customer. Saga: charge takes the money, refund gives it
// back. TCC: Try freezes the amount, Confirm captures it, Cancel releases it. Each order's
// money is recorded in `payments` with the state it reached.
import type Database from 'better-sqlite3';
import { z } from 'zod';
import { routeByOp } from '../../src/sdk/participant.js';
import { branchPath, type ShopSeed } from './catalog.js';
import type { ServiceDefinition } from './service.js';
import { seedOnce } from './service.js';
import { counterNames, payloadOf } from './service-kit.js';

export type PaymentState = 'charged' | 'refunded' | 'frozen' | 'captured' | 'released';

export interface PaymentAudit {
  openingCents: number;
  accounts: Array<{ customer: string; balanceCents: number; frozenCents: number }>;
  payments: Array<{ gid: string; customer: string; amountCents: number; state: PaymentState }>;
}

export const chargePayload = z.object({ customer: z.string().min(1), amountCents: z.number().int().positive() });
export type ChargePayload = z.infer<typeof chargePayload>;

type Payment = { customer: string; amountCents: number; state: PaymentState };

/** Takes the amount from the balance (into `frozen` too when freezing), or refuses: not enough money. */
function takeMoney(db: Database.Database, gid: string, charge: ChargePayload, state: 'charged' | 'frozen', refuse: (message: string) => never): void {
  const account = db.prepare('SELECT balance_cents AS balanceCents FROM accounts WHERE customer = ?').get(charge.customer) as { balanceCents: number } | undefined;
  if (!account) refuse(`unknown customer ${charge.customer}`);
  if (account.balanceCents < charge.amountCents) refuse(`insufficient funds: ${charge.amountCents} cents asked, ${account.balanceCents} available`);
  const frozenDelta = state === 'frozen' ? charge.amountCents : 0;
  db.prepare('UPDATE accounts SET balance_cents = balance_cents - ?, frozen_cents = frozen_cents + ? WHERE customer = ?').run(charge.amountCents, frozenDelta, charge.customer);
  db.prepare('INSERT INTO payments (gid, customer, amount_cents, state) VALUES (?, ?, ?, ?)').run(gid, charge.customer, charge.amountCents, state);
}

/**
 * Moves a payment from `from` to `to`. Under the barrier an undo or confirm runs only after its
 * forward op applied, so the payment is always in `from`; anything else is a bug worth a 500.
 */
function movePayment(db: Database.Database, gid: string, from: PaymentState, to: PaymentState, balanceSign: 1 | 0, frozenSign: -1 | 0): void {
  const payment = db.prepare('SELECT customer, amount_cents AS amountCents, state FROM payments WHERE gid = ?').get(gid) as Payment | undefined;
  if (!payment || payment.state !== from) throw new Error(`payment: payment of ${gid} is ${payment?.state ?? 'missing'}, expected ${from}`);
  db.prepare('UPDATE accounts SET balance_cents = balance_cents + ?, frozen_cents = frozen_cents + ? WHERE customer = ?').run(
    balanceSign * payment.amountCents,
    frozenSign * payment.amountCents,
    payment.customer,
  );
  db.prepare('UPDATE payments SET state = ? WHERE gid = ?').run(to, gid);
}

export const paymentService: ServiceDefinition<PaymentAudit> = {
  name: 'payment',

  prepare(db: Database.Database, seed: ShopSeed): void {
    db.exec(`
      CREATE TABLE IF NOT EXISTS accounts (
        customer TEXT PRIMARY KEY,
        balance_cents INTEGER NOT NULL CHECK (balance_cents >= 0),
        frozen_cents INTEGER NOT NULL DEFAULT 0 CHECK (frozen_cents >= 0));
      CREATE TABLE IF NOT EXISTS payments (
        gid TEXT PRIMARY KEY, customer TEXT NOT NULL, amount_cents INTEGER NOT NULL, state TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS opening (total_cents INTEGER NOT NULL);`);
    seedOnce(db, () => {
      const insert = db.prepare('INSERT INTO accounts (customer, balance_cents) VALUES (?, ?)');
      for (const account of seed.accounts) insert.run(account.customer, account.balanceCents);
      db.prepare('INSERT INTO opening (total_cents) VALUES ((SELECT SUM(balance_cents) FROM accounts))').run();
    });
  },

  routes(kit) {
    const refuseFunds = (message: string): never => kit.refuse(counterNames.refusedInsufficientFunds, message);
    return {
      [branchPath('payment', 'saga')]: routeByOp({
        action: kit.branch((db, request) => {
          const charge = payloadOf(chargePayload, request);
          kit.refuseSometimes(`card of ${charge.customer} declined`);
          takeMoney(db, request.branch.gid, charge, 'charged', refuseFunds);
        }),
        compensate: kit.branch((db, request) => movePayment(db, request.branch.gid, 'charged', 'refunded', 1, 0)),
      }),
      [branchPath('payment', 'tcc')]: routeByOp({
        try: kit.branch((db, request) => {
          const charge = payloadOf(chargePayload, request);
          kit.refuseSometimes(`card of ${charge.customer} declined`);
          takeMoney(db, request.branch.gid, charge, 'frozen', refuseFunds);
        }),
        confirm: kit.branch((db, request) => movePayment(db, request.branch.gid, 'frozen', 'captured', 0, -1)),
        cancel: kit.branch((db, request) => movePayment(db, request.branch.gid, 'frozen', 'released', 1, -1)),
      }),
    };
  },

  audit(reader) {
    // One read transaction: every figure from the same snapshot.
    return reader.transaction(() => {
      const opening = reader.prepare('SELECT total_cents AS total FROM opening').get() as { total: number };
      return {
        openingCents: opening.total,
        accounts: reader.prepare('SELECT customer, balance_cents AS balanceCents, frozen_cents AS frozenCents FROM accounts ORDER BY customer').all() as PaymentAudit['accounts'],
        payments: reader.prepare('SELECT gid, customer, amount_cents AS amountCents, state FROM payments ORDER BY gid').all() as PaymentAudit['payments'],
      };
    })();
  },
};
