// A bank as a real HTTP participant: accounts in a SQLite file of its own, every effect behind
// the SDK's SqliteBarrier, so a repeated call is skipped and a Try after its Cancel is refused.
// Money moves out of an account (path /out) or into one (path /in); the op (action/compensate,
// try/confirm/cancel) comes from the query like any branch call. Every call is logged with the
// coordinator instance that made it (tandem-coordinator header), its lease epoch (tandem-fence)
// and when it started and ended on this process's monotonic clock, so a test can check that no
// op was in flight from two coordinators at once and that no coordinator took a transaction
// from another.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { SqliteBarrier, branchRefFromQuery, type BranchRef } from '../../src/sdk/barrier.js';
import { tempDir } from './coordinator.js';

export interface CallRecord extends Omit<BranchRef, 'fence'> {
  direction: string;
  /** The tandem-coordinator header; '' when the application itself called (a TCC Try). */
  instance: string;
  fence: number | null;
  startedMs: number;
  endedMs: number;
  status: number;
  /** The barrier let the effect through (false: a duplicate, null compensation or hanging Try). */
  applied: boolean;
}

export interface Totals {
  balance: number;
  frozen: number;
  incoming: number;
}

/** Each account starts with this much; nothing in a test moves more out of one. */
export const openingBalance = 1_000_000;

/** What each op does to (balance, frozen, incoming) of the account, per direction. */
const moves: Record<string, Record<string, readonly [number, number, number]>> = {
  out: { action: [-1, 0, 0], compensate: [1, 0, 0], try: [-1, 1, 0], confirm: [0, -1, 0], cancel: [1, -1, 0] },
  in: { action: [1, 0, 0], compensate: [-1, 0, 0], try: [0, 0, 1], confirm: [1, 0, -1], cancel: [0, 0, -1] },
};

export class BankParticipant {
  url = '';
  readonly calls: CallRecord[] = [];
  private readonly db: Database.Database;
  private readonly reader: Database.Database;
  private readonly barrier: SqliteBarrier;
  private readonly server: http.Server;

  /**
   * How long a call from a coordinator is held after its effect commits: a bank that takes a
   * moment to answer, which widens the window in which a second coordinator's call would overlap.
   */
  constructor(dir: string, name: string, accounts: number, private readonly answerDelayMs = 0) {
    const file = path.join(dir, `${name}.db`);
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS accounts (
      id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, frozen INTEGER NOT NULL DEFAULT 0, incoming INTEGER NOT NULL DEFAULT 0)`);
    this.db.exec(`CREATE TABLE IF NOT EXISTS effects (gid TEXT NOT NULL, branch_id TEXT NOT NULL, op TEXT NOT NULL)`);
    const open = this.db.prepare('INSERT INTO accounts (id, balance) VALUES (?, ?)');
    for (let id = 0; id < accounts; id += 1) open.run(id, openingBalance);
    this.barrier = new SqliteBarrier(this.db);
    this.reader = new Database(file, { readonly: true });
    this.server = http.createServer((request, response) => void this.handle(request, response));
  }

  async start(): Promise<this> {
    await this.barrier.ensureSchema();
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  urlFor(direction: 'out' | 'in'): string {
    return `${this.url}/${direction}`;
  }

  totals(): Totals {
    return this.reader.prepare('SELECT SUM(balance) AS balance, SUM(frozen) AS frozen, SUM(incoming) AS incoming FROM accounts').get() as Totals;
  }

  /** Times the op was applied for the branch (the barrier makes anything above 1 a bug). */
  effects(gid: string, branchId: string, op: string): number {
    const row = this.reader.prepare('SELECT COUNT(*) AS n FROM effects WHERE gid = ? AND branch_id = ? AND op = ?').get(gid, branchId, op) as { n: number };
    return row.n;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.reader.close();
    this.db.close();
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const startedMs = performance.now();
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const url = new URL(request.url ?? '/', 'http://bank');
    const direction = url.pathname.slice(1);
    let branch: BranchRef;
    let body: { account?: unknown; amount?: unknown };
    try {
      branch = branchRefFromQuery(url.searchParams);
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
    } catch (error) {
      response.writeHead(400).end(String(error));
      return;
    }
    const move = moves[direction]?.[branch.op];
    if (!move || typeof body.account !== 'number' || typeof body.amount !== 'number') {
      response.writeHead(400).end(`unknown ${direction}/${branch.op} or a body without account and amount`);
      return;
    }
    const amount = body.amount;
    const account = body.account;
    let status = 200;
    let applied = false;
    try {
      const result = await this.barrier.call(branch, async (db) => {
        db.prepare('UPDATE accounts SET balance = balance + ?, frozen = frozen + ?, incoming = incoming + ? WHERE id = ?').run(
          move[0] * amount,
          move[1] * amount,
          move[2] * amount,
          account,
        );
        db.prepare('INSERT INTO effects (gid, branch_id, op) VALUES (?, ?, ?)').run(branch.gid, branch.branchId, branch.op);
      });
      applied = result.applied;
    } catch {
      // Nothing here refuses; an error is a broken test setup, and a 500 makes the coordinator retry.
      status = 500;
    }
    const instance = String(request.headers['tandem-coordinator'] ?? '');
    if (instance !== '' && this.answerDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.answerDelayMs));
    const fence = request.headers['tandem-fence'];
    this.calls.push({
      ...branch,
      direction,
      instance,
      fence: typeof fence === 'string' ? Number(fence) : null,
      startedMs,
      endedMs: performance.now(),
      status,
      applied,
    });
    response.writeHead(status, { 'content-type': 'application/json' }).end(status === 200 ? '{"dtm_result":"SUCCESS"}' : '');
  }
}

/** Two banks (money leaves one and arrives at the other), stopped and removed when the test ends. */
export async function startBanks(t: TestContext, accounts: number, answerDelayMs = 0): Promise<[BankParticipant, BankParticipant]> {
  const dir = tempDir('tandem-bank-');
  const banks: [BankParticipant, BankParticipant] = [new BankParticipant(dir, 'bank-a', accounts, answerDelayMs), new BankParticipant(dir, 'bank-b', accounts, answerDelayMs)];
  t.after(async () => {
    await Promise.all(banks.map((bank) => bank.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await Promise.all(banks.map((bank) => bank.start()));
  return banks;
}

/** Ops of one branch (same gid, branch and op) in flight from two coordinator instances at once. */
export function concurrentOps(calls: readonly CallRecord[]): number {
  const byOp = new Map<string, CallRecord[]>();
  for (const call of calls) {
    if (call.instance === '') continue;
    const key = `${call.gid}\u0000${call.branchId}\u0000${call.op}`;
    byOp.set(key, [...(byOp.get(key) ?? []), call]);
  }
  let overlapping = 0;
  for (const group of byOp.values()) {
    for (let i = 0; i < group.length; i += 1) {
      for (let j = i + 1; j < group.length; j += 1) {
        const [a, b] = [group[i], group[j]];
        if (a.instance !== b.instance && a.startedMs < b.endedMs && b.startedMs < a.endedMs) overlapping += 1;
      }
    }
  }
  return overlapping;
}

export interface Takeovers {
  /** Transactions some of whose calls came from a coordinator other than the one the client used. */
  foreignDriven: string[];
  /**
   * Hand-overs seen by the participants: a call from coordinator B for a transaction whose
   * previous call came from A and ended less than `leaseMs` before (A's lease, renewed while
   * its calls ran, was still live, so B can only have taken it by misjudging its expiry).
   */
  liveLease: string[];
}

/** Who drove each transaction, judged from the banks' call logs. */
export function takeovers(calls: readonly CallRecord[], drivers: ReadonlyMap<string, string>, leaseMs: number): Takeovers {
  const byGid = new Map<string, CallRecord[]>();
  for (const call of calls) {
    if (call.instance === '') continue;
    byGid.set(call.gid, [...(byGid.get(call.gid) ?? []), call]);
  }
  const foreignDriven: string[] = [];
  const liveLease: string[] = [];
  for (const [gid, group] of byGid) {
    const driver = drivers.get(gid);
    if (group.some((call) => call.instance !== driver)) foreignDriven.push(gid);
    group.sort((a, b) => a.startedMs - b.startedMs);
    for (let index = 1; index < group.length; index += 1) {
      const holder = group.slice(0, index).filter((call) => call.instance !== group[index].instance);
      const lastOfHolder = holder[holder.length - 1];
      if (lastOfHolder && group[index].startedMs < lastOfHolder.endedMs + leaseMs) {
        liveLease.push(gid);
        break;
      }
    }
  }
  return { foreignDriven, liveLease };
}
