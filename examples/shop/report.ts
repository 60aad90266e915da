// The closing report: what the coordinator and the three services' own databases say once
// every order has run, checked against what the shop started with.
import type { TxStatus } from '../../src/shared/views.js';
import { totalMoneyCents, totalStock, type OrderMode, type PlannedOrder, type ServiceName, type ShopSeed } from './catalog.js';
import type { HoldState, InventoryAudit } from './inventory.js';
import type { OrderAudit } from './order.js';
import type { PaymentAudit, PaymentState } from './payment.js';
import type { Audited } from './service.js';
import { counterNames, type Counts } from './service-kit.js';

export interface Audits {
  inventory: Audited<InventoryAudit>;
  payment: Audited<PaymentAudit>;
  order: Audited<OrderAudit>;
}

export interface Restart {
  service: ServiceName;
  /** Orders ended when it was killed. */
  atEnded: number;
}

export interface ReportInput {
  seed: ShopSeed;
  plan: PlannedOrder[];
  concurrency: number;
  durationMs: number;
  /** Each planned gid's status as the coordinator answers it after the run; absent if unknown. */
  statuses: ReadonlyMap<string, TxStatus>;
  /** Transactions the coordinator still lists as prepared, submitted or aborting. */
  openAtCoordinator: number;
  audits: Audits;
  restarts: Restart[];
  /** Orders whose placing threw (the first few messages). */
  orderErrors: string[];
}

export interface Check {
  name: string;
  passed: boolean;
  detail: string;
}

type Outcome = { succeeded: number; failed: number; unended: number };

export interface DemoReport {
  orders: number;
  concurrency: number;
  durationMs: number;
  outcomes: Record<OrderMode | 'total', Outcome>;
  checks: Check[];
  stock: { opening: number; onShelf: number; frozen: number; sold: number };
  money: { openingCents: number; balancesCents: number; frozenCents: number; collectedCents: number };
  faults: { injected5xxBefore: number; injected5xxAfter: number; refusedOutOfStock: number; refusedInsufficientFunds: number; refusedAtRandom: number };
  barrier: { duplicatesSkipped: number; nullCompensations: number; hangingRefused: number };
  /** Each one a SIGKILL of a service mid-run and a restart on the same port and database. */
  restarts: Restart[];
  orderErrors: string[];
  passed: boolean;
}

/** The states each mode leaves behind: on success, and after a rollback (or nothing at all). */
const endStates: Record<OrderMode, { hold: HoldState; payment: PaymentState; undoneHold: HoldState; undonePayment: PaymentState }> = {
  saga: { hold: 'taken', payment: 'charged', undoneHold: 'returned', undonePayment: 'refunded' },
  tcc: { hold: 'deducted', payment: 'captured', undoneHold: 'unfrozen', undonePayment: 'released' },
};

const problemsShownMax = 5;

export function buildReport(input: ReportInput): DemoReport {
  const { audits } = input;
  const placed = audits.order.orders.filter((order) => order.status === 'placed');
  const stock = {
    opening: totalStock(input.seed),
    onShelf: sum(audits.inventory.products.map((product) => product.stock)),
    frozen: sum(audits.inventory.products.map((product) => product.frozen)),
    sold: sum(placed.map((order) => order.quantity)),
  };
  const money = {
    openingCents: totalMoneyCents(input.seed),
    balancesCents: sum(audits.payment.accounts.map((account) => account.balanceCents)),
    frozenCents: sum(audits.payment.accounts.map((account) => account.frozenCents)),
    collectedCents: sum(placed.map((order) => order.amountCents)),
  };
  const outcomes = outcomesOf(input);
  const checks = [
    endedCheck(input, outcomes.total),
    stockCheck(stock, audits.inventory.openingStock),
    moneyCheck(money, audits.payment.openingCents),
    halfMadeCheck(input),
  ];
  const counters = sumCounters([audits.inventory.counters, audits.payment.counters, audits.order.counters]);
  return {
    orders: input.plan.length,
    concurrency: input.concurrency,
    durationMs: input.durationMs,
    outcomes,
    checks,
    stock,
    money,
    faults: {
      injected5xxBefore: counters(counterNames.injected5xxBefore),
      injected5xxAfter: counters(counterNames.injected5xxAfter),
      refusedOutOfStock: counters(counterNames.refusedOutOfStock),
      refusedInsufficientFunds: counters(counterNames.refusedInsufficientFunds),
      refusedAtRandom: counters(counterNames.refusedAtRandom),
    },
    barrier: {
      duplicatesSkipped: counters(counterNames.duplicatesSkipped),
      nullCompensations: counters(counterNames.nullCompensations),
      hangingRefused: counters(counterNames.hangingRefused),
    },
    restarts: input.restarts,
    orderErrors: input.orderErrors,
    passed: checks.every((check) => check.passed) && input.orderErrors.length === 0,
  };
}

function sum(values: number[]): number {
  return values.reduce((total, value) => total + value, 0);
}

function sumCounters(all: Counts[]): (name: string) => number {
  return (name) => sum(all.map((counts) => counts[name] ?? 0));
}

function outcomesOf(input: ReportInput): DemoReport['outcomes'] {
  const empty = (): Outcome => ({ succeeded: 0, failed: 0, unended: 0 });
  const outcomes = { saga: empty(), tcc: empty(), total: empty() };
  for (const order of input.plan) {
    const status = input.statuses.get(order.gid);
    const key = status === 'succeeded' ? 'succeeded' : status === 'failed' ? 'failed' : 'unended';
    outcomes[order.mode][key] += 1;
    outcomes.total[key] += 1;
  }
  return outcomes;
}

function endedCheck(input: ReportInput, total: Outcome): Check {
  const ended = total.succeeded + total.failed;
  const unended = input.plan.filter((order) => {
    const status = input.statuses.get(order.gid);
    return status !== 'succeeded' && status !== 'failed';
  });
  const examples = unended.slice(0, problemsShownMax).map((order) => `${order.gid}: ${input.statuses.get(order.gid) ?? 'unknown'}`);
  return {
    name: 'every transaction ended',
    passed: unended.length === 0 && input.openAtCoordinator === 0,
    detail:
      `${ended}/${input.plan.length} succeeded or failed; ${input.openAtCoordinator} still open at the coordinator` +
      (examples.length > 0 ? `; e.g. ${examples.join(', ')}` : ''),
  };
}

function stockCheck(stock: DemoReport['stock'], recordedOpening: number): Check {
  const accounted = stock.onShelf + stock.frozen + stock.sold;
  return {
    name: 'stock conserved',
    passed: recordedOpening === stock.opening && accounted === stock.opening && stock.frozen === 0,
    detail: `${stock.opening} units = ${stock.onShelf} on the shelf + ${stock.frozen} frozen + ${stock.sold} sold` +
      (accounted === stock.opening ? '' : ` (= ${accounted}, off by ${accounted - stock.opening})`) +
      (recordedOpening === stock.opening ? '' : `; inventory recorded an opening of ${recordedOpening}`),
  };
}

function moneyCheck(money: DemoReport['money'], recordedOpening: number): Check {
  const accounted = money.balancesCents + money.frozenCents + money.collectedCents;
  return {
    name: 'money conserved',
    passed: recordedOpening === money.openingCents && accounted === money.openingCents && money.frozenCents === 0,
    detail: `${cents(money.openingCents)} = ${cents(money.balancesCents)} in balances + ${cents(money.frozenCents)} frozen + ${cents(money.collectedCents)} collected` +
      (accounted === money.openingCents ? '' : ` (= ${cents(accounted)}, off by ${cents(accounted - money.openingCents)})`) +
      (recordedOpening === money.openingCents ? '' : `; payment recorded an opening of ${cents(recordedOpening)}`),
  };
}

function cents(amountCents: number): string {
  return (amountCents / 100).toFixed(2);
}

/**
 * Each succeeded order is placed, with its stock deducted and its money taken, exactly as
 * planned; each failed one left no placed or pending order, no units gone and no money gone;
 * and no service holds a row for an order that was never planned.
 */
function halfMadeCheck(input: ReportInput): Check {
  const orders = byGid(input.audits.order.orders);
  const holds = byGid(input.audits.inventory.holds);
  const payments = byGid(input.audits.payment.payments);
  const problems: string[] = [];
  let complete = 0;
  let clean = 0;
  for (const planned of input.plan) {
    const status = input.statuses.get(planned.gid);
    if (status !== 'succeeded' && status !== 'failed') continue;
    const found = { order: orders.get(planned.gid), hold: holds.get(planned.gid), payment: payments.get(planned.gid) };
    const orderProblems = status === 'succeeded' ? succeededProblems(planned, found) : failedProblems(planned, found);
    if (orderProblems.length === 0) {
      if (status === 'succeeded') complete += 1;
      else clean += 1;
    }
    problems.push(...orderProblems.map((problem) => `${planned.gid} (${planned.mode}, ${status}): ${problem}`));
  }
  const planned = new Set(input.plan.map((order) => order.gid));
  for (const [service, rows] of [['order', orders], ['inventory', holds], ['payment', payments]] as const) {
    for (const gid of rows.keys()) if (!planned.has(gid)) problems.push(`${service} holds a row for ${gid}, which was never placed`);
  }
  const summary = `${complete} succeeded orders complete, ${clean} failed orders left nothing behind`;
  return {
    name: 'no order half made',
    passed: problems.length === 0,
    detail: problems.length === 0 ? summary : `${problems.length} problems, e.g. ${problems.slice(0, problemsShownMax).join('; ')}`,
  };
}

type Found = {
  order: OrderAudit['orders'][number] | undefined;
  hold: InventoryAudit['holds'][number] | undefined;
  payment: PaymentAudit['payments'][number] | undefined;
};

function succeededProblems(planned: PlannedOrder, found: Found): string[] {
  const expected = endStates[planned.mode];
  const problems: string[] = [];
  const { order, hold, payment } = found;
  if (order?.status !== 'placed') problems.push(`order is ${order?.status ?? 'missing'}, not placed`);
  else if (order.customer !== planned.customer || order.sku !== planned.sku || order.quantity !== planned.quantity || order.amountCents !== planned.amountCents) {
    problems.push('order differs from what was placed');
  }
  if (hold?.state !== expected.hold) problems.push(`stock is ${hold?.state ?? 'untouched'}, not ${expected.hold}`);
  else if (hold.sku !== planned.sku || hold.quantity !== planned.quantity) problems.push(`stock taken is ${hold.quantity} × ${hold.sku}`);
  if (payment?.state !== expected.payment) problems.push(`payment is ${payment?.state ?? 'missing'}, not ${expected.payment}`);
  else if (payment.customer !== planned.customer || payment.amountCents !== planned.amountCents) problems.push(`payment taken is ${payment.amountCents} from ${payment.customer}`);
  return problems;
}

function failedProblems(planned: PlannedOrder, found: Found): string[] {
  const expected = endStates[planned.mode];
  const problems: string[] = [];
  const { order, hold, payment } = found;
  if (order && order.status !== 'cancelled') problems.push(`order is ${order.status}`);
  if (hold && hold.state !== expected.undoneHold) problems.push(`stock is ${hold.state}, not ${expected.undoneHold}`);
  if (payment && payment.state !== expected.undonePayment) problems.push(`payment is ${payment.state}, not ${expected.undonePayment}`);
  return problems;
}

function byGid<Row extends { gid: string }>(rows: Row[]): Map<string, Row> {
  return new Map(rows.map((row) => [row.gid, row]));
}

// ---------------------------------------------------------------------------------------------
// Printing

export function formatReport(report: DemoReport): string {
  const seconds = report.durationMs / 1000;
  const lines = [
    `Tandem shop demo: ${report.orders} orders, ${report.concurrency} in flight, ${seconds.toFixed(1)} s (${(report.orders / seconds).toFixed(0)} orders/s)`,
    '',
    table([
      ['outcome', 'saga', 'tcc', 'total'],
      ...(['succeeded', 'failed', 'unended'] as const).map((key) => [key, String(report.outcomes.saga[key]), String(report.outcomes.tcc[key]), String(report.outcomes.total[key])]),
    ]),
    '',
    table([['check', 'result', 'detail'], ...report.checks.map((check) => [check.name, check.passed ? 'PASS' : 'FAIL', check.detail])]),
    '',
    table([
      ['what happened along the way', 'count'],
      ['5xx injected before the database', String(report.faults.injected5xxBefore)],
      ['5xx injected after a commit', String(report.faults.injected5xxAfter)],
      ['refused: out of stock', String(report.faults.refusedOutOfStock)],
      ['refused: insufficient funds', String(report.faults.refusedInsufficientFunds)],
      ['refused: other business reasons', String(report.faults.refusedAtRandom)],
      ['barrier: duplicates skipped', String(report.barrier.duplicatesSkipped)],
      ['barrier: null compensations', String(report.barrier.nullCompensations)],
      ['barrier: hanging Tries refused', String(report.barrier.hangingRefused)],
      ['services killed (SIGKILL) and restarted', restartsText(report)],
    ]),
  ];
  if (report.orderErrors.length > 0) lines.push('', 'orders that could not be placed:', ...report.orderErrors.map((message) => `  ${message}`));
  lines.push('', report.passed ? 'ALL CHECKS PASSED' : 'SOME CHECKS FAILED');
  return lines.join('\n');
}

function restartsText(report: DemoReport): string {
  if (report.restarts.length === 0) return '0';
  const where = report.restarts.map((restart) => `${restart.service} after ${restart.atEnded} orders`).join(', ');
  return `${report.restarts.length} (${where})`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  const render = (row: string[]) => row.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd();
  return [render(rows[0]), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.slice(1).map(render)].join('\n');
}
