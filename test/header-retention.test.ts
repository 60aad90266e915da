// Branch header values (credentials, often) are kept at rest only while the transaction may
// still call a branch: its final write empties them, keeping the names for the views.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { closeCoordinator, endOf, startCoordinator } from './support/coordinator.js';
import { startParticipant } from './support/fake-participant.js';

test('a finished transaction keeps its branch header names, not their values', async (t) => {
  const participant = await startParticipant(t);
  const coordinator = await startCoordinator();
  t.after(() => closeCoordinator(coordinator));
  await coordinator.client.call('POST', '/v1/transactions', {
    gid: 'headers-at-rest',
    mode: 'saga',
    branchHeaders: { authorization: 'Bearer s3cret' },
    branches: [{ branchId: '01', action: `${participant.url}/act`, compensate: `${participant.url}/undo` }],
  });
  assert.equal((await endOf(coordinator.client, 'headers-at-rest')).status, 'succeeded');
  assert.equal(participant.calls.find((call) => call.path === '/act')?.headers.authorization, 'Bearer s3cret', 'the branch got the header while it ran');
  const stored = await coordinator.store.get('headers-at-rest');
  assert.deepEqual(stored?.options.branchHeaders, { authorization: '' });
  assert.deepEqual((await coordinator.client.get('headers-at-rest')).options.branchHeaderNames, ['authorization']);
});
