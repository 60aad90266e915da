// OpenTelemetry traces. Every API request is a server span that continues the W3C
// `traceparent` it came with; a transaction keeps its creating request's span context with its
// durable state, so each branch call — whenever it happens, on whichever coordinator, after
// any restart — is a client span of that same trace and hands `traceparent` on to the
// participant. One trace then shows the whole business operation across services.
//
// With no OTLP endpoint configured nothing is recorded or exported, but a `traceparent` that
// arrives is still kept and passed on to branches, so an application's own tracing joins up.
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  defaultTextMapGetter,
  defaultTextMapSetter,
  trace,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { BranchCall, CallResult, Tx } from '../tx/types.js';
import type { BranchCaller, CallContext } from '../tx/engine.js';

export interface TracingOptions {
  /** OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces; absent: nothing is exported. */
  otlpEndpoint?: string;
  serviceName?: string;
  instanceId: string;
}

/** A span in progress, with the `traceparent` that names it. */
export interface OpenSpan {
  /** Null when there is no trace to continue and nothing is recorded. */
  traceparent: string | null;
  end(error?: string): void;
}

const propagator = new W3CTraceContextPropagator();

export class Tracing {
  private readonly provider: BasicTracerProvider | null;
  private readonly tracer: Tracer | null;

  constructor(private readonly options: TracingOptions) {
    if (options.otlpEndpoint === undefined) {
      this.provider = null;
      this.tracer = null;
      return;
    }
    // A provider of our own rather than the global one: several coordinators may share a
    // process (tests, embedding), and an application's own provider stays its own.
    this.provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': options.serviceName ?? 'tandem-coordinator', 'service.instance.id': options.instanceId }),
      spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: options.otlpEndpoint }), { scheduledDelayMillis: 200 })],
    });
    this.tracer = this.provider.getTracer('tandem');
  }

  get recording(): boolean {
    return this.tracer !== null;
  }

  /** The server span of one API request, continuing the `traceparent` it carried. */
  startRequest(method: string, route: string, incomingTraceparent: string | undefined): OpenSpan {
    const parent = contextOf(incomingTraceparent);
    if (!this.tracer) return passThrough(incomingTraceparent, parent);
    const span = this.tracer.startSpan(`${method} ${route}`, { kind: SpanKind.SERVER, attributes: { 'http.request.method': method, 'http.route': route } }, parent);
    return openSpan(span, parent);
  }

  /** The client span of one branch call, a child of the span its transaction was created in. */
  startBranchCall(tx: Tx, call: BranchCall, url: string): OpenSpan {
    const stored = tx.extra?.traceparent;
    const parent = contextOf(stored);
    if (!this.tracer) return passThrough(stored, parent);
    const span = this.tracer.startSpan(
      `${call.op} ${call.branchId}`,
      {
        kind: SpanKind.CLIENT,
        attributes: { 'tandem.gid': tx.gid, 'tandem.mode': tx.mode, 'tandem.branch_id': call.branchId, 'tandem.op': call.op, 'url.full': url },
      },
      parent,
    );
    return openSpan(span, parent);
  }

  async shutdown(): Promise<void> {
    await this.provider?.shutdown();
  }
}

function contextOf(traceparent: string | undefined): Context {
  if (traceparent === undefined) return ROOT_CONTEXT;
  return propagator.extract(ROOT_CONTEXT, { traceparent }, defaultTextMapGetter);
}

function traceparentOf(context: Context): string | null {
  const carrier: Record<string, string> = {};
  propagator.inject(context, carrier, defaultTextMapSetter);
  return carrier.traceparent ?? null;
}

/** Not recording: the incoming context, if valid, is handed on unchanged. */
function passThrough(incoming: string | undefined, parent: Context): OpenSpan {
  const valid = incoming !== undefined && trace.getSpanContext(parent) !== undefined;
  return { traceparent: valid ? traceparentOf(parent) : null, end: () => undefined };
}

function openSpan(span: Span, parent: Context): OpenSpan {
  return {
    traceparent: traceparentOf(trace.setSpan(parent, span)),
    end(error?: string) {
      if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
      span.end();
    },
  };
}

/** Wraps the branch caller: each call is a span, and the participant gets its `traceparent`. */
export class TracingBranchCaller implements BranchCaller {
  constructor(
    private readonly inner: BranchCaller,
    private readonly tracing: Tracing,
  ) {}

  async call(tx: Tx, call: BranchCall, context: CallContext): Promise<CallResult> {
    const span = this.tracing.startBranchCall(tx, call, call.url);
    try {
      const result = await this.inner.call(tx, call, span.traceparent === null ? context : { ...context, traceparent: span.traceparent });
      span.end(result.outcome === 'success' ? undefined : `${result.outcome}${result.detail ? `: ${result.detail}` : ''}`);
      return result;
    } catch (error) {
      span.end(error instanceof Error ? error.message : String(error));
      throw error;
    }
  }
}
