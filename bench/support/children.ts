// Child processes for benchmarks: a server started with `node SCRIPT ARGS`, ready when it
// prints "... listening on URL" on stdout, stopped with SIGTERM (SIGKILL if it lingers).
import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';

export interface ChildServer {
  name: string;
  url: string;
  pid: number;
  stop(): Promise<void>;
}

export interface ChildServerOptions {
  /** A label for messages, and the prefix of the child's forwarded stderr lines. */
  name: string;
  script: string;
  args?: string[];
  /** Flags for node itself, e.g. --cpu-prof. */
  nodeArgs?: string[];
  startTimeoutMs?: number;
  stopTimeoutMs?: number;
}

const listeningLine = /listening on (http:\/\/\S+)/;

export function startChildServer(options: ChildServerOptions): Promise<ChildServer> {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), options.script, ...(options.args ?? [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  readline.createInterface({ input: child.stderr! }).on('line', (line) => process.stderr.write(`[${options.name}] ${line}\n`));
  const startTimeoutMs = options.startTimeoutMs ?? 15_000;
  return new Promise<ChildServer>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${options.name} did not say it was listening within ${startTimeoutMs} ms`));
    }, startTimeoutMs);
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      reject(new Error(`${options.name} exited before listening (code ${code}, signal ${signal})`));
    };
    child.once('exit', onExit);
    const lines = readline.createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const match = listeningLine.exec(line);
      if (!match) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      lines.close();
      child.stdout!.resume();
      resolve({ name: options.name, url: match[1], pid: child.pid!, stop: () => stopChild(child, options.stopTimeoutMs ?? 10_000) });
    });
  });
}

async function stopChild(child: ChildProcess, stopTimeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
  await exited;
  clearTimeout(timer);
}
