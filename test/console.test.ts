// The web console in a real browser: a saga whose second branch answers 500 on every call is
// found on the Stuck page, opened, and force-stopped through the confirmation dialog; the
// transaction ends and the audit log has the entry. Screenshots are kept as artefacts.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { closeCoordinator, startCoordinator, tempDir } from './support/coordinator.js';
import { serverError, startParticipant } from './support/fake-participant.js';
import { openBrowser, requireChromium } from './support/browser.js';
import { serve } from '../src/server/serve.js';
import { newToken, tokenEntryLine } from '../src/server/auth.js';

test('an operator finds a stuck saga in the console and force-stops it', { timeout: 60_000 }, async (t) => {
  if (!requireChromium(t)) return;
  const coordinator = await startCoordinator();
  t.after(() => closeCoordinator(coordinator));
  const participant = await startParticipant(t);
  let payCalls = 0;
  let secondPayCall: () => void = () => undefined;
  const retried = new Promise<void>((resolve) => (secondPayCall = resolve));
  participant.on('/pay', () => {
    payCalls += 1;
    // The second call goes out only once the first one's failure is stored.
    if (payCalls === 2) secondPayCall();
    return serverError;
  });
  const create = async (body: unknown) => {
    const response = await fetch(`${coordinator.url}/v1/transactions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(response.status, 201, await response.clone().text());
    return ((await response.json()) as { gid: string }).gid;
  };
  const branch = (action: string) => ({ action: `${participant.url}${action}`, compensate: `${participant.url}/refund` });
  await create({ mode: 'saga', branches: [branch('/reserve')], waitResult: true });
  const stuckGid = await create({ mode: 'saga', branches: [branch('/reserve'), branch('/pay')], retryIntervalMs: 100 });
  await retried;

  const shots = tempDir('tandem-console-screenshots-');
  console.log(`console screenshots: ${shots}`);
  const shot = async (name: string) => {
    await page.screenshot({ path: path.join(shots, `console-${name}.png`), fullPage: true });
  };
  const context = await openBrowser(t);
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });

  await page.goto(`${coordinator.url}/ui`);
  await page.locator('#tx-table').getByText(stuckGid).waitFor();
  await page.locator('#live-counts').getByText('succeeded since start').waitFor();
  await shot('transactions');
  // Nothing here is a week old.
  await page.locator('#filter-age').selectOption({ label: 'older than 7 days' });
  await page.getByText('No transactions match.').waitFor();
  await page.locator('#filter-age').selectOption({ label: 'any' });
  await page.locator('#tx-table').getByText(stuckGid).waitFor();

  await page.getByRole('link', { name: 'Stuck' }).click();
  await page.locator('#stuck-retrying').fill('0');
  await page.locator('#stuck-retrying').press('Tab');
  const group = page.locator('.stuck-group', { hasText: `${participant.url}/pay` });
  await group.getByText(stuckGid).waitFor();
  await shot('stuck');

  await group.getByRole('link', { name: stuckGid }).click();
  await page.locator('#tx-status').getByText('submitted').waitFor();
  await page.locator('#ops-table').getByText(`${participant.url}/pay`).waitFor();
  await page.locator('#force-stop').click();
  const dialog = page.locator('#confirm-dialog');
  await dialog.waitFor();
  // Without a reason the dialog refuses and sends nothing.
  await page.locator('#confirm-ok').click();
  await dialog.getByText('Say why').waitFor();
  await page.locator('#confirm-reason').fill('payment provider down, refunds by hand (console test)');
  await shot('force-stop');
  await page.locator('#confirm-ok').click();
  await page.locator('#action-result').getByText('force-stop done: now failed/force-stopped').waitFor();
  await page.locator('#tx-status').getByText('failed').waitFor();
  await page.locator('#timeline').getByText('force-stopped by an operator').first().waitFor();
  await shot('transaction');

  const stored = (await (await fetch(`${coordinator.url}/v1/transactions/${stuckGid}`)).json()) as { status: string; phase: string; reason?: string };
  assert.equal(stored.status, 'failed');
  assert.equal(stored.phase, 'force-stopped');
  assert.match(stored.reason ?? '', /payment provider down/);
  const audit = (await (await fetch(`${coordinator.url}/v1/audit`)).json()) as { items: Array<Record<string, unknown>> };
  assert.equal(audit.items.length, 1, 'the refused empty-reason confirmation sent nothing');
  assert.equal(audit.items[0].action, 'force-stop');
  assert.equal(audit.items[0].gid, stuckGid);
  assert.equal(audit.items[0].outcome, 'applied');
  assert.equal(audit.items[0].compensate, false);
  assert.equal(audit.items[0].actor, null, 'authentication is off on this loopback coordinator');
  assert.match(String(audit.items[0].reason), /payment provider down/);

  await page.getByRole('link', { name: 'Audit' }).click();
  await page.locator('#audit-table').getByText(stuckGid).waitFor();
  await page.locator('#audit-table').getByText('applied: failed/force-stopped').waitFor();
  await shot('audit');

  await page.getByRole('link', { name: 'Charts' }).click();
  const latency = page.locator('#charts .card', { hasText: 'Branch call latency, mean' }).locator('span.muted');
  // The first point needs two scrapes of /metrics; with nothing running it shows no latency.
  await page.locator('#charts .card', { hasText: 'Transactions ended' }).locator('span.muted', { hasText: '/s' }).waitFor();
  const batch = await fetch(`${coordinator.url}/v1/transactions/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ transactions: Array.from({ length: 40 }, () => ({ mode: 'saga', branches: [branch('/reserve')] })) }),
  });
  assert.equal(batch.status, 200);
  await latency.getByText(' ms').waitFor();
  await page.locator('#charts .card', { hasText: 'Transactions ended' }).locator('span.muted', { hasNotText: '0.00 /s' }).waitFor();
  await shot('charts');

  assert.deepEqual(problems, [], 'the console loads and runs without errors (CSP, import map, modules)');
  if (process.env.TANDEM_DOCS_SCREENSHOTS === '1') {
    for (const name of ['stuck', 'force-stop', 'transaction', 'charts']) fs.copyFileSync(path.join(shots, `console-${name}.png`), path.join('docs', `console-${name}.png`));
  }
});

test('with tokens on, the console asks for one, and a read token cannot force-stop', { timeout: 60_000 }, async (t) => {
  if (!requireChromium(t)) return;
  const readToken = newToken();
  const clientToken = newToken();
  const dir = tempDir();
  const running = await serve({
    host: '127.0.0.1',
    port: 0,
    storeUrl: `sqlite:${path.join(dir, 'tandem.db')}`,
    sqliteSync: 'normal',
    logLevel: 'silent',
    limits: { recoveryIntervalMs: 100 },
    tokens: `${tokenEntryLine('viewer', 'read', readToken)},${tokenEntryLine('shop', 'client', clientToken)}`,
  });
  t.after(async () => {
    await running.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const participant = await startParticipant(t);
  participant.on('/pay', () => serverError);
  const created = await fetch(`${running.url}/v1/transactions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${clientToken}` },
    body: JSON.stringify({ mode: 'saga', branches: [{ action: `${participant.url}/pay`, compensate: `${participant.url}/refund` }] }),
  });
  assert.equal(created.status, 201);
  const { gid } = (await created.json()) as { gid: string };

  const context = await openBrowser(t);
  const page = await context.newPage();
  await page.goto(`${running.url}/ui/#/tx/${gid}`);
  await page.locator('header').getByText('This coordinator needs an API token').waitFor();
  await page.locator('#token').fill(readToken);
  await page.locator('#token').press('Enter');
  await page.locator('#tx-status').getByText('submitted').waitFor();
  await page.locator('#force-stop').click();
  await page.locator('#confirm-reason').fill('trying without the role');
  await page.locator('#confirm-ok').click();
  await page.locator('#confirm-dialog').getByText('token "viewer" has role read').waitFor();
  const audit = await fetch(`${running.url}/v1/audit`, { headers: { authorization: `Bearer ${readToken}` } });
  assert.deepEqual(((await audit.json()) as { items: unknown[] }).items, [], 'a request refused by its role never reaches the action');
  const stored = await fetch(`${running.url}/v1/transactions/${gid}`, { headers: { authorization: `Bearer ${readToken}` } });
  assert.equal(((await stored.json()) as { status: string }).status, 'submitted');
});
