// Child processes the demo runs (the coordinator and the three services) and may kill with
// SIGKILL and start again on the same port. Readiness is the child's own "listening on" line.
import { spawn, type ChildProcess } from 'node:child_process';

export interface ChildSpec {
  name: string;
  /** Arguments after `node`, given the port to listen on (0 the first time: any free port). */
  args(port: number): string[];
  env?: NodeJS.ProcessEnv;
  /** Matches the line the child prints once it listens; its first group is the URL. */
  readyLine: RegExp;
}

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Life {
  child: ChildProcess;
  exited: Promise<ChildExit>;
  /** Set before we kill or stop it, so its exit is not reported as a surprise. */
  expectedExit: boolean;
}

/** Longest a child may take to print its ready line on a slow, busy 2-core box. */
const startTimeoutMs = 30_000;
/** After SIGTERM, how long a child gets to exit before SIGKILL. */
const stopTimeoutMs = 5_000;
const outputTailChars = 4_000;

/** One service identity (a name and a port) across any number of process lives. */
export class ManagedChild {
  port = 0;
  url = '';
  private life: Life | null = null;
  private outputText = '';

  constructor(
    private readonly spec: ChildSpec,
    /** Called when a life ends without our asking (a crash we did not cause). */
    private readonly onUnexpectedExit: (child: ManagedChild, exit: ChildExit) => void,
  ) {}

  get name(): string {
    return this.spec.name;
  }

  /** The end of what the child wrote (stdout and stderr), for error messages. */
  get outputTail(): string {
    return this.outputText;
  }

  private keepOutput(chunk: string): void {
    this.outputText = (this.outputText + chunk).slice(-outputTailChars);
  }

  async start(): Promise<void> {
    if (this.life) throw new Error(`${this.name} is running already`);
    const child = spawn(process.execPath, this.spec.args(this.port), { env: this.spec.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const exited = new Promise<ChildExit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    const life: Life = { child, exited, expectedExit: false };
    this.life = life;
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => this.keepOutput(chunk));
    // A failed write to a child that just died is not our error to throw.
    child.stdin?.on('error', () => undefined);
    void exited.then((exit) => {
      if (!life.expectedExit) this.onUnexpectedExit(this, exit);
    });
    this.url = await this.readyUrl(life);
    this.port = Number(new URL(this.url).port);
  }

  /** SIGKILL, as a real crash: no shutdown code runs. Resolves once the process is gone. */
  async crash(): Promise<ChildExit> {
    const life = this.takeLife();
    life.child.kill('SIGKILL');
    return life.exited;
  }

  /** SIGTERM, then SIGKILL if it lingers; safe to call when nothing runs. */
  async stop(): Promise<void> {
    if (!this.life) return;
    const life = this.takeLife();
    life.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const lingering = new Promise<'lingering'>((resolve) => (timer = setTimeout(() => resolve('lingering'), stopTimeoutMs)));
    const outcome = await Promise.race([life.exited, lingering]);
    clearTimeout(timer);
    if (outcome === 'lingering') {
      life.child.kill('SIGKILL');
      await life.exited;
    }
  }

  private takeLife(): Life {
    const life = this.life;
    if (!life) throw new Error(`${this.name} is not running`);
    this.life = null;
    life.expectedExit = true;
    return life;
  }

  private readyUrl(life: Life): Promise<string> {
    const { child, exited } = life;
    return new Promise<string>((resolve, reject) => {
      let stdoutText = '';
      let ready = false;
      const timer = setTimeout(() => {
        reject(new Error(`${this.name} did not print its ready line within ${startTimeoutMs} ms; output:\n${this.outputText}`));
        child.kill('SIGKILL');
      }, startTimeoutMs);
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', (chunk: string) => {
        // Keep reading after the ready line, so a chatty child never blocks on a full pipe.
        this.keepOutput(chunk);
        if (ready) return;
        stdoutText += chunk;
        const match = this.spec.readyLine.exec(stdoutText);
        if (!match) return;
        ready = true;
        clearTimeout(timer);
        resolve(match[1]);
      });
      void exited.then((exit) => {
        clearTimeout(timer);
        if (!ready) reject(new Error(`${this.name} exited (${exit.signal ?? exit.code}) before listening; output:\n${this.outputText}`));
      });
    });
  }
}
