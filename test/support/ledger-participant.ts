// A real HTTP participant with its own SQLite ledger. Every effect goes through the SDK's
// SqliteBarrier, so the barrier row and the ledger row commit together and a re-delivered call
// is skipped. The ledger table has no unique key on purpose: a duplicate that slipped past
// the barrier would show up as a second row. Raw deliveries are counted in memory as well, so
// a test can show that the coordinator did call again after a crash while the ledger still
// holds each effect once.
//
// A branch URL may carry `?refuse=1`: its forward op (action, prepare, try, canCommit) then
// refuses inside the barrier, which rolls the barrier row back like a real business refusal.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { SqliteBarrier, branchRefFromQuery, type BranchRef } from '../../src/sdk/barrier.js';
import type { TestContext } from 'node:test';
import { statusBusinessFailure, undoOf } from '../../src/shared/protocol.js';
import { tempDir } from './coordinator.js';

export interface Delivery extends BranchRef {
  path: string;
}

export interface AppliedEffect extends BranchRef {
  amount: number;
}

/** A delivery whose answer the test holds back until it calls `release`. */
export interface HeldAnswer {
  /** Resolves once the matching call arrived and its effect (if any) is committed. */
  arrived: Promise<Delivery>;
  release(): void;
}

interface PendingHold {
  predicate: (delivery: Delivery) => boolean;
  arrived: (delivery: Delivery) => void;
  released: Promise<void>;
}

class BusinessRefusal extends Error {}

const okBody = '{"dtm_result":"SUCCESS"}';
const refusedBody = '{"dtm_result":"FAILURE"}';

function keyOf(gid: string, branchId: string, op: string): string {
  return `${gid}\u0000${branchId}\u0000${op}`;
}

export class LedgerParticipant {
  url = '';
  readonly dbPath: string;
  private readonly db: Database.Database;
  /** A second connection for the test's reads, so they never join a barrier transaction. */
  private readonly reader: Database.Database;
  private readonly barrier: SqliteBarrier;
  private readonly server: http.Server;
  private readonly deliveryCounts = new Map<string, number>();
  private readonly gidsSeen = new Set<string>();
  private readonly holds: PendingHold[] = [];
  private readonly appliedListeners: Array<(effect: AppliedEffect) => void> = [];
  private readonly releases = new Set<() => void>();
  /** Per op key, the coordinator instances whose calls are being handled right now. */
  private readonly inFlight = new Map<string, string[]>();
  /**
   * Calls that arrived while a call for the same op from ANOTHER coordinator instance was
   * still being handled: two instances working one transaction at once.
   */
  overlaps = 0;
  /** Which coordinator instances called for each gid. */
  private readonly callersByGid = new Map<string, Set<string>>();
  /** While set, calls wait here before anything else: a gate the test opens. */
  private gate: { opened: Promise<void>; open: () => void } | null = null;

  constructor(dir: string, name: string) {
    this.dbPath = path.join(dir, `${name}.db`);
    this.db = new Database(this.dbPath);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`CREATE TABLE IF NOT EXISTS ledger (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      gid TEXT NOT NULL, branch_id TEXT NOT NULL, op TEXT NOT NULL, amount INTEGER NOT NULL)`);
    this.barrier = new SqliteBarrier(this.db);
    this.reader = new Database(this.dbPath, { readonly: true });
    this.server = http.createServer((request, response) => void this.handle(request, response));
  }

  async start(): Promise<this> {
    await this.barrier.ensureSchema();
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** A branch URL for `op` on this participant; `refuse` makes its forward op a business refusal. */
  urlFor(op: string, options: { refuse?: boolean } = {}): string {
    return `${this.url}/${op}${options.refuse ? '?refuse=1' : ''}`;
  }

  /** Calls that reached this participant for the op, duplicates included. */
  deliveries(gid: string, branchId: string, op: string): number {
    return this.deliveryCounts.get(keyOf(gid, branchId, op)) ?? 0;
  }

  /** The coordinator instances (tandem-coordinator header) that called for this gid. */
  callersOf(gid: string): string[] {
    return [...(this.callersByGid.get(gid) ?? [])];
  }

  /** True when any call for this gid ever reached this participant. */
  sawGid(gid: string): boolean {
    return this.gidsSeen.has(gid);
  }

  /** Rows in this participant's own ledger for the op: 1 means applied exactly once. */
  effects(gid: string, branchId: string, op: string): number {
    const row = this.reader.prepare('SELECT COUNT(*) AS n FROM ledger WHERE gid = ? AND branch_id = ? AND op = ?').get(gid, branchId, op) as { n: number };
    return row.n;
  }

  /** The sum of the ledger's amounts for a gid (undo ops are negative). */
  balance(gid: string): number {
    const row = this.reader.prepare('SELECT COALESCE(SUM(amount), 0) AS total FROM ledger WHERE gid = ?').get(gid) as { total: number };
    return row.total;
  }

  /** Holds the answer to the first delivery that matches, after its effect committed. */
  holdAnswer(predicate: (delivery: Delivery) => boolean): HeldAnswer {
    let arrived: (delivery: Delivery) => void = () => undefined;
    let release: () => void = () => undefined;
    const arrivedPromise = new Promise<Delivery>((resolve) => (arrived = resolve));
    const released = new Promise<void>((resolve) => (release = resolve));
    this.releases.add(release);
    this.holds.push({ predicate, arrived, released });
    return { arrived: arrivedPromise, release };
  }

  /** Makes every call wait, untouched, until `openGate`; lets a test pile up work in flight. */
  closeGate(): void {
    if (this.gate) return;
    let open: () => void = () => undefined;
    const opened = new Promise<void>((resolve) => (open = resolve));
    this.gate = { opened, open };
  }

  openGate(): void {
    this.gate?.open();
    this.gate = null;
  }

  /** Called after each effect commits to the ledger. */
  onApplied(listener: (effect: AppliedEffect) => void): void {
    this.appliedListeners.push(listener);
  }

  async stop(): Promise<void> {
    this.openGate();
    for (const release of this.releases) release();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.reader.close();
    this.db.close();
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    if (this.gate) await this.gate.opened;
    const url = new URL(request.url ?? '/', 'http://participant');
    let branch: BranchRef;
    try {
      branch = branchRefFromQuery(url.searchParams);
    } catch (error) {
      response.writeHead(400).end(String(error));
      return;
    }
    const delivery: Delivery = { ...branch, path: url.pathname };
    this.countDelivery(delivery);
    const instance = String(request.headers['tandem-coordinator'] ?? '');
    const flightKey = keyOf(branch.gid, branch.branchId, branch.op);
    const callers = this.callersByGid.get(branch.gid) ?? new Set<string>();
    callers.add(instance);
    this.callersByGid.set(branch.gid, callers);
    const flying = this.inFlight.get(flightKey) ?? [];
    if (flying.some((other) => other !== instance)) this.overlaps += 1;
    flying.push(instance);
    this.inFlight.set(flightKey, flying);
    try {
      await this.answer(response, url, branch, delivery, chunks);
    } finally {
      flying.splice(flying.indexOf(instance), 1);
      if (flying.length === 0) this.inFlight.delete(flightKey);
    }
  }

  private async answer(response: http.ServerResponse, url: URL, branch: BranchRef, delivery: Delivery, chunks: Buffer[]): Promise<void> {
    const refuse = url.searchParams.get('refuse') === '1' && !isUndoOp(branch.op);
    let status = 200;
    try {
      const amount = amountOf(Buffer.concat(chunks).toString('utf8')) * (isUndoOp(branch.op) ? -1 : 1);
      const result = await this.barrier.call(branch, async (db) => {
        if (refuse) throw new BusinessRefusal();
        db.prepare('INSERT INTO ledger (gid, branch_id, op, amount) VALUES (?, ?, ?, ?)').run(branch.gid, branch.branchId, branch.op, amount);
      });
      if (result.applied) for (const listener of this.appliedListeners) listener({ ...branch, amount });
    } catch (error) {
      // Anything but a refusal is a bug in the test setup; a 500 makes the coordinator retry
      // and the failed assertions later name the branch.
      status = error instanceof BusinessRefusal ? statusBusinessFailure : 500;
    }
    await this.holdIfAsked(delivery);
    // The coordinator may be dead by now (the test killed it); writing to its socket is harmless.
    response.writeHead(status, { 'content-type': 'application/json' }).end(status === 200 ? okBody : status === 500 ? '' : refusedBody);
  }

  private countDelivery(delivery: Delivery): void {
    const key = keyOf(delivery.gid, delivery.branchId, delivery.op);
    this.deliveryCounts.set(key, (this.deliveryCounts.get(key) ?? 0) + 1);
    this.gidsSeen.add(delivery.gid);
  }

  private async holdIfAsked(delivery: Delivery): Promise<void> {
    const index = this.holds.findIndex((hold) => hold.predicate(delivery));
    if (index < 0) return;
    const [hold] = this.holds.splice(index, 1);
    hold.arrived(delivery);
    await hold.released;
  }
}

function isUndoOp(op: string): boolean {
  return Object.hasOwn(undoOf, op);
}

/** The payload's `amount`, or 1 when there is none. */
function amountOf(body: string): number {
  if (body.length === 0) return 1;
  const parsed: unknown = JSON.parse(body);
  if (parsed && typeof parsed === 'object' && typeof (parsed as { amount?: unknown }).amount === 'number') {
    return (parsed as { amount: number }).amount;
  }
  return 1;
}

/** Participants with ledgers in one temp dir, stopped and removed when the test ends. */
export async function startLedgerParticipants(t: TestContext, count: number): Promise<LedgerParticipant[]> {
  const dir = tempDir('tandem-ledger-');
  const participants: LedgerParticipant[] = [];
  t.after(async () => {
    await Promise.all(participants.map((participant) => participant.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  for (let index = 0; index < count; index += 1) {
    participants.push(new LedgerParticipant(dir, `participant-${index + 1}`));
  }
  await Promise.all(participants.map((participant) => participant.start()));
  return participants;
}

// Reading ledgers by branch: a test places each branch on a participant and compares counts.

export interface Placed {
  participant: LedgerParticipant;
  branchId: string;
}

/** Effects (or deliveries) per `branchId/op`, read from the participant each branch lives on. */
export type Counts = Record<string, number>;

export function countsOf(branches: Placed[], ops: readonly string[], read: (placed: Placed, op: string) => number): Counts {
  const counts: Counts = {};
  for (const placed of branches) for (const op of ops) counts[`${placed.branchId}/${op}`] = read(placed, op);
  return counts;
}

export function ledgerCounts(gid: string, branches: Placed[], ops: readonly string[]): Counts {
  return countsOf(branches, ops, (placed, op) => placed.participant.effects(gid, placed.branchId, op));
}

export function deliveryCounts(gid: string, branches: Placed[], ops: readonly string[]): Counts {
  return countsOf(branches, ops, (placed, op) => placed.participant.deliveries(gid, placed.branchId, op));
}

/** Expected ledger counts: `applied` ops once on every branch, except where `overrides` say. */
export function expectCounts(branches: Placed[], ops: readonly string[], applied: readonly string[], overrides: Counts = {}): Counts {
  const counts = countsOf(branches, ops, (_, op) => (applied.includes(op) ? 1 : 0));
  return { ...counts, ...overrides };
}

/** The counts of one op only. */
export function onlyOp(counts: Counts, op: string): Counts {
  return Object.fromEntries(Object.entries(counts).filter(([key]) => key.endsWith(`/${op}`)));
}

/** Branches 01, 02, … spread round-robin over the participants. */
export function place(participants: LedgerParticipant[], count: number): Placed[] {
  return Array.from({ length: count }, (_, index) => ({
    participant: participants[index % participants.length],
    branchId: String(index + 1).padStart(2, '0'),
  }));
}
