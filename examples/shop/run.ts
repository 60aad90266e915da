// runDemo: starts the coordinator and the three services as child processes, each on its own
// SQLite file in a temp directory; places the planned orders with bounded concurrency;
// SIGKILLs one service partway and starts it again; then builds the closing report from the
// coordinator's answers and each service's own database. Every child is stopped and the
// temp directory removed at the end, whatever happened.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { TandemApiError, TandemClient } from '../../src/sdk/client.js';
import type { TxStatus } from '../../src/shared/views.js';
import { auditPath, makeSeed, planOrders, serviceNames, type PlannedOrder, type ServiceName } from './catalog.js';
import { ManagedChild, type ChildExit, type ChildSpec } from './processes.js';
import { buildReport, type Audits, type DemoReport, type Restart } from './report.js';
import { defaultFaultRates, serviceReadyLine, type FaultRates, type ServiceConfig } from './service-kit.js';
import { placeOrder, type ServiceUrls } from './shopper.js';

export interface DemoOptions {
  /** Orders to place; default 3000. */
  orders?: number;
  /** Orders in flight at once; default 32. */
  concurrency?: number;
  /** Seeds the catalog, the plan and the injected faults; default 1. */
  seed?: number;
  faults?: Partial<FaultRates>;
  /** The service killed with SIGKILL and restarted mid-run; null for none. Default payment. */
  restartService?: ServiceName | null;
  /** Share of the orders ended when the restart happens; default 0.4. */
  restartAtFraction?: number;
  /** A run in which no order ends for this long fails instead of hanging; default 60 000. */
  stallTimeoutMs?: number;
  onProgress?: (progress: DemoProgress) => void;
  /** Aborting stops the run: no more orders are placed and every child is stopped. */
  signal?: AbortSignal;
}

export interface DemoProgress {
  ended: number;
  total: number;
  succeeded: number;
  failed: number;
  /** Set when something worth a line happened (a service killed or back). */
  note?: string;
}

const ordersMax = 1_000_000;
const concurrencyMax = 1_000;
const orderErrorsKept = 10;
/** Parallel lookups when reading every transaction back from the coordinator. */
const lookupConcurrency = 16;
const stallCheckEveryMs = 1_000;

const cliPath = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const serviceMainPath = fileURLToPath(new URL('./service-main.js', import.meta.url));
const coordinatorReadyLine = /tandem listening on (http:\/\/\S+)/;

type Settings = Required<Omit<DemoOptions, 'onProgress' | 'signal' | 'faults'>> & { faults: FaultRates };

function settingsOf(options: DemoOptions): Settings {
  const settings: Settings = {
    orders: options.orders ?? 3000,
    concurrency: options.concurrency ?? 32,
    seed: options.seed ?? 1,
    faults: { ...defaultFaultRates, ...options.faults },
    restartService: options.restartService === undefined ? 'payment' : options.restartService,
    restartAtFraction: options.restartAtFraction ?? 0.4,
    stallTimeoutMs: options.stallTimeoutMs ?? 60_000,
  };
  assertWhole('orders', settings.orders, 1, ordersMax);
  assertWhole('concurrency', settings.concurrency, 1, concurrencyMax);
  assertWhole('seed', settings.seed, 0, 2 ** 31 - 1);
  assertWhole('stallTimeoutMs', settings.stallTimeoutMs, 1, 3_600_000);
  if (!(settings.restartAtFraction > 0 && settings.restartAtFraction < 1)) throw new RangeError('restartAtFraction must be between 0 and 1');
  for (const [name, rate] of Object.entries(settings.faults)) {
    if (!(rate >= 0 && rate < 1)) throw new RangeError(`fault rate ${name} must be at least 0 and below 1, got ${rate}`);
  }
  return settings;
}

function assertWhole(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`${name} must be a whole number from ${min} to ${max}, got ${value}`);
}

/** Rejects once something makes the run hopeless: a child died on its own, a stall, an abort. */
class RunFailure {
  readonly promise: Promise<never>;
  private rejectWith!: (error: Error) => void;

  constructor() {
    this.promise = new Promise<never>((_, reject) => (this.rejectWith = reject));
    // Nobody may be racing it when it fires late (during cleanup); that is not an error.
    this.promise.catch(() => undefined);
  }

  fail(error: Error): void {
    this.rejectWith(error);
  }

  /** Resolves with `work`, or rejects as soon as the run fails. */
  race<T>(work: Promise<T>): Promise<T> {
    work.catch(() => undefined);
    return Promise.race([work, this.promise]);
  }
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoReport> {
  const settings = settingsOf(options);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-shop-'));
  const failure = new RunFailure();
  const onUnexpectedExit = (child: ManagedChild, exit: ChildExit) =>
    failure.fail(new Error(`${child.name} exited on its own (${exit.signal ?? `code ${exit.code}`}); its output ends with:\n${child.outputTail}`));
  const onAbort = () => failure.fail(new Error('the demo was interrupted'));
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  const agent = new Agent({ keepAliveTimeout: 10_000 });
  const coordinator = new ManagedChild(coordinatorSpec(dataDir), onUnexpectedExit);
  const services = new Map<ServiceName, ManagedChild>();
  let driver: OrderDriver | undefined;
  try {
    const seed = makeSeed(settings.orders, settings.seed);
    const seedFile = path.join(dataDir, 'seed.json');
    fs.writeFileSync(seedFile, JSON.stringify(seed));
    for (const name of serviceNames) services.set(name, new ManagedChild(serviceSpec(name, dataDir, seedFile, settings), onUnexpectedExit));
    const children = [coordinator, ...services.values()];
    await failure.race(Promise.all(children.map((child) => child.start())));
    const client = new TandemClient({ url: coordinator.url, dispatcher: agent });
    const urls = Object.fromEntries(serviceNames.map((name) => [name, serviceOf(services, name).url])) as ServiceUrls;
    const plan = planOrders(seed, settings.orders, settings.seed);

    const startedAtMs = performance.now();
    driver = new OrderDriver({ client, urls, plan, settings, services, failure, onProgress: options.onProgress });
    const driven = driver.run();
    const stallWatch = watchForStall(driver, settings.stallTimeoutMs, failure);
    try {
      await failure.race(driven);
    } finally {
      clearInterval(stallWatch);
    }
    const durationMs = performance.now() - startedAtMs;

    const statuses = await failure.race(finalStatuses(client, plan));
    const openAtCoordinator = await failure.race(countOpen(client));
    const audits = await failure.race(fetchAudits(urls, agent));
    return buildReport({ seed, plan, concurrency: settings.concurrency, durationMs, statuses, openAtCoordinator, audits, restarts: driver.restarts, orderErrors: driver.orderErrors });
  } finally {
    if (driver) driver.stopped = true;
    options.signal?.removeEventListener('abort', onAbort);
    // Our idle keep-alive connections would only make the coordinator's graceful close wait.
    await agent.destroy();
    await Promise.all([coordinator, ...services.values()].map((child) => child.stop()));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

function coordinatorSpec(dataDir: string): ChildSpec {
  const env: NodeJS.ProcessEnv = { ...process.env, TANDEM_RECOVERY_INTERVAL_MS: '100' };
  delete env.TANDEM_FAILPOINTS;
  return {
    name: 'coordinator',
    args: (port) => [
      cliPath, 'serve', '--host', '127.0.0.1', '--port', String(port),
      '--store', `sqlite:${path.join(dataDir, 'coordinator.db')}`, '--sqlite-sync', 'normal', '--log-level', 'warn',
    ],
    env,
    readyLine: coordinatorReadyLine,
  };
}

function serviceSpec(service: ServiceName, dataDir: string, seedFile: string, settings: Settings): ChildSpec {
  return {
    name: service,
    args: (port) => {
      const config: ServiceConfig = { service, port, dataDir, seedFile, faults: settings.faults, prngSeed: settings.seed * 3 + serviceNames.indexOf(service) };
      return [serviceMainPath, JSON.stringify(config)];
    },
    readyLine: serviceReadyLine,
  };
}

function serviceOf(services: ReadonlyMap<ServiceName, ManagedChild>, name: ServiceName): ManagedChild {
  const child = services.get(name);
  if (!child) throw new Error(`no ${name} service`);
  return child;
}

function watchForStall(driver: OrderDriver, stallTimeoutMs: number, failure: RunFailure): NodeJS.Timeout {
  const timer = setInterval(() => {
    const idleMs = performance.now() - driver.lastEndedAtMs;
    if (idleMs > stallTimeoutMs) failure.fail(new Error(`no order ended for ${stallTimeoutMs} ms; still in flight: ${[...driver.inFlight].slice(0, 10).join(', ')}`));
  }, stallCheckEveryMs);
  timer.unref();
  return timer;
}

interface DriverOptions {
  client: TandemClient;
  urls: ServiceUrls;
  plan: PlannedOrder[];
  settings: Settings;
  services: ReadonlyMap<ServiceName, ManagedChild>;
  failure: RunFailure;
  onProgress?: (progress: DemoProgress) => void;
}

/** Places the plan's orders, `concurrency` at a time, and restarts a service on the way. */
class OrderDriver {
  stopped = false;
  readonly inFlight = new Set<string>();
  readonly restarts: Restart[] = [];
  readonly orderErrors: string[] = [];
  lastEndedAtMs = performance.now();
  private nextIndex = 0;
  private ended = 0;
  private succeeded = 0;
  private failed = 0;
  private restarting: Promise<void> | null = null;
  private readonly restartAtEnded: number;

  constructor(private readonly options: DriverOptions) {
    this.restartAtEnded = Math.max(1, Math.round(options.plan.length * options.settings.restartAtFraction));
  }

  async run(): Promise<void> {
    const workers = Array.from({ length: Math.min(this.options.settings.concurrency, this.options.plan.length) }, () => this.work());
    await Promise.all(workers);
    await this.restarting;
  }

  private async work(): Promise<void> {
    const { plan, client, urls } = this.options;
    while (!this.stopped && this.nextIndex < plan.length) {
      const order = plan[this.nextIndex];
      this.nextIndex += 1;
      this.inFlight.add(order.gid);
      let status: TxStatus | undefined;
      try {
        status = await placeOrder(client, urls, order);
      } catch (error) {
        if (this.orderErrors.length < orderErrorsKept) this.orderErrors.push(`${order.gid}: ${error instanceof Error ? error.message : String(error)}`);
      }
      this.inFlight.delete(order.gid);
      this.onEnded(status);
    }
  }

  private onEnded(status: TxStatus | undefined): void {
    this.ended += 1;
    this.lastEndedAtMs = performance.now();
    if (status === 'succeeded') this.succeeded += 1;
    if (status === 'failed') this.failed += 1;
    this.report();
    const service = this.options.settings.restartService;
    if (service !== null && this.restarting === null && this.ended >= this.restartAtEnded) {
      this.restarting = this.restart(service).catch((error: unknown) => {
        this.options.failure.fail(new Error(`restarting ${service} failed: ${error instanceof Error ? error.message : String(error)}`));
      });
    }
  }

  /** A real crash: SIGKILL with branches in flight, then a new life on the same port and files. */
  private async restart(service: ServiceName): Promise<void> {
    const child = serviceOf(this.options.services, service);
    const atEnded = this.ended;
    this.report(`killing ${service} with SIGKILL`);
    await child.crash();
    this.report(`${service} is down; starting it again`);
    await child.start();
    this.restarts.push({ service, atEnded });
    this.report(`${service} is back on port ${child.port}`);
  }

  private report(note?: string): void {
    this.options.onProgress?.({ ended: this.ended, total: this.options.plan.length, succeeded: this.succeeded, failed: this.failed, ...(note ? { note } : {}) });
  }
}

/** Every planned transaction's status as the coordinator answers it now. */
async function finalStatuses(client: TandemClient, plan: PlannedOrder[]): Promise<Map<string, TxStatus>> {
  const statuses = new Map<string, TxStatus>();
  let next = 0;
  const lookUp = async () => {
    while (next < plan.length) {
      const gid = plan[next].gid;
      next += 1;
      try {
        statuses.set(gid, (await client.get(gid)).status);
      } catch (error) {
        // Never created: the report counts it as not ended.
        if (!(error instanceof TandemApiError && error.status === 404)) throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: lookupConcurrency }, lookUp));
  return statuses;
}

/** Transactions the coordinator still works on; a finished run leaves none. */
async function countOpen(client: TandemClient): Promise<number> {
  const openStatuses: TxStatus[] = ['prepared', 'submitted', 'aborting'];
  const pages = await Promise.all(openStatuses.map((status) => client.list({ status, limit: 100 })));
  return pages.reduce((total, page) => total + page.items.length, 0);
}

async function fetchAudits(urls: ServiceUrls, agent: Agent): Promise<Audits> {
  const read = async (service: ServiceName): Promise<unknown> => {
    const response = await request(urls[service] + auditPath, { dispatcher: agent });
    const text = await response.body.text();
    if (response.statusCode !== 200) throw new Error(`${service} audit answered ${response.statusCode}: ${text.slice(0, 200)}`);
    return JSON.parse(text) as unknown;
  };
  const [inventory, payment, order] = await Promise.all(serviceNames.map(read));
  return { inventory, payment, order } as Audits;
}
