// What the shop starts with (stock per SKU, money per customer) and the orders a run places.
// Both follow from a seed, so the parent and the services agree without talking.
import { seededPrng } from './prng.js';

export interface SkuSeed {
  sku: string;
  stock: number;
  priceCents: number;
}

export interface AccountSeed {
  customer: string;
  balanceCents: number;
}

export interface ShopSeed {
  skus: SkuSeed[];
  accounts: AccountSeed[];
}

export type OrderMode = 'saga' | 'tcc';

export interface PlannedOrder {
  index: number;
  gid: string;
  mode: OrderMode;
  customer: string;
  sku: string;
  quantity: number;
  amountCents: number;
  /**
   * The inventory Try reaches its service only after the transaction's deadline passed and
   * its Cancel ran: the barrier must refuse it (a hanging Try).
   */
  slowInventoryTry: boolean;
}

const skuCount = 20;
/** The first SKUs get a fraction of their demand in stock: out-of-stock refusals. */
const scarceSkuCount = 3;
const customerCount = 40;
/** The first customers can pay for an order or two: insufficient-funds refusals. */
const thinWalletCount = 4;
const thinWalletCents = 20_000;
const priceCentsMin = 500;
const priceCentsMax = 15_000;
const quantityMax = 3;
const sagaShare = 0.6;
/** One order in this many is a TCC whose inventory Try comes late (see slowInventoryTry). */
export const slowTryEvery = 250;
const slowTryOffset = 17;

export function makeSeed(orderCount: number, seed: number): ShopSeed {
  const prng = seededPrng(seed);
  const averageQuantity = (1 + quantityMax) / 2;
  const unitsPerSku = (orderCount * averageQuantity) / skuCount;
  const skus = Array.from({ length: skuCount }, (_, index) => ({
    sku: `SKU-${String(index + 1).padStart(3, '0')}`,
    stock: index < scarceSkuCount ? Math.ceil(unitsPerSku * 0.5) + 1 : Math.ceil(unitsPerSku * 1.3) + 5,
    priceCents: prng.int(priceCentsMin / 100, priceCentsMax / 100) * 100,
  }));
  const averageOrderCents = ((priceCentsMin + priceCentsMax) / 2) * averageQuantity;
  const spendPerCustomerCents = (orderCount * averageOrderCents) / customerCount;
  const accounts = Array.from({ length: customerCount }, (_, index) => ({
    customer: `customer-${String(index + 1).padStart(3, '0')}`,
    balanceCents: index < thinWalletCount ? thinWalletCents : Math.ceil(spendPerCustomerCents * 1.2),
  }));
  return { skus, accounts };
}

export function planOrders(shop: ShopSeed, orderCount: number, seed: number): PlannedOrder[] {
  const prng = seededPrng(seed ^ 0x5eed);
  return Array.from({ length: orderCount }, (_, index) => {
    const item = prng.pick(shop.skus);
    const quantity = prng.int(1, quantityMax);
    const slowInventoryTry = index % slowTryEvery === slowTryOffset;
    return {
      index,
      gid: `shop-order-${String(index).padStart(6, '0')}`,
      mode: slowInventoryTry || !prng.chance(sagaShare) ? 'tcc' : 'saga',
      customer: prng.pick(shop.accounts).customer,
      sku: item.sku,
      quantity,
      amountCents: item.priceCents * quantity,
      slowInventoryTry,
    };
  });
}

export function totalStock(shop: ShopSeed): number {
  return shop.skus.reduce((sum, item) => sum + item.stock, 0);
}

export function totalMoneyCents(shop: ShopSeed): number {
  return shop.accounts.reduce((sum, account) => sum + account.balanceCents, 0);
}

export const serviceNames = ['inventory', 'payment', 'order'] as const;
export type ServiceName = (typeof serviceNames)[number];

/** The one URL path each service serves for a mode; the op query parameter picks the handler. */
export function branchPath(service: ServiceName, mode: OrderMode): string {
  return `/${service}/${mode}`;
}

/** Every service answers its state here, for the closing report. */
export const auditPath = '/audit';
