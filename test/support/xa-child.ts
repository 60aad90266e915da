// Runs xa-participant-child.js as a child process across several lives on one port, so an
// XA crash test can SIGKILL the participant and start it again. Readiness is the child's
// "listening" line, never a sleep.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { RecoveryCounts } from '../../src/sdk/xa/index.js';
import type { XaNames } from './xa-fixtures.js';

export interface XaChildConfig {
  names: { postgres: XaNames; mariadb: XaNames };
  port: number;
  recoverFrom?: string;
}

/** The child's last line before serving. */
export const readyLinePattern = /xa participant listening on (http:\/\/\S+)/;
/** One per backend when the child ran recovery before listening. */
export const recoveredLinePattern = /^xa recovered (postgres|mariadb) (\{.*\})$/gm;

const childPath = fileURLToPath(new URL('./xa-participant-child.js', import.meta.url));
/** Longest a child may take to listen; a slow 2-core CI box needs seconds. */
const startTimeoutMs = 20_000;

const liveChildren = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of liveChildren) child.kill('SIGKILL');
});

export class XaChildParticipant {
  port = 0;
  url = '';
  /** stderr of every life, for failure messages. */
  stderrText = '';
  /** What the last life's recovery reported, per backend. */
  recovered: Partial<Record<'postgres' | 'mariadb', RecoveryCounts>> = {};
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  constructor(private readonly names: { postgres: XaNames; mariadb: XaNames }) {}

  /** Starts a life (port 0 the first time, then the same port); resolves once it listens. */
  async start(options: { recoverFrom?: string } = {}): Promise<void> {
    if (this.child) throw new Error('the participant child is running already');
    const config: XaChildConfig = { names: this.names, port: this.port, ...(options.recoverFrom ? { recoverFrom: options.recoverFrom } : {}) };
    const child = spawn(process.execPath, [childPath], {
      env: { ...process.env, TANDEM_XA_CHILD: JSON.stringify(config) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    liveChildren.add(child);
    this.child = child;
    this.exited = new Promise((resolve) =>
      child.once('exit', () => {
        liveChildren.delete(child);
        resolve();
      }),
    );
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => (this.stderrText += chunk));
    const stdoutText = await this.readyOutput(child);
    this.url = readyLinePattern.exec(stdoutText)![1];
    this.port = Number(new URL(this.url).port);
    this.recovered = {};
    for (const match of stdoutText.matchAll(recoveredLinePattern)) {
      this.recovered[match[1] as 'postgres' | 'mariadb'] = JSON.parse(match[2]) as RecoveryCounts;
    }
  }

  /** SIGKILL, as `kill -9`; resolves once the process is gone. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child) throw new Error('no participant child is running');
    child.kill('SIGKILL');
    await this.exited;
    this.child = null;
  }

  async dispose(): Promise<void> {
    if (this.child) await this.kill();
  }

  private readyOutput(child: ChildProcess): Promise<string> {
    return new Promise((resolve, reject) => {
      let stdoutText = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the participant child did not listen within ${startTimeoutMs} ms; stderr:\n${this.stderrText}`));
      }, startTimeoutMs);
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', (chunk: string) => {
        stdoutText += chunk;
        if (readyLinePattern.test(stdoutText)) {
          clearTimeout(timer);
          resolve(stdoutText);
        }
      });
      void this.exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`the participant child exited before listening; stderr:\n${this.stderrText}`));
      });
    });
  }
}
