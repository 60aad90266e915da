#!/usr/bin/env node
// The `tandem` command: `serve` runs the coordinator; `tx list` and `tx show` read one; `wf`
// lists, shows, signals, cancels and resumes durable workflows.
import { Command, InvalidArgumentError, Option } from 'commander';
import { serve } from '../server/serve.js';
import { TandemClient, TandemApiError } from '../sdk/client.js';
import type { TxStatus, TxMode, TxView, TxSummaryView } from '../shared/views.js';
import { newToken, roles, tokenEntryLine, type Role } from '../server/auth.js';
import { WorkflowClient, type WorkflowView } from '../sdk/workflow.js';

const defaultUrl = 'http://127.0.0.1:8636';

function portNumber(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError('must be a port number from 0 to 65535');
  return port;
}

const program = new Command();
program.name('tandem').description('Data consistency for TypeScript microservices: the Tandem coordinator and its tools');

program
  .command('serve')
  .description('run the coordinator')
  .addOption(new Option('--host <host>', 'address to listen on').env('TANDEM_HOST').default('127.0.0.1'))
  .addOption(new Option('--port <port>', 'port to listen on').env('TANDEM_PORT').default(8636).argParser(portNumber))
  .addOption(new Option('--store <url>', 'where state lives: sqlite:PATH, postgres://… or redis://…').env('TANDEM_STORE').default('sqlite:./.tandem/tandem.db'))
  .addOption(new Option('--sqlite-sync <mode>', 'full: fsync each group commit (survives power loss); normal: survives a process crash').env('TANDEM_SQLITE_SYNC').choices(['full', 'normal']).default('full'))
  .addOption(new Option('--instance-id <id>', 'name of this coordinator in leases and heartbeats (default: "local" on sqlite, unique per process otherwise)').env('TANDEM_INSTANCE_ID'))
  .addOption(new Option('--rabbitmq-url <url>', 'amqp:// URL: lets message steps publish to rabbitmq:<exchange>/<routingKey>').env('TANDEM_RABBITMQ_URL'))
  .addOption(new Option('--jetstream-url <url>', 'nats:// URL of a JetStream server: lets message steps publish to jetstream:<subject>').env('TANDEM_JETSTREAM_URL'))
  .addOption(new Option('--log-level <level>', 'pino log level').env('TANDEM_LOG_LEVEL').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
  .addOption(new Option('--tokens-file <path>', 'API tokens, one "<name> <role> sha256:<hex>" per line (see `tandem token create`); required off loopback').env('TANDEM_TOKENS_FILE'))
  .addOption(new Option('--tls-cert <path>', 'PEM certificate: serve the API over HTTPS (with --tls-key)').env('TANDEM_TLS_CERT'))
  .addOption(new Option('--tls-key <path>', 'PEM private key for --tls-cert').env('TANDEM_TLS_KEY'))
  .addOption(new Option('--otlp-traces-url <url>', 'OTLP/HTTP endpoint to export traces to, e.g. http://127.0.0.1:4318/v1/traces (default: none exported)').env('TANDEM_OTLP_TRACES_URL'))
  .addOption(new Option('--audit-log <path>', 'append-only JSON-lines file of operator actions (force-stop, retry-now); default: kept in memory only').env('TANDEM_AUDIT_LOG'))
  .addOption(new Option('--branch-ca <path>', 'PEM certificate authorities trusted for https branch URLs (default: Node\'s bundled roots)').env('TANDEM_BRANCH_CA'))
  .action(async (options: { host: string; port: number; store: string; sqliteSync: 'full' | 'normal'; logLevel: string; instanceId?: string; rabbitmqUrl?: string; jetstreamUrl?: string; tokensFile?: string; tlsCert?: string; tlsKey?: string; branchCa?: string; otlpTracesUrl?: string; auditLog?: string }) => {
    const coordinator = await serve({
      host: options.host,
      port: options.port,
      storeUrl: options.store,
      sqliteSync: options.sqliteSync,
      logLevel: options.logLevel,
      ...(options.instanceId ? { instanceId: options.instanceId } : {}),
      ...(options.rabbitmqUrl ? { rabbitmqUrl: options.rabbitmqUrl } : {}),
      ...(options.jetstreamUrl ? { jetstreamUrl: options.jetstreamUrl } : {}),
      ...(options.tokensFile ? { tokensFile: options.tokensFile } : {}),
      ...(process.env.TANDEM_TOKENS ? { tokens: process.env.TANDEM_TOKENS } : {}),
      ...(options.tlsCert ? { tlsCertFile: options.tlsCert } : {}),
      ...(options.tlsKey ? { tlsKeyFile: options.tlsKey } : {}),
      ...(options.branchCa ? { branchCaFile: options.branchCa } : {}),
      ...(options.otlpTracesUrl ? { otlpTracesUrl: options.otlpTracesUrl } : {}),
      ...(options.auditLog ? { auditLogPath: options.auditLog } : {}),
    });
    const shutdown = () => {
      // Said whatever the log level, like the ready line: the drain can take up to shutdownDrainMs.
      process.stdout.write('tandem stopping: no new work; draining rounds in flight\n');
      void coordinator.close().then(() => process.exit(0));
    };
    // Before the ready line: a supervisor may signal the moment it reads it, and a signal that
    // came before the handler would kill the process without its drain.
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
    // A line tests and scripts can wait for, on stdout whatever the log level.
    process.stdout.write(`tandem listening on ${coordinator.url} store=${options.store}\n`);
  });

program
  .command('token')
  .description('API tokens')
  .command('create')
  .description('make a token: prints it once, and the line to add to the tokens file (which keeps only its hash)')
  .requiredOption('--name <name>', 'who or what uses it (no spaces or commas)')
  .addOption(new Option('--role <role>', 'read: look; client: also run transactions, locks, key-value, registry; admin: also force-stop').choices([...roles]).default('client'))
  .action((options: { name: string; role: Role }) => {
    if (/[\s,]/.test(options.name)) throw new InvalidArgumentError('--name must have no spaces or commas');
    const token = newToken();
    console.log(`token (give it to the client; it is not stored anywhere): ${token}`);
    console.log(`tokens-file line: ${tokenEntryLine(options.name, options.role, token)}`);
  });

const tx = program.command('tx').description('inspect transactions on a running coordinator');
const urlOption = () => new Option('--url <url>', 'coordinator URL').env('TANDEM_URL').default(defaultUrl);
const tokenOption = () => new Option('--token <token>', 'API token, when the coordinator needs one').env('TANDEM_TOKEN');

tx.command('list')
  .description('list transactions, newest first')
  .addOption(urlOption())
  .addOption(tokenOption())
  .addOption(new Option('--status <status>', 'only this status').choices(['prepared', 'submitted', 'aborting', 'succeeded', 'failed']))
  .addOption(new Option('--mode <mode>', 'only this mode').choices(['saga', 'tcc', '2pc', '3pc', 'xa', 'msg']))
  .option('--limit <n>', 'rows per page', (value) => Number(value), 20)
  .option('--cursor <cursor>', 'continue from a previous page')
  .option('--json', 'print JSON')
  .action(async (options: { url: string; token?: string; status?: TxStatus; mode?: TxMode; limit: number; cursor?: string; json?: boolean }) => {
    const client = new TandemClient({ url: options.url, token: options.token });
    const page = await client.list({ status: options.status, mode: options.mode, limit: options.limit, cursor: options.cursor });
    if (options.json) {
      console.log(JSON.stringify(page, null, 2));
      return;
    }
    console.log(formatList(page.items));
    if (page.nextCursor) console.log(`\nmore: tandem tx list --cursor ${page.nextCursor}`);
  });

tx.command('show <gid>')
  .description('show one transaction with its branches and history')
  .addOption(urlOption())
  .addOption(tokenOption())
  .option('--json', 'print JSON')
  .action(async (gid: string, options: { url: string; token?: string; json?: boolean }) => {
    const client = new TandemClient({ url: options.url, token: options.token });
    const view = await client.get(gid);
    console.log(options.json ? JSON.stringify(view, null, 2) : formatTx(view));
  });

tx.command('force-stop <gid>')
  .description('end an unfinished transaction as failed at once, calling no branch again (settle the branches by hand)')
  .addOption(urlOption())
  .addOption(tokenOption())
  .requiredOption('--reason <text>', 'why: kept as the transaction\'s reason and in the audit log')
  .option('--compensate', 'roll it back the way its mode does instead, where it still can')
  .action(async (gid: string, options: { url: string; token?: string; reason: string; compensate?: boolean }) => {
    const client = new TandemClient({ url: options.url, token: options.token });
    console.log(formatTx(await client.forceStop(gid, options.reason, { compensate: options.compensate === true })));
  });

tx.command('retry-now <gid>')
  .description('retry the pending calls of an unfinished transaction now, with its backoff reset')
  .addOption(urlOption())
  .addOption(tokenOption())
  .action(async (gid: string, options: { url: string; token?: string }) => {
    const client = new TandemClient({ url: options.url, token: options.token });
    console.log(formatTx(await client.retryNow(gid)));
  });

const services = program.command('services').description('the service registry of a running coordinator');

services
  .command('list')
  .description('live instances of every registered service')
  .addOption(urlOption())
  .addOption(tokenOption())
  .option('--json', 'print JSON')
  .action(async (options: { url: string; token?: string; json?: boolean }) => {
    const client = new TandemClient({ url: options.url, token: options.token });
    const answer = await client.call<{ services: Record<string, Array<{ instanceId: string; url: string; weight: number; expiresAtMs: number }>> }>('GET', '/v1/services');
    if (options.json) {
      console.log(JSON.stringify(answer, null, 2));
      return;
    }
    const rows = [['SERVICE', 'INSTANCE', 'URL', 'WEIGHT', 'EXPIRES']];
    for (const [name, instances] of Object.entries(answer.services)) {
      for (const instance of instances) rows.push([name, instance.instanceId, instance.url, String(instance.weight), new Date(instance.expiresAtMs).toISOString()]);
    }
    console.log(rows.length === 1 ? 'no live services' : table(rows));
  });

const wf = program.command('wf').description('durable workflows on a running coordinator (docs/workflows.md)');
const wfClient = (options: { url: string; token?: string }) => new WorkflowClient({ url: options.url, ...(options.token ? { token: options.token } : {}) });

wf.command('list')
  .description('list workflows, newest first')
  .addOption(urlOption())
  .addOption(tokenOption())
  .addOption(new Option('--status <status>', 'only this status').choices(['prepared', 'aborting', 'succeeded', 'failed']))
  .option('--limit <n>', 'rows per page', (value) => Number(value), 20)
  .option('--cursor <cursor>', 'continue from a previous page')
  .option('--json', 'print JSON')
  .action(async (options: { url: string; token?: string; status?: string; limit: number; cursor?: string; json?: boolean }) => {
    const query = new URLSearchParams({ limit: String(options.limit), ...(options.status ? { status: options.status } : {}), ...(options.cursor ? { cursor: options.cursor } : {}) });
    const page = await wfClient(options).call<{ items: Array<{ workflowId: string; status: string; phase: string; stepCount: number; createdAtMs: number }>; nextCursor: string | null }>('GET', `/v1/workflows?${query}`, undefined);
    if (options.json) {
      console.log(JSON.stringify(page, null, 2));
      return;
    }
    const rows = [['WORKFLOW', 'STATUS', 'PHASE', 'STEPS', 'CREATED'], ...page.items.map((item) => [item.workflowId, item.status, item.phase, String(item.stepCount), new Date(item.createdAtMs).toISOString()])];
    console.log(page.items.length === 0 ? 'no workflows' : table(rows));
    if (page.nextCursor) console.log(`\nmore: tandem wf list --cursor ${page.nextCursor}`);
  });

wf.command('show <id>')
  .description('show one workflow with every step, its attempts and timings')
  .addOption(urlOption())
  .addOption(tokenOption())
  .option('--json', 'print JSON')
  .action(async (id: string, options: { url: string; token?: string; json?: boolean }) => {
    const view = await wfClient(options).get(id);
    console.log(options.json ? JSON.stringify(view, null, 2) : formatWorkflow(view));
  });

wf.command('signal <id> <name> [value]')
  .description('send a signal; value is JSON (default null)')
  .addOption(urlOption())
  .addOption(tokenOption())
  .action(async (id: string, name: string, value: string | undefined, options: { url: string; token?: string }) => {
    let parsed: unknown = null;
    if (value !== undefined) {
      try {
        parsed = JSON.parse(value) as unknown;
      } catch {
        throw new InvalidArgumentError('value must be JSON, e.g. true, 42 or \'"text"\'');
      }
    }
    const { delivered } = await wfClient(options).signal(id, name, parsed);
    console.log(`signal ${name} ${delivered}`);
  });

wf.command('cancel <id>')
  .description('cancel a workflow: it fails, compensating what it did')
  .addOption(urlOption())
  .addOption(tokenOption())
  .option('--reason <reason>', 'why', 'cancelled from the command line')
  .action(async (id: string, options: { url: string; token?: string; reason: string }) => {
    const view = await wfClient(options).cancel(id, options.reason);
    console.log(`workflow ${view.workflowId}: cancel requested (${view.status}/${view.phase})`);
  });

wf.command('resume <id>')
  .description('resume a workflow blocked by a non-deterministic replay, after deploying code that replays its record')
  .addOption(urlOption())
  .addOption(tokenOption())
  .action(async (id: string, options: { url: string; token?: string }) => {
    const view = await wfClient(options).resume(id);
    console.log(`workflow ${view.workflowId}: ${view.status}/${view.phase}`);
  });

function formatWorkflow(view: WorkflowView): string {
  const at = (ms: number | undefined) => (ms === undefined ? '' : new Date(ms).toISOString());
  const lines = [
    `workflow ${view.workflowId} (${view.name})`,
    `status   ${view.status} (${view.phase})${view.reason ? ` — ${view.reason}` : ''}`,
    `lease    ${view.lease ? `${view.lease.worker} until ${at(view.lease.untilMs)}` : 'none'}`,
    `created  ${at(view.createdAtMs)}`,
    `updated  ${at(view.updatedAtMs)}`,
    '',
  ];
  const rows = [['#', 'STEP', 'OP', 'STATUS', 'ATTEMPTS', 'STARTED', 'MS', 'LAST ERROR']];
  for (const step of view.steps) {
    for (const [op, state] of Object.entries({ action: step.action, ...(step.compensate ? { compensate: step.compensate } : {}) })) {
      rows.push([String(step.index), step.name, op, state.status, String(state.attempts), at(state.startedAtMs), state.durationMs === undefined ? '' : String(Math.round(state.durationMs)), state.lastError ?? '']);
    }
  }
  lines.push(view.steps.length === 0 ? 'no steps yet' : table(rows));
  return lines.join('\n');
}

function formatList(items: TxSummaryView[]): string {
  if (items.length === 0) return 'no transactions';
  const rows = [['GID', 'MODE', 'STATUS', 'PHASE', 'BRANCHES', 'CREATED'], ...items.map((item) => [item.gid, item.mode, item.status, item.phase, String(item.branchCount), item.createdAt])];
  return table(rows);
}

function formatTx(view: TxView): string {
  const lines = [
    `gid      ${view.gid}`,
    `mode     ${view.mode}`,
    `status   ${view.status} (${view.phase})${view.reason ? ` — ${view.reason}` : ''}`,
    `created  ${view.createdAt}`,
    `updated  ${view.updatedAt}`,
    // Names only: the coordinator never hands out header values.
    ...(view.options.branchHeaderNames.length > 0 ? [`headers  ${view.options.branchHeaderNames.join(', ')}`] : []),
    '',
  ];
  const branchRows = [['BRANCH', 'OP', 'STATUS', 'ATTEMPTS', 'URL', 'LAST ERROR']];
  for (const branch of view.branches) {
    for (const [op, state] of Object.entries(branch.ops)) {
      branchRows.push([branch.branchId, op, state.status, String(state.attempts), state.url, state.lastError ?? '']);
    }
  }
  lines.push(table(branchRows), '', 'history');
  for (const entry of view.history ?? []) lines.push(`  ${entry.at}  ${entry.status}/${entry.phase}${entry.reason ? `  ${entry.reason}` : ''}`);
  return lines.join('\n');
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd()).join('\n');
}

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof TandemApiError) {
    console.error(`tandem: ${error.message}`);
  } else if (error instanceof Error) {
    console.error(`tandem: ${error.message}`);
  } else {
    console.error('tandem:', error);
  }
  process.exit(1);
});
