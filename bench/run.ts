// `npm run bench -- NAME [flags]`: runs one benchmark by name. Each benchmark is a module
// exporting `main(args)`; adding one is one line in `benchmarks`.
import { isUsageError } from './support/flags.js';

export interface BenchmarkModule {
  /** Runs the benchmark with the flags that followed its name. */
  main(args: string[]): Promise<void>;
}

const benchmarks: Readonly<Record<string, () => Promise<BenchmarkModule>>> = {
  saga: () => import('./saga.js'),
  stores: () => import('./stores.js'),
  hashing: () => import('./hashing.js'),
  locks: () => import('./locks.js'),
  messages: () => import('./messages.js'),
};

function usage(): string {
  return `usage: npm run bench -- <name> [flags]   (known benchmarks: ${Object.keys(benchmarks).join(', ')}; <name> --help for flags)`;
}

async function runByName(argv: string[]): Promise<void> {
  const [name, ...args] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    console.log(usage());
    if (name === undefined) process.exitCode = 2;
    return;
  }
  const load = Object.hasOwn(benchmarks, name) ? benchmarks[name] : undefined;
  if (!load) {
    console.error(`bench: unknown benchmark "${name}"; known benchmarks: ${Object.keys(benchmarks).join(', ')}`);
    process.exitCode = 2;
    return;
  }
  const benchmark = await load();
  await benchmark.main(args);
}

runByName(process.argv.slice(2)).catch((error: unknown) => {
  if (isUsageError(error)) {
    console.error(`bench: ${error.message}\n${usage()}`);
    process.exitCode = 2;
    return;
  }
  console.error('bench:', error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
