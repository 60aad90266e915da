// MySQL/MariaDB XA on servers that roll a prepared transaction back when its session closes
// (issue 10, bug 9): the participant closes the preparing session on purpose, so on such a
// server every prepared action would be lost and the coordinator's commit would still report
// success. The version decision is a pure function; the participant applies it before it
// creates its table or runs its first action; the real MariaDB of the test services passes.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import mysql, { type Pool } from 'mysql2/promise';
import { MysqlXa, UntrustedXaServer, xaServerVerdict } from '../src/sdk/xa/index.js';
import { requireService, services } from './support/services.js';

describe('MySQL/MariaDB XA: the server version decides', () => {
  const refused = [
    '5.7.6',
    '5.7.6-log',
    '5.6.51-log',
    '5.5.62',
    '5.1.73',
    '10.4.32-MariaDB',
    '10.5.1-MariaDB',
    '10.3.39-MariaDB-0+deb10u1',
    '5.5.5-10.4.18-MariaDB',
    '10.0.38-MariaDB-wsrep',
    'not a version',
    '',
  ];
  const trusted = [
    ['5.7.7', 'MySQL', '5.7.7'],
    ['5.7.44-log', 'MySQL', '5.7.44'],
    ['8.0.36', 'MySQL', '8.0.36'],
    ['8.0.36-28', 'MySQL', '8.0.36'],
    ['9.1.0', 'MySQL', '9.1.0'],
    ['10.5.2-MariaDB', 'MariaDB', '10.5.2'],
    ['10.11.19-MariaDB-0+deb12u1', 'MariaDB', '10.11.19'],
    ['11.4.2-MariaDB-log', 'MariaDB', '11.4.2'],
    ['5.5.5-10.6.16-MariaDB', 'MariaDB', '10.6.16'],
  ] as const;

  for (const version of refused) {
    test(`refuses "${version}"`, () => {
      const verdict = xaServerVerdict(version);
      assert.ok(!verdict.trusted, `${version} must be refused`);
      assert.match(verdict.reason, /MySQL 5\.7\.7 or MariaDB 10\.5\.2 or later/);
      assert.ok(verdict.reason.includes(`(${version})`) || verdict.reason.includes(`"${version}"`), `the reason names the version: ${verdict.reason}`);
    });
  }
  for (const [version, product, number] of trusted) {
    test(`accepts "${version}" as ${product} ${number}`, () => {
      assert.deepEqual(xaServerVerdict(version), { trusted: true, product, version: number });
    });
  }

  test('the participant refuses an old server before it creates anything or runs an action', async () => {
    const statements: string[] = [];
    // A pool that answers VERSION() like MariaDB 10.4 and fails anything else: nothing else may run.
    const oldServer = {
      async query(sql: string) {
        statements.push(sql);
        if (/VERSION\(\)/i.test(sql)) return [[{ version: '10.4.32-MariaDB-1:10.4.32+maria~deb11' }], []];
        throw new Error(`unexpected statement on an untrusted server: ${sql}`);
      },
      async getConnection() {
        throw new Error('no connection may be taken from an untrusted server');
      },
    } as unknown as Pool;
    const xa = new MysqlXa(oldServer, { xidPrefix: 'old', tableName: 'tandem_old_barrier' });
    await assert.rejects(xa.ensureSchema(), (error: unknown) => error instanceof UntrustedXaServer && /MariaDB 10\.4\.32/.test(error.message));
    await assert.rejects(
      xa.local({ gid: 'g1', branchId: '01', op: 'action', transType: 'xa' }, async () => undefined),
      UntrustedXaServer,
    );
    assert.deepEqual(statements, ['SELECT VERSION() AS version'], 'the version was asked once, and nothing else was sent');
  });

  test('the MariaDB of the test services is accepted', async (t) => {
    if (!(await requireService(t, 'mariadb'))) return;
    const pool = mysql.createPool({ uri: services.mariadb.url, connectionLimit: 1 });
    t.after(() => pool.end());
    const [rows] = await pool.query<mysql.RowDataPacket[]>('SELECT VERSION() AS version');
    const version = String(rows[0]?.version);
    const verdict = xaServerVerdict(version);
    t.diagnostic(`server ${version}: ${JSON.stringify(verdict)}`);
    assert.equal(verdict.trusted, true, `MariaDB ${version} keeps prepared XA transactions`);
    await new MysqlXa(pool, { xidPrefix: 'version_check', tableName: 'tandem_xa_version_check' }).checkServer();
  });
});
