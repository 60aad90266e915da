// A participant process for the XA crash tests: serves /pg/xa and /maria/xa (the XA handlers
// over the real PostgreSQL and MariaDB) on 127.0.0.1, so a test can SIGKILL it between an
// action's prepare and the coordinator's commit and start it again on the same port.
//
// Configured by TANDEM_XA_CHILD (JSON, see XaChildConfig). With `recoverFrom` it first
// resolves its in-doubt xids by that coordinator's decisions, printing one line per backend,
// and only then listens: a restarted participant applies durable decisions before it takes
// new calls.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { BusinessFailure, createParticipant, nodeHttpHandler } from '../../src/sdk/participant.js';
import type { XaChildConfig } from './xa-child.js';
import { isMove, openXaFixture, type XaFixture } from './xa-fixtures.js';

function actionOf(fixture: XaFixture) {
  return fixture.xa.handler(async (tx, request) => {
    if (!isMove(request.body)) throw new BusinessFailure('payload must be {account, amount}');
    await fixture.move(tx, request.body);
  });
}

async function main(): Promise<void> {
  const config = JSON.parse(process.env.TANDEM_XA_CHILD ?? '') as XaChildConfig;
  // The test created the tables; this process only uses them (and never drops them).
  const pgFixture = await openXaFixture('postgres', config.names.postgres, { create: false });
  const mariaFixture = await openXaFixture('mariadb', config.names.mariadb, { create: false });
  if (config.recoverFrom) {
    for (const fixture of [pgFixture, mariaFixture]) {
      const counts = await fixture.xa.recoverInDoubt(config.recoverFrom, { onError: (error, xid) => console.error(`recovery of ${xid}:`, error) });
      console.log(`xa recovered ${fixture.backend} ${JSON.stringify(counts)}`);
    }
  }
  const participant = createParticipant(
    { '/pg/xa': actionOf(pgFixture), '/maria/xa': actionOf(mariaFixture) },
    { onUnexpectedError: (error) => console.error('participant error:', error) },
  );
  const server = http.createServer(nodeHttpHandler(participant));
  await new Promise<void>((resolve) => server.listen(config.port, '127.0.0.1', resolve));
  console.log(`xa participant listening on http://127.0.0.1:${(server.address() as AddressInfo).port}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
