// Places one order the way an application would with the Tandem SDK: a saga of three
// branches, or a TCC transaction whose Tries the application calls itself.
import { TandemApiError, type TandemClient, type TxOptionsInput } from '../../src/sdk/client.js';
import type { TxStatus } from '../../src/shared/views.js';
import { branchPath, type PlannedOrder, type ServiceName } from './catalog.js';

export type ServiceUrls = Record<ServiceName, string>;

/** Quick retries keep a demo of thousands of orders short; the coordinator backs off from here. */
const retryIntervalMs = 50;
const requestTimeoutMs = 5_000;
/** A TCC transaction not submitted within this is cancelled by the coordinator. */
const tccTimeoutToFailMs = 20_000;
/** The slow-Try orders get a short deadline, and their Try arrives well after it. */
const slowTryTimeoutToFailMs = 1_000;
const slowTryDelayMs = 3_000;

function payloadsOf(order: PlannedOrder) {
  return {
    order: { customer: order.customer, sku: order.sku, quantity: order.quantity, amountCents: order.amountCents },
    inventory: { sku: order.sku, quantity: order.quantity },
    payment: { customer: order.customer, amountCents: order.amountCents },
  };
}

/** Places `order` and waits for its end; returns how the coordinator says it ended. */
export async function placeOrder(client: TandemClient, urls: ServiceUrls, order: PlannedOrder): Promise<TxStatus> {
  if (order.mode === 'saga') await submitSaga(client, urls, order);
  else await runTcc(client, urls, order);
  return (await client.waitResult(order.gid)).status;
}

/** Stock first, then money, then the order: a placed order exists only once both are taken. */
async function submitSaga(client: TandemClient, urls: ServiceUrls, order: PlannedOrder): Promise<void> {
  const payloads = payloadsOf(order);
  const url = (service: ServiceName) => urls[service] + branchPath(service, 'saga');
  await client
    .saga({ gid: order.gid, retryIntervalMs, requestTimeoutMs })
    .add(url('inventory'), url('inventory'), payloads.inventory)
    .add(url('payment'), url('payment'), payloads.payment)
    .add(url('order'), url('order'), payloads.order)
    .submit();
}

/**
 * Order (pending), stock (frozen) and money (frozen) are tried in turn; Confirm makes them
 * placed, deducted and captured. A refused or failed Try makes `tcc` abort, so every branch
 * tried so far is cancelled; the transaction's end is then the coordinator's to tell.
 */
async function runTcc(client: TandemClient, urls: ServiceUrls, order: PlannedOrder): Promise<void> {
  const payloads = payloadsOf(order);
  const url = (service: ServiceName) => urls[service] + branchPath(service, 'tcc');
  const options: TxOptionsInput = {
    gid: order.gid,
    retryIntervalMs,
    requestTimeoutMs,
    timeoutToFailMs: order.slowInventoryTry ? slowTryTimeoutToFailMs : tccTimeoutToFailMs,
  };
  const inventoryPayload = order.slowInventoryTry ? { ...payloads.inventory, tryDelayMs: slowTryDelayMs } : payloads.inventory;
  try {
    await client.tcc(options, async (tcc) => {
      await tcc.callBranch(payloads.order, url('order'), url('order'), url('order'));
      await tcc.callBranch(inventoryPayload, url('inventory'), url('inventory'), url('inventory'));
      await tcc.callBranch(payloads.payment, url('payment'), url('payment'), url('payment'));
    });
  } catch (error) {
    // Refusals, 5xx and a crashed service all land here; only a transaction that was never
    // created leaves nothing for the coordinator to finish.
    if (!(await exists(client, order.gid))) throw error;
  }
}

async function exists(client: TandemClient, gid: string): Promise<boolean> {
  try {
    await client.get(gid);
    return true;
  } catch (error) {
    if (error instanceof TandemApiError && error.status === 404) return false;
    throw error;
  }
}
