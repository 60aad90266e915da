// Tracing: a trace that starts in the caller runs through the coordinator to both participants
// of a saga as one trace, received by an in-process OTLP/HTTP receiver on 127.0.0.1.
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import fs from 'node:fs';
import { describe, test } from 'node:test';
import { ROOT_CONTEXT, context, propagation, trace, TraceFlags, type Context, type ContextManager } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { serve } from '../src/server/serve.js';
import { TandemClient } from '../src/sdk/client.js';
import { startParticipant } from './support/fake-participant.js';
import { tempDir } from './support/coordinator.js';

interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
}

/** Collects the spans OTLP/HTTP JSON exports post to it, and lets a test await a count. */
class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  private readonly server = http.createServer((incoming, response) => void this.receive(incoming, response));
  private waiters: Array<{ done: () => boolean; resolve: () => void }> = [];

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}/v1/traces`;
  }

  stop(): void {
    this.server.close();
  }

  until(done: () => boolean): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ done, resolve }));
  }

  private async receive(incoming: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of incoming) chunks.push(chunk as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
      resourceSpans?: Array<{ scopeSpans?: Array<{ spans?: Array<{ traceId: string; spanId: string; parentSpanId?: string; name: string }> }> }>;
    };
    for (const resource of body.resourceSpans ?? []) {
      for (const scope of resource.scopeSpans ?? []) {
        for (const span of scope.spans ?? []) this.spans.push({ traceId: span.traceId, spanId: span.spanId, parentSpanId: span.parentSpanId ?? '', name: span.name });
      }
    }
    response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    this.waiters = this.waiters.filter((waiter) => {
      if (!waiter.done()) return true;
      waiter.resolve();
      return false;
    });
  }
}

/** The smallest context manager: enough for a synchronous `context.with` around a call. */
class StackContextManager implements ContextManager {
  private stack: Context[] = [];
  active(): Context {
    return this.stack.at(-1) ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    this.stack.push(ctx);
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.stack.pop();
    }
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.stack = [];
    return this;
  }
}

describe('tracing', () => {
  test('the caller’s trace continues through the coordinator to every branch call, exported over OTLP', async (t) => {
    const receiver = new OtlpReceiver();
    const otlpUrl = await receiver.start();
    t.after(() => receiver.stop());
    const participants = [await startParticipant(t), await startParticipant(t)];
    const dir = tempDir();
    const running = await serve({ host: '127.0.0.1', port: 0, storeUrl: `sqlite:${path.join(dir, 'tandem.db')}`, sqliteSync: 'normal', logLevel: 'silent', otlpTracesUrl: otlpUrl });
    t.after(async () => {
      await running.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    // The application's own tracing: a global propagator and context manager, one active span.
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    context.setGlobalContextManager(new StackContextManager());
    t.after(() => {
      propagation.disable();
      context.disable();
    });
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpanId = '00f067aa0ba902b7';
    const callerContext = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: callerSpanId, traceFlags: TraceFlags.SAMPLED, isRemote: false });
    const client = new TandemClient({ url: running.url });
    const branches = participants.map((participant, index) => ({ branchId: `0${index + 1}`, action: `${participant.url}/act`, compensate: `${participant.url}/undo` }));
    await context.with(callerContext, () => client.call('POST', '/v1/transactions', { gid: 'traced-saga', mode: 'saga', concurrent: true, branches }));
    assert.equal((await client.waitResult('traced-saga', { timeoutMs: 15_000 })).status, 'succeeded');

    const branchCalls = participants.flatMap((participant) => participant.calls.filter((call) => call.path === '/act'));
    assert.equal(branchCalls.length, 2);
    const sentTraceIds = branchCalls.map((call) => String(call.headers.traceparent).split('-')[1]);
    assert.deepEqual(sentTraceIds, [traceId, traceId], 'each participant got the caller’s trace');

    await receiver.until(() => receiver.spans.filter((span) => span.traceId === traceId).length >= 3);
    const spans = receiver.spans.filter((span) => span.traceId === traceId);
    const create = spans.find((span) => span.name === 'POST /v1/transactions');
    assert.ok(create, `a server span for the create request among ${spans.map((span) => span.name).join(', ')}`);
    assert.equal(create.parentSpanId, callerSpanId, 'the create request is a child of the caller’s span');
    const calls = spans.filter((span) => span.name.startsWith('action '));
    assert.equal(calls.length, 2);
    for (const call of calls) assert.equal(call.parentSpanId, create.spanId, 'branch calls are children of the create request');
    const sentParents = branchCalls.map((call) => String(call.headers.traceparent).split('-')[2]).sort();
    assert.deepEqual(sentParents, calls.map((call) => call.spanId).sort(), 'each participant’s parent is its own branch-call span');
  });

  test('with no OTLP endpoint, nothing is exported but an incoming traceparent still reaches the branches', async (t) => {
    const participant = await startParticipant(t);
    const dir = tempDir();
    const running = await serve({ host: '127.0.0.1', port: 0, storeUrl: `sqlite:${path.join(dir, 'tandem.db')}`, sqliteSync: 'normal', logLevel: 'silent' });
    t.after(async () => {
      await running.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const response = await fetch(`${running.url}/v1/transactions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent },
      body: JSON.stringify({ gid: 'untraced-saga', mode: 'saga', branches: [{ branchId: '01', action: `${participant.url}/act`, compensate: `${participant.url}/undo` }] }),
    });
    assert.equal(response.status, 201);
    const client = new TandemClient({ url: running.url });
    assert.equal((await client.waitResult('untraced-saga', { timeoutMs: 15_000 })).status, 'succeeded');
    assert.equal(participant.calls.find((call) => call.path === '/act')?.headers.traceparent, traceparent);
  });
});
