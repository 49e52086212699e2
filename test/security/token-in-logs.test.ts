// A token given in the query (`?token=`: the dashboard's event stream, which EventSource cannot give a
// header) stays out of the coordinator's log: the lines that name a request's URL (a 503 while the
// database is away, an internal error, a client that left) wrote it whole, the token with it.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { dropPostgresDb } from '../helpers/db.js';
import { captureLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';
import { proxiedPostgres, type TcpProxy } from '../helpers/tcp-proxy.js';
import { rawRequest } from './helpers.js';

const TOKEN = 'query-token-0123456789abcdef';

describe('a token in the query', () => {
  let proxy: TcpProxy;
  let c: TestCoordinator;
  let dbName = '';
  const { logger, records } = captureLogger('debug');
  beforeAll(async () => {
    let url: string;
    ({ proxy, url, dbName } = await proxiedPostgres());
    c = await startTestCoordinator('postgres', {
      databaseUrl: url,
      logger,
      tokens: { api: TOKEN },
    });
  });
  afterAll(async () => {
    await proxy?.restore();
    await c?.stop();
    await proxy?.close();
    if (dbName) await dropPostgresDb(dbName);
  });

  test('is never written to the log, whatever the log says of the request', async () => {
    await proxy.cut();
    const since = records.length;
    for (const path of [
      `/api/workloads?token=${TOKEN}`,
      `/api/jobs?limit=5&token=${TOKEN}&x=1`,
      `/api/nodes?%74oken=${TOKEN}`,
    ]) {
      const r = await rawRequest(c.url, 'GET', path);
      expect([path, r.status, r.json?.error?.code]).toEqual([path, 503, 'DATABASE_UNAVAILABLE']);
    }
    await proxy.restore();
    await eventually(async () => (await fetch(`${c.url}/healthz`)).status === 200, 15_000, 'healthz ok');
    const logged = records.slice(since);
    // The outage was logged, with the route it stopped; the token was not.
    expect(
      logged.some((r) => /database is unreachable/.test(r.msg) && /\/api\/workloads/.test(String(r.url))),
    ).toBe(true);
    expect(JSON.stringify(logged)).not.toContain(TOKEN);
  });
});
