// A real HTTP participant for tests: records every call and answers from a script, so a test
// can make a branch refuse, fail transiently a number of times, or hold its answer until the
// test releases it. Effects are counted per (gid, branchId, op) to check "applied once".
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';

export interface RecordedCall {
  method: string;
  path: string;
  gid: string;
  branchId: string;
  op: string;
  transType: string;
  body: string;
  headers: http.IncomingHttpHeaders;
}

export type Answer = { status: number; body?: string } | 'hang';
/** Decides the answer for a call; return undefined for the default 200 SUCCESS. */
export type Script = (call: RecordedCall, callsSoFar: number) => Answer | undefined | Promise<Answer | undefined>;

export class FakeParticipant {
  readonly calls: RecordedCall[] = [];
  private readonly scripts = new Map<string, Script>();
  private readonly waiters: Array<{ predicate: (call: RecordedCall) => boolean; resolve: (call: RecordedCall) => void }> = [];
  private server!: http.Server;
  url = '';

  async start(): Promise<this> {
    this.server = http.createServer((request, response) => void this.handle(request, response));
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Scripts the answers on one path (e.g. '/pay'). */
  on(path: string, script: Script): this {
    this.scripts.set(path, script);
    return this;
  }

  /** Resolves with the first call (already made or to come) that matches. */
  waitFor(predicate: (call: RecordedCall) => boolean): Promise<RecordedCall> {
    const seen = this.calls.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ predicate, resolve }));
  }

  callsTo(path: string): RecordedCall[] {
    return this.calls.filter((call) => call.path === path);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const url = new URL(request.url ?? '/', 'http://x');
    const call: RecordedCall = {
      method: request.method ?? 'GET',
      path: url.pathname,
      gid: url.searchParams.get('gid') ?? '',
      branchId: url.searchParams.get('branch_id') ?? '',
      op: url.searchParams.get('op') ?? '',
      transType: url.searchParams.get('trans_type') ?? '',
      body: Buffer.concat(chunks).toString('utf8'),
      headers: request.headers,
    };
    const callsSoFar = this.callsTo(call.path).length;
    this.calls.push(call);
    for (const waiter of [...this.waiters]) {
      if (waiter.predicate(call)) {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        waiter.resolve(call);
      }
    }
    const script = this.scripts.get(call.path);
    const answer = (script ? await script(call, callsSoFar) : undefined) ?? { status: 200, body: '{"dtm_result":"SUCCESS"}' };
    if (answer === 'hang') return; // never answered: the coordinator's request timeout fires
    response.writeHead(answer.status, { 'content-type': 'application/json' });
    response.end(answer.body ?? '');
  }
}

export const refuse: Answer = { status: 409, body: '{"dtm_result":"FAILURE"}' };
export const ongoing: Answer = { status: 425, body: '{"dtm_result":"ONGOING"}' };
export const serverError: Answer = { status: 500, body: 'boom' };

/** A participant for one test, stopped when the test ends. */
export async function startParticipant(t: TestContext): Promise<FakeParticipant> {
  const started = await new FakeParticipant().start();
  t.after(() => started.stop());
  return started;
}
