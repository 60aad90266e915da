// The web console at /ui: a page that loads the console's ES modules (compiled by the
// project's own tsc build into dist/src/console) and Preact and htm from node_modules, mapped
// to bare names by an import map. No bundler: what tsc emits is what the browser runs.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { notFound } from './problem.js';
// tsc copies no .css files: the style sheet is a string in a module of its own.
import { consoleCss } from '../console/styles.js';

/** The browser-side modules: dist/src/console next to this file's dist/src/server. */
const consoleDir = fileURLToPath(new URL('../console/', import.meta.url));

/** Third-party modules by the bare name the console imports, served under /ui/vendor/. */
const vendor: Readonly<Record<string, { file: string; specifier: string }>> = {
  'preact.js': { specifier: 'preact', file: fileURLToPath(import.meta.resolve('preact')) },
  'preact-hooks.js': { specifier: 'preact/hooks', file: fileURLToPath(import.meta.resolve('preact/hooks')) },
  'htm.js': { specifier: 'htm', file: fileURLToPath(import.meta.resolve('htm')) },
};

/** Console module names: flat, so a request can never name a file outside consoleDir. */
const moduleName = /^[a-z][a-z0-9-]*\.js(\.map)?$/;

export function consolePage(): { html: string; csp: string } {
  const importMap = JSON.stringify({ imports: Object.fromEntries(Object.entries(vendor).map(([name, entry]) => [entry.specifier, `/ui/vendor/${name}`])) });
  const importMapHash = createHash('sha256').update(importMap).digest('base64');
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tandem console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/app/console.css">
<script type="importmap">${importMap}</script>
<script type="module" src="/ui/app/main.js"></script>
</head>
<body><div id="app">Loading the Tandem console…</div></body>
</html>
`;
  // Scripts only from here and the one inline import map; Preact sets style attributes.
  const csp = `default-src 'self'; script-src 'self' 'sha256-${importMapHash}'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`;
  return { html, csp };
}

export function registerConsoleRoutes(app: FastifyInstance): void {
  const page = consolePage();
  const cache = new Map<string, Buffer>();
  const sendFile = (reply: FastifyReply, file: string, type: string) => {
    let body = cache.get(file);
    if (!body) {
      // The files are part of the installed build and do not change while it runs.
      body = fs.readFileSync(file);
      cache.set(file, body);
    }
    return reply.type(type).header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff').send(body);
  };
  app.get('/ui', async (_request, reply) => reply.redirect('/ui/'));
  app.get('/ui/', async (_request, reply) =>
    reply.type('text/html; charset=utf-8').header('content-security-policy', page.csp).header('cache-control', 'no-cache').send(page.html),
  );
  app.get<{ Params: { name: string } }>('/ui/app/:name', async (request, reply) => {
    const { name } = request.params;
    if (name === 'console.css') return reply.type('text/css; charset=utf-8').header('cache-control', 'no-cache').send(consoleCss);
    if (!moduleName.test(name) || !fs.existsSync(path.join(consoleDir, name))) throw notFound(`no console module ${name}`);
    // Source maps too, so the browser's developer tools show the TypeScript.
    return sendFile(reply, path.join(consoleDir, name), name.endsWith('.map') ? 'application/json; charset=utf-8' : 'text/javascript; charset=utf-8');
  });
  app.get<{ Params: { name: string } }>('/ui/vendor/:name', async (request, reply) => {
    const entry = Object.hasOwn(vendor, request.params.name) ? vendor[request.params.name] : undefined;
    if (!entry) throw notFound(`no vendored module ${request.params.name}`);
    return sendFile(reply, entry.file, 'text/javascript; charset=utf-8');
  });
}
