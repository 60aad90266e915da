// `npm run demo`: the e-commerce run. Options:
//   --orders N        orders to place (default 3000)
//   --concurrency N   orders in flight at once (default 32)
//   --seed N          seeds the catalog, the orders and the injected faults (default 1)
//   --restart NAME    service to SIGKILL and restart mid-run: inventory, payment, order or none
//   --json            print the report as JSON instead of tables
// The exit code is 0 only when every check of the closing report passed.
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { serviceNames, type ServiceName } from './catalog.js';
import { formatReport } from './report.js';
import { runDemo, type DemoProgress } from './run.js';

interface CliOptions {
  orders: number;
  concurrency: number;
  seed: number;
  restartService: ServiceName | null;
  json: boolean;
}

function readOptions(): CliOptions {
  const { values } = parseArgs({
    options: {
      orders: { type: 'string', default: '3000' },
      concurrency: { type: 'string', default: '32' },
      seed: { type: 'string', default: '1' },
      restart: { type: 'string', default: 'payment' },
      json: { type: 'boolean', default: false },
    },
  });
  const restart = values.restart;
  if (restart !== 'none' && !serviceNames.includes(restart as ServiceName)) {
    throw new Error(`--restart must be one of ${serviceNames.join(', ')} or none, got ${restart}`);
  }
  return {
    orders: wholeNumber('--orders', values.orders),
    concurrency: wholeNumber('--concurrency', values.concurrency),
    seed: wholeNumber('--seed', values.seed),
    restartService: restart === 'none' ? null : (restart as ServiceName),
    json: values.json,
  };
}

function wholeNumber(flag: string, text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) throw new Error(`${flag} must be a whole number, got ${JSON.stringify(text)}`);
  return value;
}

/** A bar on a terminal; elsewhere (CI logs) a line every 10% and one per event. */
function progressView(total: number): { update(progress: DemoProgress): void; stop(): void } {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: 'orders [{bar}] {value}/{total} ended | {succeeded} succeeded | {failed} failed | {note}',
        hideCursor: true,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { succeeded: 0, failed: 0, note: '' });
    let lastNote = '';
    return {
      update: (progress) => {
        if (progress.note) lastNote = progress.note;
        bar.update(progress.ended, { succeeded: progress.succeeded, failed: progress.failed, note: lastNote });
      },
      stop: () => bar.stop(),
    };
  }
  let printedTenths = 0;
  return {
    update: (progress) => {
      if (progress.note) process.stderr.write(`  ${progress.note}\n`);
      const tenths = Math.floor((progress.ended * 10) / progress.total);
      if (tenths <= printedTenths) return;
      printedTenths = tenths;
      process.stderr.write(`progress ${tenths * 10}%: ${progress.ended}/${progress.total} ended, ${progress.succeeded} succeeded, ${progress.failed} failed\n`);
    },
    stop: () => undefined,
  };
}

async function main(): Promise<void> {
  const options = readOptions();
  const interrupted = new AbortController();
  const interrupt = () => interrupted.abort();
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  process.stderr.write(`starting the coordinator and the inventory, payment and order services (${options.orders} orders, ${options.concurrency} in flight)\n`);
  const view = progressView(options.orders);
  try {
    const report = await runDemo({ ...options, onProgress: (progress) => view.update(progress), signal: interrupted.signal });
    view.stop();
    process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : `\n${formatReport(report)}\n`);
    process.exitCode = report.passed ? 0 : 1;
  } finally {
    view.stop();
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`\ndemo failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
