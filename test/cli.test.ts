// The operator's CLI against a running coordinator: services list, token create.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseTokenEntries, TokenBook } from '../src/server/auth.js';
import { closeCoordinator, startCoordinator, type TestCoordinator } from './support/coordinator.js';

const cliPath = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const runFile = promisify(execFile);

describe('tandem CLI', () => {
  let coordinator: TestCoordinator;
  before(async () => {
    coordinator = await startCoordinator();
  });
  after(() => closeCoordinator(coordinator));

  test('services list shows each live instance', async () => {
    await coordinator.client.call('POST', '/v1/services/inventory/instances', { instanceId: 'inv-1', url: 'http://127.0.0.1:9/inv', ttlMs: 60_000 });
    const { stdout } = await runFile(process.execPath, [cliPath, 'services', 'list', '--url', coordinator.url]);
    assert.match(stdout, /^SERVICE\s+INSTANCE\s+URL/m);
    assert.match(stdout, /^inventory\s+inv-1\s+http:\/\/127\.0\.0\.1:9\/inv\s+1\s/m);
  });

  test('token create prints a token and a tokens-file line that accepts it, with the role asked for', async () => {
    const { stdout } = await runFile(process.execPath, [cliPath, 'token', 'create', '--name', 'ci', '--role', 'read']);
    const token = /token \(.*\): (\S+)/.exec(stdout)?.[1];
    const line = /tokens-file line: (.+)/.exec(stdout)?.[1];
    assert.ok(token && line, stdout);
    assert.ok(!line.includes(token), 'the line holds only the hash');
    const entry = new TokenBook(parseTokenEntries(line, 'stdout')).entryOf(token);
    assert.deepEqual(entry && [entry.name, entry.role], ['ci', 'read']);
    await assert.rejects(runFile(process.execPath, [cliPath, 'token', 'create', '--name', 'has space']), /no spaces or commas/);
  });
});
