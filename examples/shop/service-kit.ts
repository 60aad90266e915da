// What the three shop services share: counters that survive a crash, a barrier that counts
// what it skipped, injected faults around every branch call, and the HTTP server. Each
// service only writes its business rules (inventory.ts, payment.ts, order.ts).
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import type Database from 'better-sqlite3';
import type { z } from 'zod';
import type { Barrier, BarrierResult, BranchRef,
  PreparedState, SkipReason, SqliteBarrier } from '../../src/sdk/barrier.js';
import {
  BadRequest,
  BusinessFailure,
  barrierHandler,
  nodeHttpHandler,
  type BranchRequest,
  type Handler,
  type Participant,
} from '../../src/sdk/participant.js';
import { ops } from '../../src/shared/protocol.js';
import { auditPath, type ServiceName } from './catalog.js';
import type { Prng } from './prng.js';

export interface FaultRates {
  /** Calls answered 500 before the database is touched: the caller retries (or aborts a TCC). */
  before5xx: number;
  /** Calls answered 500 after their effect committed: a retry must be a barrier duplicate. */
  after5xx: number;
  /** Forward calls refused for a made-up business reason, besides the natural refusals. */
  refusal: number;
}

/** How the parent starts a service process (as JSON in its first argument). */
export interface ServiceConfig {
  service: ServiceName;
  /** 0 for any free port (the first life); the same port again after a restart. */
  port: number;
  dataDir: string;
  seedFile: string;
  faults: FaultRates;
  prngSeed: number;
}

/** What a service prints on stdout once it listens. */
export const serviceReadyLine = /shop \w+ listening on (http:\/\/\S+)/;

export const defaultFaultRates: FaultRates = { before5xx: 0.03, after5xx: 0.01, refusal: 0.01 };

/** Names of the counters every service keeps; the report sums them over services and lives. */
export const counterNames = {
  lives: 'lives',
  injected5xxBefore: 'injected5xxBefore',
  injected5xxAfter: 'injected5xxAfter',
  refusedAtRandom: 'refusedAtRandom',
  refusedOutOfStock: 'refusedOutOfStock',
  refusedInsufficientFunds: 'refusedInsufficientFunds',
  duplicatesSkipped: 'duplicatesSkipped',
  nullCompensations: 'nullCompensations',
  hangingRefused: 'hangingRefused',
  staleCoordinatorsRefused: 'staleCoordinatorsRefused',
} as const;

export type Counts = Record<string, number>;

const counterOfSkip: Record<SkipReason, string> = {
  duplicate: counterNames.duplicatesSkipped,
  'null-compensation': counterNames.nullCompensations,
  hanging: counterNames.hangingRefused,
  'stale-fence': counterNames.staleCoordinatorsRefused,
};

/**
 * Counters in a database file of their own. They cannot live in the business database: the
 * barrier may hold its write transaction open across an await, and a counter written then on
 * that connection would join (and roll back with) someone else's branch.
 */
export class Counters {
  private readonly bumpStatement: Database.Statement<[string, number]>;
  private readonly readStatement: Database.Statement<[]>;

  constructor(private readonly db: Database.Database) {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec('CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)');
    this.bumpStatement = db.prepare('INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value');
    this.readStatement = db.prepare('SELECT name, value FROM counters');
  }

  bump(name: string, by = 1): void {
    this.bumpStatement.run(name, by);
  }

  all(): Counts {
    const rows = this.readStatement.all() as Array<{ name: string; value: number }>;
    return Object.fromEntries(rows.map((row) => [row.name, row.value]));
  }
}

/** The SDK's barrier, counting each call it skipped and why. */
class CountingBarrier implements Barrier<Database.Database> {
  constructor(private readonly inner: SqliteBarrier, private readonly counters: Counters) {}

  get tableName(): string {
    return this.inner.tableName;
  }

  ensureSchema(): Promise<void> {
    return this.inner.ensureSchema();
  }

  async call<T>(branch: BranchRef, fn: (tx: Database.Database) => Promise<T>): Promise<BarrierResult<T>> {
    const result = await this.inner.call(branch, fn);
    if (!result.applied) this.counters.bump(counterOfSkip[result.reason]);
    return result;
  }

  queryPrepared(gid: string): Promise<PreparedState> {
    return this.inner.queryPrepared(gid);
  }
}

/** A 500 the demo asked for; the service does not log it as a surprise. */
export class InjectedFault extends Error {
  constructor(when: 'before' | 'after') {
    super(when === 'before' ? 'injected fault: 500 before touching the database' : 'injected fault: 500 after the effect committed');
    this.name = 'InjectedFault';
  }
}

/** What a service's business code gets to build its handlers. */
export interface ServiceKit {
  /**
   * A branch handler whose `effect` runs in one local transaction with the barrier row (so a
   * duplicate is skipped, a Cancel without Try does nothing and a late Try is refused),
   * wrapped in injected faults. `effect` must stay synchronous: the transaction is open.
   */
  branch(effect: (db: Database.Database, request: BranchRequest) => unknown): Handler;
  /** Refuses a forward call now and then for a made-up reason (inside the transaction). */
  refuseSometimes(reason: string): void;
  /** Refuses for a real business reason, counted under `counter`. */
  refuse(counter: string, message: string): never;
  counters: Counters;
}

export interface KitOptions {
  barrier: SqliteBarrier;
  counters: Counters;
  faults: FaultRates;
  prng: Prng;
}

export function makeKit({ barrier, counters, faults, prng }: KitOptions): ServiceKit {
  const counting = new CountingBarrier(barrier, counters);
  const refuse = (counter: string, message: string): never => {
    counters.bump(counter);
    throw new BusinessFailure(message);
  };
  return {
    counters,
    refuse,
    refuseSometimes: (reason) => {
      if (prng.chance(faults.refusal)) refuse(counterNames.refusedAtRandom, reason);
    },
    branch: (effect) => {
      const applied = barrierHandler(counting, async (db, request) => effect(db, request));
      return async (request) => {
        await slowTryIfAsked(request);
        if (prng.chance(faults.before5xx)) {
          counters.bump(counterNames.injected5xxBefore);
          throw new InjectedFault('before');
        }
        const value = await applied(request);
        if (prng.chance(faults.after5xx)) {
          counters.bump(counterNames.injected5xxAfter);
          throw new InjectedFault('after');
        }
        return value;
      };
    },
  };
}

/**
 * A Try whose payload carries `tryDelayMs` travels that long before reaching the service: the
 * demo's stand-in for a slow network, so that the coordinator's Cancel can overtake it.
 */
async function slowTryIfAsked(request: BranchRequest): Promise<void> {
  if (request.branch.op !== ops.tcc.try) return;
  const body = request.body;
  if (typeof body !== 'object' || body === null || !('tryDelayMs' in body)) return;
  const delayMs = body.tryDelayMs;
  if (typeof delayMs === 'number' && delayMs > 0 && delayMs <= 60_000) await delay(delayMs);
}

/** The branch payload checked against `schema`; a malformed one is a 400, not a retry loop. */
export function payloadOf<T>(schema: z.ZodType<T>, request: BranchRequest): T {
  const parsed = schema.safeParse(request.body);
  if (!parsed.success) throw new BadRequest(`bad payload: ${parsed.error.issues.map((issue) => `${issue.path.join('.')} ${issue.message}`).join('; ')}`, 'body');
  return parsed.data;
}

/** Serves branch calls through the SDK's node:http adapter, and GET /audit beside them. */
export async function serveService(participant: Participant, port: number, audit: () => unknown): Promise<{ server: http.Server; port: number }> {
  const branchCalls = nodeHttpHandler(participant);
  const server = http.createServer((request, response) => {
    if (request.method === 'GET' && request.url === auditPath) {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify(audit()));
      return;
    }
    branchCalls(request, response);
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}
