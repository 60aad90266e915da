// A minimal participant for benchmarks, run as its own process so it does not share an event
// loop with the load generator or the coordinator. It answers 200 {"dtm_result":"SUCCESS"} on
// the branch paths and on /submit (the baseline's stand-in for a coordinator), and counts the
// calls per path so the bench can check that every saga called what it should have.
// Prints "<role> listening on URL" on stdout when ready; exits on SIGTERM.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export const answeredPaths = ['/submit', '/action1', '/action2', '/compensate1', '/compensate2'] as const;
export type CallCounts = Record<(typeof answeredPaths)[number], number>;

const successBody = Buffer.from(JSON.stringify({ dtm_result: 'SUCCESS' }));
const answered = new Set<string>(answeredPaths);

function startServer(role: string): void {
  const counts = Object.fromEntries(answeredPaths.map((path) => [path, 0])) as CallCounts;
  const server = http.createServer((request, response) => {
    const path = pathOf(request.url ?? '/');
    // The body is read to its end, as a real participant would, before answering.
    request.on('data', () => undefined);
    request.on('end', () => {
      if (answered.has(path)) {
        counts[path as keyof CallCounts]++;
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': successBody.length });
        response.end(successBody);
      } else if (path === '/stats' && request.method === 'GET') {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify(counts));
      } else {
        response.writeHead(404, { 'content-type': 'text/plain' });
        response.end(`no route for ${path}`);
      }
    });
  });
  // Longer than any pause between bench phases, so connections are reused, not re-opened.
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 125_000;
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as AddressInfo;
    process.stdout.write(`${role} listening on http://127.0.0.1:${port}\n`);
  });
  process.once('SIGTERM', () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}

function pathOf(url: string): string {
  const queryAt = url.indexOf('?');
  return queryAt === -1 ? url : url.slice(0, queryAt);
}

startServer(process.argv[2] ?? 'participant');
