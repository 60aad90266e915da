// Calls branches over HTTP the way DTM does: POST with the payload as body (GET when it is
// absent or empty, except in XA, which always POSTs), gid/trans_type/branch_id/op as query
// parameters and as tandem-* headers. Connections are pooled and kept alive per origin.
import { Agent, request } from 'undici';
import { branchHeaders, branchQuery, classifyAnswer } from '../shared/protocol.js';
import type { BranchCaller, CallContext } from './engine.js';
import type { BranchCall, CallResult, Tx } from './types.js';

export interface HttpCallerOptions {
  /** Keep-alive connections per participant origin. */
  connectionsPerOriginMax: number;
  /** Answer bodies longer than this are cut before being classified and recorded. */
  answerBytesMax: number;
  /** Sent as the tandem-coordinator header, so participants can tell instances apart. */
  instanceId: string;
  /** Resolves branch URLs whose host is a registered service name. */
  resolver?: ServiceResolver;
  /** Instances one call may try when connections to them fail. */
  failoverAttemptsMax: number;
  /** PEM certificates trusted for https branch URLs instead of Node's bundled roots. */
  caCertificates?: string | Buffer;
}

/** What the caller needs of a service registry (ServiceRegistry fits it). */
export interface ServiceResolver {
  has(service: string): boolean;
  pick(service: string, exclude?: ReadonlySet<string>): { instanceId: string; url: string } | undefined;
  report(service: string, instanceId: string, ok: boolean): void;
}

/** The trans_type participants see; DTM's names where DTM has the mode. */
export function transTypeOf(tx: Pick<Tx, 'mode'>): string {
  return tx.mode;
}

export class HttpBranchCaller implements BranchCaller {
  private readonly agent: Agent;

  constructor(private readonly options: HttpCallerOptions) {
    this.agent = new Agent({
      connections: options.connectionsPerOriginMax,
      keepAliveTimeout: 30_000,
      pipelining: 1,
      ...(options.caCertificates !== undefined ? { connect: { ca: options.caCertificates } } : {}),
    });
  }

  async call(tx: Tx, call: BranchCall, context: CallContext = { fence: 0 }): Promise<CallResult> {
    let url: URL;
    try {
      url = new URL(call.url);
    } catch {
      return { branchId: call.branchId, op: call.op, outcome: 'transient', detail: `invalid url ${call.url}` };
    }
    const resolver = this.options.resolver;
    if (resolver && url.port === '' && resolver.has(url.hostname)) return this.callService(tx, call, url, resolver, context);
    return (await this.send(tx, call, url, context)).result;
  }

  /**
   * Calls a registered service: each attempt goes to the next live instance; a connection
   * failure fails over to another at once (every op is idempotent under the barrier), other
   * answers are final for this round. Outcomes feed the registry's outlier ejection.
   */
  private async callService(tx: Tx, call: BranchCall, target: URL, resolver: ServiceResolver, context: CallContext): Promise<CallResult> {
    const service = target.hostname;
    const tried = new Set<string>();
    let last: CallResult = { branchId: call.branchId, op: call.op, outcome: 'transient', detail: `no live instance of service ${service}` };
    for (let attempt = 0; attempt < this.options.failoverAttemptsMax; attempt++) {
      const instance = resolver.pick(service, tried);
      if (!instance) break;
      tried.add(instance.instanceId);
      const url = new URL(`${target.pathname}${target.search}`, instance.url);
      const sent = await this.send(tx, call, url, context);
      resolver.report(service, instance.instanceId, sent.result.outcome !== 'transient');
      last = sent.result;
      if (!sent.connectionFailed) break;
    }
    return last;
  }

  private async send(tx: Tx, call: BranchCall, url: URL, context: CallContext): Promise<{ result: CallResult; connectionFailed: boolean }> {
    const transType = transTypeOf(tx);
    url.searchParams.set(branchQuery.gid, tx.gid);
    url.searchParams.set(branchQuery.transType, transType);
    url.searchParams.set(branchQuery.branchId, call.branchId);
    url.searchParams.set(branchQuery.op, call.op);
    const headers: Record<string, string> = {
      ...tx.options.branchHeaders,
      [branchHeaders.gid]: tx.gid,
      [branchHeaders.transType]: transType,
      [branchHeaders.branchId]: call.branchId,
      [branchHeaders.op]: call.op,
      [branchHeaders.coordinator]: this.options.instanceId,
      [branchHeaders.fence]: String(context.fence),
      ...(context.traceparent !== undefined ? { traceparent: context.traceparent } : {}),
    };
    // As DTM does, on every call (GET included), so participants can parse uniformly.
    headers['content-type'] = 'application/json';
    try {
      const method = methodOf(tx, call);
      const response = await request(url, {
        method,
        headers,
        body: method === 'POST' ? (call.payload ?? '') : undefined,
        dispatcher: this.agent,
        headersTimeout: tx.options.requestTimeoutMs,
        bodyTimeout: tx.options.requestTimeoutMs,
        // headers/body timeouts only bound idle gaps; this bounds the whole exchange, connect included.
        signal: AbortSignal.timeout(tx.options.requestTimeoutMs),
      });
      const body = await readCapped(response.body, this.options.answerBytesMax);
      const outcome = classifyAnswer(response.statusCode, body);
      const result: CallResult = {
        branchId: call.branchId,
        op: call.op,
        outcome,
        ...(outcome === 'success' ? {} : { detail: `HTTP ${response.statusCode}${otherSuccessNote(response.statusCode)} ${body.slice(0, 200)}`.trim() }),
      };
      return { result, connectionFailed: false };
    } catch (error) {
      const result: CallResult = { branchId: call.branchId, op: call.op, outcome: 'transient', detail: describeError(error) };
      return { result, connectionFailed: isConnectionFailure(error) };
    }
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /** Cuts the calls still in flight (their answers are no longer wanted) and closes. */
  async destroy(): Promise<void> {
    await this.agent.destroy();
  }
}

/** Says why a 2xx other than 200 is retried, since that surprises whoever reads lastError. */
function otherSuccessNote(statusCode: number): string {
  return statusCode > 200 && statusCode < 300 ? ' (only 200 counts as success; retried)' : '';
}

/** DTM's rule: a branch with a payload is POSTed, one without (or with an empty one) is a GET, except that XA always POSTs. */
export function methodOf(tx: Pick<Tx, 'mode'>, call: Pick<BranchCall, 'payload'>): 'GET' | 'POST' {
  return (call.payload !== undefined && call.payload !== '') || tx.mode === 'xa' ? 'POST' : 'GET';
}

/** Reads at most `bytesMax` of an answer and drops the rest of it unread. */
async function readCapped(body: AsyncIterable<Buffer> & { destroy(): unknown }, bytesMax: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    chunks.push(chunk.subarray(0, bytesMax - size));
    size += chunk.length;
    if (size >= bytesMax) {
      body.destroy();
      break;
    }
  }
  return Buffer.concat(chunks).toString('utf8');
}

const connectionFailureCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CLOSED']);

function isConnectionFailure(error: unknown): boolean {
  const code = error && typeof error === 'object' ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && connectionFailureCodes.has(code);
}

function describeError(error: unknown): string {
  if (error && typeof error === 'object') {
    const { code, message } = error as { code?: unknown; message?: unknown };
    if (typeof code === 'string') return `${code}${typeof message === 'string' ? `: ${message}` : ''}`;
    if (typeof message === 'string') return message;
  }
  return String(error);
}
