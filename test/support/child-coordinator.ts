// Runs the real `tandem serve` CLI as a child process on one SQLite file, so a crash test can
// kill it with SIGKILL (from outside, or through a failpoint from inside) and start it again
// on the same port and file. Readiness is the CLI's "tandem listening on" line, never a sleep.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { Agent } from 'undici';
import { TandemClient } from '../../src/sdk/client.js';
import { tempDir } from './coordinator.js';

const cliPath = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const readyLine = /tandem listening on (http:\/\/\S+)/;
/** Longest a child may take to print its ready line; a slow 2-core CI box needs seconds. */
const startTimeoutMs = 20_000;
/** pino's number for the error level. */
const errorLevel = 50;

/** Children alive now; killed if the test process exits without its t.after hooks running. */
const liveChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartOptions {
  /** TANDEM_FAILPOINTS for this run only, e.g. 'after-persist:submitted/commit'. */
  failpoints?: string;
}

export interface IdentityOptions {
  /** A shared store (postgres://…, redis://…); by default a SQLite file of this identity's own. */
  storeUrl?: string;
  instanceId?: string;
  /** Extra TANDEM_* settings for every life. */
  env?: Record<string, string>;
}

interface Running {
  child: ChildProcess;
  exited: Promise<ChildExit>;
  agent: Agent;
}

/**
 * One coordinator identity (a port and a database file) across any number of process lives.
 * `client` always talks to the current life, over a connection pool of its own.
 */
export class ChildCoordinator {
  readonly dbPath: string;
  port = 0;
  url = '';
  client!: TandemClient;
  /** Everything the children wrote to stderr, for failure messages and failpoint checks. */
  stderrText = '';
  /** The children's log lines (pino writes JSON to stdout), ready line included. */
  logText = '';
  private running: Running | null = null;
  private logWaiters: Array<{ pattern: RegExp; from: number; resolve: () => void }> = [];
  private readonly dir: string;

  constructor(private readonly identity: IdentityOptions = {}) {
    this.dir = tempDir('tandem-crash-');
    this.dbPath = path.join(this.dir, 'coordinator.db');
  }

  get pid(): number | undefined {
    return this.running?.child.pid;
  }

  /** Starts a life (port 0 the first time, then the same port) and resolves once it listens. */
  async start(options: StartOptions = {}): Promise<void> {
    if (this.running) throw new Error('the child coordinator is running already');
    const store = this.identity.storeUrl ?? `sqlite:${this.dbPath}`;
    const instance = this.identity.instanceId ? ['--instance-id', this.identity.instanceId] : [];
    const child = spawn(process.execPath, [cliPath, 'serve', '--host', '127.0.0.1', '--port', String(this.port), '--store', store, '--sqlite-sync', 'full', '--log-level', 'warn', ...instance], {
      env: { ...childEnv(options), ...this.identity.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    liveChildren.add(child);
    const exited = new Promise<ChildExit>((resolve) =>
      child.once('exit', (code, signal) => {
        liveChildren.delete(child);
        resolve({ code, signal });
      }),
    );
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => (this.stderrText += chunk));
    const agent = new Agent({ keepAliveTimeout: 10_000 });
    this.running = { child, exited, agent };
    const url = await this.readyUrl(child, exited);
    this.url = url;
    this.port = Number(new URL(url).port);
    this.client = new TandemClient({ url, dispatcher: agent, requestTimeoutMs: 30_000 });
  }

  /** SIGKILL, exactly as `kill -9`; resolves once the process is gone. */
  async kill(): Promise<ChildExit> {
    const running = this.running;
    if (!running) throw new Error('no child coordinator is running');
    if (running.child.exitCode === null && running.child.signalCode === null) running.child.kill('SIGKILL');
    return this.reap();
  }

  /** SIGTERM, as a service manager stops it; resolves once the process is gone (however long it drains). */
  async terminate(): Promise<ChildExit> {
    const running = this.running;
    if (!running) throw new Error('no child coordinator is running');
    running.child.kill('SIGTERM');
    return this.reap();
  }

  /**
   * Resolves once the children's stdout (log lines and the CLI's own lines) matches `pattern`
   * from character `from` on (pass `logText.length` to ignore earlier lives).
   */
  logMatches(pattern: RegExp, from = 0): Promise<void> {
    if (pattern.test(this.logText.slice(from))) return Promise.resolve();
    return new Promise<void>((resolve) => this.logWaiters.push({ pattern, from, resolve }));
  }

  /** Waits for the current life to end on its own (a failpoint) and clears it. */
  async waitForExit(): Promise<ChildExit> {
    if (!this.running) throw new Error('no child coordinator is running');
    return this.reap();
  }

  /** Log entries at error level or above from every life so far. */
  errorLogs(): string[] {
    return this.logText.split('\n').filter((line) => {
      if (!line.startsWith('{')) return false;
      try {
        const entry = JSON.parse(line) as { level?: unknown };
        return typeof entry.level === 'number' && entry.level >= errorLevel;
      } catch {
        return false; // a line the kill cut short
      }
    });
  }

  /**
   * What the database file says about a transaction while no life is running: the state a
   * restart will resume from. The connection is read-only so it cannot checkpoint the WAL
   * the crash left behind; recovering from that is the next life's job.
   */
  durableState(gid: string): { status: string; phase: string } | null {
    if (this.running) throw new Error('read the durable state only while the coordinator is down');
    const db = new Database(this.dbPath, { readonly: true });
    try {
      const row = db.prepare('SELECT body FROM transactions WHERE gid = ?').get(gid) as { body: string } | undefined;
      if (!row) return null;
      const { status, phase } = JSON.parse(row.body) as { status: string; phase: string };
      return { status, phase };
    } finally {
      db.close();
    }
  }

  async restart(options: StartOptions = {}): Promise<void> {
    if (this.running) await this.kill();
    await this.start(options);
  }

  /** Kills whatever life is left and removes the database; safe to call twice. */
  async dispose(): Promise<void> {
    if (this.running) await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private async reap(): Promise<ChildExit> {
    const running = this.running;
    if (!running) throw new Error('no child coordinator is running');
    const exit = await running.exited;
    this.running = null;
    // Its sockets died with the process; a fresh pool per life avoids reusing them.
    await running.agent.destroy();
    return exit;
  }

  private wakeLogWaiters(): void {
    const waiting = this.logWaiters;
    this.logWaiters = waiting.filter((waiter) => !waiter.pattern.test(this.logText.slice(waiter.from)));
    for (const waiter of waiting) if (!this.logWaiters.includes(waiter)) waiter.resolve();
  }

  private readyUrl(child: ChildProcess, exited: Promise<ChildExit>): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      let stdoutText = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the child coordinator did not print its ready line within ${startTimeoutMs} ms; stderr:\n${this.stderrText}`));
      }, startTimeoutMs);
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', (chunk: string) => {
        this.logText += chunk;
        this.wakeLogWaiters();
        stdoutText += chunk;
        const match = readyLine.exec(stdoutText);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      void exited.then((exit) => {
        clearTimeout(timer);
        reject(new Error(`the child coordinator exited (${exit.signal ?? exit.code}) before listening; stderr:\n${this.stderrText}`));
      });
    });
  }
}

function childEnv(options: StartOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, TANDEM_RECOVERY_INTERVAL_MS: '100' };
  // Never inherit failpoints from the test runner's environment: each life arms its own.
  delete env.TANDEM_FAILPOINTS;
  if (options.failpoints) env.TANDEM_FAILPOINTS = options.failpoints;
  return env;
}

/** A child coordinator that is started now and always killed when the test ends. */
export async function startChildCoordinator(t: TestContext, options: StartOptions = {}, identity: IdentityOptions = {}): Promise<ChildCoordinator> {
  const coordinator = new ChildCoordinator(identity);
  t.after(() => coordinator.dispose());
  await coordinator.start(options);
  return coordinator;
}

const connectionErrorCodes = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_DESTROYED']);

/** True for the errors a client sees when the coordinator dies under its request. */
export function isConnectionError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code, cause } = error as { code?: unknown; cause?: unknown };
  if (typeof code === 'string' && connectionErrorCodes.has(code)) return true;
  return cause !== undefined && cause !== error && isConnectionError(cause);
}
