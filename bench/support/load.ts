// A closed-loop load generator: `concurrency` clients each run one operation after another
// until the measuring window closes. Operations that complete during the warm-up are not
// recorded; an operation counts when it completes inside the window, so throughput is
// completions per second of window and latency is that of the counted operations.
import { performance } from 'node:perf_hooks';

export type Outcome = { ok: true } | { ok: false; reason: string };

export interface LoadOptions {
  concurrency: number;
  warmupMs: number;
  measureMs: number;
  /** Called when the window opens and when it closes (e.g. to snapshot counters); awaited. */
  onWindow?: (edge: 'open' | 'close') => Promise<void> | void;
}

export interface LoadResult {
  completed: number;
  failed: number;
  windowMs: number;
  /** Latency of each completed operation in the window, in completion order. */
  latenciesMs: number[];
  /** A few distinct failure reasons, for the report. */
  failureReasons: string[];
}

const failureReasonsMax = 5;

export async function runClosedLoop(operation: () => Promise<Outcome>, options: LoadOptions): Promise<LoadResult> {
  const startMs = performance.now();
  const windowOpenMs = startMs + options.warmupMs;
  const windowCloseMs = windowOpenMs + options.measureMs;
  const result: LoadResult = { completed: 0, failed: 0, windowMs: options.measureMs, latenciesMs: [], failureReasons: [] };
  const edges = scheduleEdges(windowOpenMs - startMs, windowCloseMs - startMs, options.onWindow);

  const client = async () => {
    while (performance.now() < windowCloseMs) {
      const beganMs = performance.now();
      const outcome = await operation().catch((error: unknown): Outcome => ({ ok: false, reason: describe(error) }));
      const endedMs = performance.now();
      if (endedMs < windowOpenMs || endedMs > windowCloseMs) continue;
      if (outcome.ok) {
        result.completed++;
        result.latenciesMs.push(endedMs - beganMs);
      } else {
        result.failed++;
        if (result.failureReasons.length < failureReasonsMax && !result.failureReasons.includes(outcome.reason)) {
          result.failureReasons.push(outcome.reason);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, client));
  await edges;
  return result;
}

/** Runs the window callbacks at their moments; the load goes on while they run. */
function scheduleEdges(openAfterMs: number, closeAfterMs: number, onWindow: LoadOptions['onWindow']): Promise<void> {
  if (!onWindow) return Promise.resolve();
  const at = (delayMs: number, edge: 'open' | 'close') =>
    new Promise<void>((resolve, reject) => setTimeout(() => Promise.resolve(onWindow(edge)).then(resolve, reject), delayMs));
  return Promise.all([at(openAfterMs, 'open'), at(closeAfterMs, 'close')]).then(() => undefined);
}

function describe(error: unknown): string {
  if (error && typeof error === 'object') {
    const { code, message } = error as { code?: unknown; message?: unknown };
    if (typeof code === 'string') return `${code}${typeof message === 'string' ? `: ${message}` : ''}`;
    if (typeof message === 'string') return message;
  }
  return String(error);
}
