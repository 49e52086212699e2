// The access hook remembers tokens it has proven (so a narinfo GET skips the hash): a revoked token must
// still stop working at once on the coordinator that revoked it, and within about a second on another
// coordinator sharing the PostgreSQL database, however often it was used just before.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';

const ADMIN = 'proven-admin';
const asAdmin = { authorization: `Bearer ${ADMIN}` };

describe('proven tokens', () => {
  let a: TestCoordinator;
  let b: TestCoordinator;
  beforeAll(async () => {
    a = await startTestCoordinator('postgres', { tokens: { api: ADMIN } });
    b = await startTestCoordinator('postgres', { tokens: { api: ADMIN }, databaseUrl: a.databaseUrl });
  });
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
  });

  /** A fresh token of the given kind and scope, already seen by both coordinators. */
  async function tokenOnBoth(name: string, kind: 'client' | 'agent', scope?: string): Promise<string> {
    const t = await a.api('POST', '/api/tokens', { name, kind, scope }, asAdmin);
    expect(t.status).toBe(201);
    const token: string = t.body.data.token;
    const deadline = Date.now() + 5000;
    while (
      (await b.api('GET', '/api/cache/key', undefined, { authorization: `Bearer ${token}` })).status !== 200
    )
      expect(Date.now()).toBeLessThan(deadline);
    return token;
  }

  test('a token used many times is refused by the next request after its revocation', async () => {
    const token = await tokenOnBoth('reader', 'client', 'read');
    const auth = { authorization: `Bearer ${token}` };
    for (let i = 0; i < 20; i++) expect((await a.api('GET', '/api/jobs', undefined, auth)).status).toBe(200);
    expect((await a.api('DELETE', '/api/tokens/reader', undefined, asAdmin)).status).toBe(204);
    const r = await a.api('GET', '/api/jobs', undefined, auth);
    expect([r.status, r.body.error.code]).toEqual([401, 'UNAUTHORIZED']);
    const c = await a.api('GET', '/cache/nix-cache-info', undefined, auth);
    expect([c.status, c.body.error.code]).toEqual([401, 'CACHE_UNAUTHORIZED']);
  });

  test('another coordinator sharing the database refuses it within about a second', async () => {
    const token = await tokenOnBoth('agent-rack', 'agent');
    const auth = { authorization: `Bearer ${token}` };
    for (let i = 0; i < 20; i++)
      expect((await b.api('GET', '/cache/nix-cache-info', undefined, auth)).status).toBe(200);
    const t0 = Date.now();
    expect((await a.api('DELETE', '/api/tokens/agent-rack', undefined, asAdmin)).status).toBe(204);
    // Polled, not slept: the first refusal is what is timed.
    for (;;) {
      const r = await b.api('GET', '/cache/nix-cache-info', undefined, auth);
      if (r.status === 401) break;
      expect(r.status).toBe(200);
      expect(Date.now() - t0).toBeLessThan(1500);
    }
    expect(Date.now() - t0).toBeLessThan(1500);
    // And it stays refused.
    expect((await b.api('GET', '/cache/nix-cache-info', undefined, auth)).status).toBe(401);
  });

  test('the scope a token was proven with is the one it keeps: a read token still cannot push', async () => {
    const token = await tokenOnBoth('looker', 'client', 'read');
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    for (let i = 0; i < 5; i++) expect((await a.api('GET', '/api/jobs', undefined, auth)).status).toBe(200);
    const r = await a.api('POST', '/api/cache/missing', { paths: [] }, auth);
    expect([r.status, r.body.error.code]).toEqual([403, 'CACHE_FORBIDDEN']);
  });
});
