// API tokens and roles, the refusal to listen off loopback without them, and TLS for the API
// and for https branch URLs (a self-signed certificate made with openssl for 127.0.0.1).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { authorize, isLoopbackHost, newToken, parseTokenEntries, requiredRoleOf, TokenBook, tokenEntryLine, TokenFormatError } from '../src/server/auth.js';
import { serve, ServeConfigError, tokenBookOf, type RunningCoordinator } from '../src/server/serve.js';
import { TandemClient, TandemApiError } from '../src/sdk/client.js';
import { tempDir } from './support/coordinator.js';

const tokens = { admin: newToken(), client: newToken(), read: newToken() };
const tokenLines = [tokenEntryLine('ops', 'admin', tokens.admin), tokenEntryLine('shop', 'client', tokens.client), tokenEntryLine('dash', 'read', tokens.read)].join('\n');

describe('auth: tokens and roles (pure)', () => {
  test('entries parse from lines or commas; a bad line names its source and number', () => {
    const entries = parseTokenEntries(`# comment\n${tokenLines}`, 'tokens.txt');
    assert.deepEqual(entries.map((entry) => [entry.name, entry.role]), [['ops', 'admin'], ['shop', 'client'], ['dash', 'read']]);
    assert.equal(parseTokenEntries(tokenLines.split('\n').join(','), 'TANDEM_TOKENS').length, 3);
    assert.throws(() => parseTokenEntries(`ops root sha256:${'a'.repeat(64)}`, 'tokens.txt'), (error: unknown) => error instanceof TokenFormatError && /tokens\.txt, entry 1: role must be one of read, client, admin/.test(error.message));
    assert.throws(() => parseTokenEntries(`ops admin ${tokens.admin}`, 'TANDEM_TOKENS'), /TANDEM_TOKENS, entry 1: expected/);
  });

  test('the file keeps only hashes: no token appears in its entry', () => {
    for (const token of Object.values(tokens)) assert.ok(!tokenLines.includes(token));
  });

  test('roles nest; health is open; force-stop needs admin', () => {
    const book = new TokenBook(parseTokenEntries(tokenLines, 'test'));
    const bearer = (token: string) => `Bearer ${token}`;
    assert.deepEqual(authorize(book, 'GET', '/healthz', undefined), { allowed: true, entry: null });
    assert.equal(authorize(book, 'GET', '/v1/transactions', undefined).allowed, false);
    assert.equal(authorize(book, 'GET', '/v1/transactions', bearer('tdm_unknown')).allowed, false);
    assert.equal(authorize(book, 'GET', '/v1/transactions', bearer(tokens.read)).allowed, true);
    const readWrites = authorize(book, 'POST', '/v1/transactions', bearer(tokens.read));
    assert.ok(!readWrites.allowed && readWrites.status === 403 && /role read; POST \/v1\/transactions needs client/.test(readWrites.detail));
    assert.equal(authorize(book, 'POST', '/v1/transactions', bearer(tokens.client)).allowed, true);
    assert.equal(requiredRoleOf('POST', '/api/dtmsvr/forceStop'), 'admin');
    assert.equal(authorize(book, 'POST', '/v1/transactions/g1/force-stop', bearer(tokens.client)).allowed, false);
    assert.equal(authorize(book, 'POST', '/v1/transactions/g1/force-stop', bearer(tokens.admin)).allowed, true);
  });

  test('loopback is 127.0.0.0/8, ::1 and localhost; anything else needs tokens', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) assert.ok(isLoopbackHost(host), host);
    for (const host of ['0.0.0.0', '::', '10.0.0.5', 'example.com', '192.0.2.1']) {
      assert.ok(!isLoopbackHost(host), host);
      assert.throws(() => tokenBookOf({ host }), ServeConfigError);
    }
    assert.equal(tokenBookOf({ host: '127.0.0.1' }), undefined, 'loopback with no tokens: off');
    assert.equal(tokenBookOf({ host: '0.0.0.0', tokens: tokenLines })?.size, 3);
  });
});

describe('auth: a coordinator with tokens', () => {
  test('refuses a public address with no tokens before it opens or binds anything', async () => {
    const dir = tempDir();
    // 192.0.2.1 is TEST-NET-1, on no interface here: even a regressed check could not bind it.
    await assert.rejects(serve({ host: '192.0.2.1', port: 0, storeUrl: `sqlite:${path.join(dir, 'tandem.db')}`, sqliteSync: 'normal', logLevel: 'silent' }), ServeConfigError);
    assert.deepEqual(fs.readdirSync(dir), [], 'no store file was created');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('answers 401/403 as problem+json, writes nothing refused, and lets each role do its part', async (t) => {
    const dir = tempDir();
    const running = await serve({ host: '127.0.0.1', port: 0, storeUrl: `sqlite:${path.join(dir, 'tandem.db')}`, sqliteSync: 'normal', logLevel: 'silent', tokens: tokenLines });
    t.after(async () => {
      await running.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const anonymous = await request(`${running.url}/v1/transactions`);
    assert.equal(anonymous.statusCode, 401);
    assert.match(String(anonymous.headers['content-type']), /^application\/problem\+json/);
    assert.match(String(anonymous.headers['www-authenticate']), /^Bearer/);
    assert.match(((await anonymous.body.json()) as { detail: string }).detail, /Authorization: Bearer/);
    const dtm = await request(`${running.url}/api/dtmsvr/newGid`);
    assert.equal(dtm.statusCode, 401, 'the DTM-compatible API needs the token too');
    await dtm.body.dump();
    const health = await request(`${running.url}/healthz`);
    assert.equal(health.statusCode, 200);
    await health.body.dump();

    const reader = new TandemClient({ url: running.url, token: tokens.read });
    const shop = new TandemClient({ url: running.url, token: tokens.client });
    const saga = { gid: 'auth-refused', mode: 'saga', branches: [{ branchId: '01', action: 'http://127.0.0.1:9/never', compensate: 'http://127.0.0.1:9/never' }] };
    await assert.rejects(reader.call('POST', '/v1/transactions', saga), (error: unknown) => error instanceof TandemApiError && error.status === 403);
    await assert.rejects(reader.get('auth-refused'), (error: unknown) => error instanceof TandemApiError && error.status === 404, 'the refused create wrote nothing');
    assert.equal((await reader.list({})).items.length, 0);
    assert.equal((await shop.newGid()).length > 0, true, 'a client token drives transactions');
  });
});

describe('TLS', () => {
  test('the API over HTTPS, and https branch URLs trusted through --branch-ca', async (t) => {
    const dir = tempDir();
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const calls: string[] = [];
    const participant = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (incoming, response) => {
      calls.push(incoming.url ?? '');
      incoming.resume();
      response.writeHead(200, { 'content-type': 'application/json' }).end('{"dtm_result":"SUCCESS"}');
    });
    await new Promise<void>((resolve) => participant.listen(0, '127.0.0.1', resolve));
    const participantPort = (participant.address() as { port: number }).port;
    let running: RunningCoordinator | undefined;
    t.after(async () => {
      await running?.close();
      participant.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    running = await serve({ host: '127.0.0.1', port: 0, storeUrl: `sqlite:${path.join(dir, 'tandem.db')}`, sqliteSync: 'normal', logLevel: 'silent', tlsCertFile: cert, tlsKeyFile: key, branchCaFile: cert });
    assert.match(running.url, /^https:\/\/127\.0\.0\.1:/);
    const trusting = new Agent({ connect: { ca: fs.readFileSync(cert) } });
    t.after(() => trusting.close());
    const client = new TandemClient({ url: running.url, dispatcher: trusting });
    const branch = `https://127.0.0.1:${participantPort}`;
    await client.call('POST', '/v1/transactions', { gid: 'tls-saga', mode: 'saga', branches: [{ branchId: '01', action: `${branch}/act`, compensate: `${branch}/undo` }] });
    const ended = await client.waitResult('tls-saga', { timeoutMs: 15_000 });
    assert.equal(ended.status, 'succeeded');
    assert.deepEqual(calls.map((url) => url.split('?')[0]), ['/act']);
    await assert.rejects(request(`${running.url}/healthz`), 'an untrusting client refuses the self-signed certificate');
  });
});
