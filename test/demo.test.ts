// The e-commerce demo (`npm run demo`) at a small scale: the same code with 150 orders, the
// coordinator and three services as child processes, injected 5xx, business refusals and the
// payment service killed with SIGKILL partway. Its closing report must pass every check. The
// report's checks are then fed a world that breaks each invariant, to show they can fail.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TxStatus } from '../src/shared/views.js';
import { makeSeed, planOrders, type PlannedOrder, type ShopSeed } from '../examples/shop/catalog.js';
import { buildReport, type Audits, type ReportInput } from '../examples/shop/report.js';
import { runDemo } from '../examples/shop/run.js';

test('the shop demo ends every order whole or not at all, through a participant crash', { timeout: 180_000 }, async () => {
  const orders = 150;
  const report = await runDemo({ orders, concurrency: 16, seed: 7, stallTimeoutMs: 60_000 });

  for (const check of report.checks) assert.ok(check.passed, `${check.name}: ${check.detail}`);
  assert.deepEqual(report.orderErrors, []);
  assert.equal(report.passed, true);
  assert.deepEqual(
    report.checks.map((check) => check.name),
    ['every transaction ended', 'stock conserved', 'money conserved', 'no order half made'],
  );
  const { total } = report.outcomes;
  assert.equal(total.succeeded + total.failed, orders);
  // Both endings and both modes really ran, under faults and one crash.
  assert.ok(total.succeeded > 0 && total.failed > 0, JSON.stringify(report.outcomes));
  assert.ok(report.outcomes.saga.succeeded > 0 && report.outcomes.tcc.succeeded > 0, JSON.stringify(report.outcomes));
  assert.ok(report.faults.injected5xxBefore > 0, JSON.stringify(report.faults));
  assert.deepEqual(report.restarts.map((restart) => restart.service), ['payment']);
});

/** A consistent end state in which every planned order succeeded. */
function wholeWorld(seed: ShopSeed, plan: PlannedOrder[]): ReportInput {
  const stock = new Map(seed.skus.map((item) => [item.sku, item.stock]));
  const balances = new Map(seed.accounts.map((account) => [account.customer, account.balanceCents]));
  for (const order of plan) {
    stock.set(order.sku, (stock.get(order.sku) ?? 0) - order.quantity);
    balances.set(order.customer, (balances.get(order.customer) ?? 0) - order.amountCents);
  }
  const counters = {};
  const audits: Audits = {
    inventory: {
      openingStock: seed.skus.reduce((sum, item) => sum + item.stock, 0),
      products: [...stock].map(([sku, left]) => ({ sku, stock: left, frozen: 0 })),
      holds: plan.map((order) => ({ gid: order.gid, sku: order.sku, quantity: order.quantity, state: order.mode === 'saga' ? 'taken' : 'deducted' })),
      counters,
    },
    payment: {
      openingCents: seed.accounts.reduce((sum, account) => sum + account.balanceCents, 0),
      accounts: [...balances].map(([customer, balanceCents]) => ({ customer, balanceCents, frozenCents: 0 })),
      payments: plan.map((order) => ({ gid: order.gid, customer: order.customer, amountCents: order.amountCents, state: order.mode === 'saga' ? 'charged' : 'captured' })),
      counters,
    },
    order: {
      orders: plan.map((order) => ({ gid: order.gid, customer: order.customer, sku: order.sku, quantity: order.quantity, amountCents: order.amountCents, status: 'placed' })),
      counters,
    },
  };
  const statuses = new Map<string, TxStatus>(plan.map((order) => [order.gid, 'succeeded']));
  return { seed, plan, concurrency: 1, durationMs: 1, statuses, openAtCoordinator: 0, audits, restarts: [], orderErrors: [] };
}

function failedChecks(input: ReportInput): string[] {
  return buildReport(input).checks.filter((check) => !check.passed).map((check) => check.name);
}

test('the closing report fails each check whose invariant is broken', () => {
  const seed = makeSeed(40, 3);
  const plan = planOrders(seed, 6, 3);
  assert.deepEqual(failedChecks(wholeWorld(seed, plan)), [], 'a whole world passes');

  const unended = wholeWorld(seed, plan);
  unended.statuses = new Map([...unended.statuses, [plan[0].gid, 'submitted']]);
  assert.deepEqual(failedChecks(unended), ['every transaction ended']);

  const stillOpen = wholeWorld(seed, plan);
  stillOpen.openAtCoordinator = 1;
  assert.deepEqual(failedChecks(stillOpen), ['every transaction ended']);

  const frozenLeft = wholeWorld(seed, plan);
  frozenLeft.audits.inventory.products[0] = { ...frozenLeft.audits.inventory.products[0], stock: frozenLeft.audits.inventory.products[0].stock - 1, frozen: 1 };
  assert.deepEqual(failedChecks(frozenLeft), ['stock conserved']);

  const moneyLost = wholeWorld(seed, plan);
  moneyLost.audits.payment.accounts[0] = { ...moneyLost.audits.payment.accounts[0], balanceCents: moneyLost.audits.payment.accounts[0].balanceCents - 1 };
  assert.deepEqual(failedChecks(moneyLost), ['money conserved']);

  // Succeeded, but the money went back: half made, and the money no longer adds up either.
  const refunded = wholeWorld(seed, plan);
  const payment = refunded.audits.payment.payments[0];
  refunded.audits.payment.payments[0] = { ...payment, state: plan[0].mode === 'saga' ? 'refunded' : 'released' };
  const account = refunded.audits.payment.accounts.findIndex((row) => row.customer === payment.customer);
  refunded.audits.payment.accounts[account] = { ...refunded.audits.payment.accounts[account], balanceCents: refunded.audits.payment.accounts[account].balanceCents + payment.amountCents };
  assert.deepEqual(failedChecks(refunded), ['money conserved', 'no order half made']);

  // Failed, yet the order stayed placed with its stock and money taken.
  const failedButPlaced = wholeWorld(seed, plan);
  failedButPlaced.statuses = new Map([...failedButPlaced.statuses, [plan[1].gid, 'failed']]);
  assert.deepEqual(failedChecks(failedButPlaced), ['no order half made']);

  const orphan = wholeWorld(seed, plan);
  orphan.audits.order.orders.push({ ...orphan.audits.order.orders[0], gid: 'never-planned', status: 'cancelled' });
  assert.deepEqual(failedChecks(orphan), ['no order half made']);
});
