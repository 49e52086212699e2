// Cache poisoning (issue 12.4), replayed against a real coordinator with tokens: pushing needs a push
// scope, a second upload of a cached path with another NarHash is refused 409 (the same one is an
// idempotent no-op), an upload must be a whole valid NAR, and each path records the token that pushed it.
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { formatSha256 } from '../../lib/nix-base32.js';
import { queryPathInfos } from '../../lib/path-info.js';
import { getPush } from '../../scheduler/store/cache-pushes.js';
import { buildClosure, dumpNar, rawUpload } from '../cache/fixtures.js';
import {
  clientTokens,
  plainJob,
  startTestCoordinator,
  type TestCoordinator,
} from '../helpers/coordinator.js';
import { snapshot } from './helpers.js';

const ADMIN = 'poison-admin';
let c: TestCoordinator;
let closure: { root: string; lib: string; busybox: string };
const tokens: Record<string, string> = {};
const cacheDir = () => `${c.dataDir}/cache`;

const claimFor = (body: Buffer, refs = '') => ({
  'content-type': 'application/octet-stream',
  'x-nix-nar-hash': formatSha256(createHash('sha256').update(body).digest()),
  'x-nix-nar-size': body.length,
  'x-nix-references': refs,
});

beforeAll(async () => {
  closure = await buildClosure('security-poison');
  c = await startTestCoordinator('pglite', { tokens: { api: ADMIN } });
  Object.assign(tokens, await clientTokens(c, ADMIN, { ci: 'push', viewer: 'read' }));
});
afterAll(async () => {
  await c?.stop();
});

describe('cache poisoning', () => {
  test('pushing needs a push-capable token; reading does not', async () => {
    const before = await snapshot(c.db, cacheDir());
    const nar = await dumpNar(closure.busybox);
    const url = `${c.url}/api/cache/nar/${closure.busybox.slice(11)}`;
    const none = await rawUpload(url, claimFor(nar), nar);
    expect([none.status, none.json.error?.code]).toEqual([401, 'CACHE_UNAUTHORIZED']);
    const reader = await rawUpload(url, { ...claimFor(nar), authorization: `Bearer ${tokens.viewer}` }, nar);
    expect([reader.status, reader.json.error?.code]).toEqual([403, 'CACHE_FORBIDDEN']);
    await expect(
      pushClosure({ coordinator: c.url, token: tokens.viewer, paths: [closure.root] }),
    ).rejects.toMatchObject({ code: 'CACHE_FORBIDDEN' });
    expect(await snapshot(c.db, cacheDir())).toBe(before);
    // Reading works with a read token.
    const info = await fetch(`${c.url}/cache/nix-cache-info`, {
      headers: { authorization: `Bearer ${tokens.viewer}` },
    });
    expect(info.status).toBe(200);
  });

  test('the push token pushes, and is recorded as who pushed each path', async () => {
    const r = await pushClosure({ coordinator: c.url, token: tokens.ci, paths: [closure.root] });
    expect(r.uploaded).toHaveLength(3);
    for (const p of [closure.root, closure.lib, closure.busybox]) {
      expect((await getPush(c.db, p))?.pushed_by, p).toBe('ci');
    }
    // Provenance through the API (and so `mxc where`) once a job uses the closure.
    const sub = await c.api(
      'POST',
      '/api/jobs',
      plainJob({ name: 'uses-closure', mxc: { closure: [closure.root] } }),
      { authorization: `Bearer ${ADMIN}` },
    );
    expect(sub.status).toBe(201);
    const where = await c.api(
      'GET',
      `/api/store-paths?contains=${encodeURIComponent(closure.lib.slice(44))}`,
      undefined,
      {
        authorization: `Bearer ${tokens.viewer}`,
      },
    );
    expect(where.status).toBe(200);
    expect(
      where.body.data.map((w: { path: string; pushed_by: string }) => [w.path, w.pushed_by]),
    ).toContainEqual([closure.lib, 'ci']);
  });

  test('a second upload with another NarHash is refused 409 and changes nothing; the same NarHash is a no-op', async () => {
    const before = await snapshot(c.db, cacheDir());
    const url = `${c.url}/api/cache/nar/${closure.lib.slice(11)}`;
    const auth = { authorization: `Bearer ${tokens.ci}` };
    // A real, valid NAR, just not this path's.
    const other = await dumpNar(closure.busybox);
    const poison = await rawUpload(url, { ...claimFor(other), ...auth }, other);
    expect([poison.status, poison.json.error?.code]).toEqual([409, 'CACHE_PATH_CONFLICT']);
    expect(await snapshot(c.db, cacheDir())).toBe(before);

    const [info] = await queryPathInfos([closure.lib]);
    const same = await dumpNar(closure.lib);
    const again = await rawUpload(
      url,
      { ...claimFor(same, info!.references.map((p) => p.slice(11)).join(' ')), ...auth },
      same,
    );
    expect([again.status, again.json.data?.created]).toEqual([200, false]);
    expect(await snapshot(c.db, cacheDir())).toBe(before);
    expect((await getPush(c.db, closure.lib))?.pushed_by).toBe('ci');
  });

  test('an upload must be one whole valid NAR, not only its magic', async () => {
    const before = await snapshot(c.db, cacheDir());
    const name = `${'1'.repeat(32)}-victim`;
    const url = `${c.url}/api/cache/nar/${name}`;
    const auth = { authorization: `Bearer ${tokens.ci}` };
    const good = await dumpNar(closure.busybox);
    const magicThenJunk = Buffer.concat([
      good.subarray(0, 24),
      Buffer.from('#!/bin/sh\nrm -rf /\n'.repeat(8)),
    ]);
    const trailing = Buffer.concat([good, Buffer.alloc(8)]);
    const truncated = good.subarray(0, good.length - 8);
    for (const body of [magicThenJunk, trailing, truncated]) {
      const r = await rawUpload(url, { ...claimFor(body), ...auth }, body);
      expect([r.status, r.json.error?.code]).toEqual([400, 'CACHE_NOT_A_NAR']);
    }
    expect(await snapshot(c.db, cacheDir())).toBe(before);
    expect((await c.api('GET', `/cache/${'1'.repeat(32)}.narinfo`, undefined, auth)).status).toBe(404);
  });
});
