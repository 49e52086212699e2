// Uploads the cache must refuse, each leaving nothing behind: lies about hash or size, missing
// references, bodies that are not NARs, bad names and traversal, wrong content types, oversize.
import { readdir } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { queryPathInfos } from '../../lib/path-info.js';
import { buildClosure, dumpNar, rawUpload, startCache, type TestCache } from './fixtures.js';

let cache: TestCache;
let closure: { root: string; lib: string; busybox: string };

beforeAll(async () => {
  closure = await buildClosure('refusals');
  cache = await startCache();
});
afterAll(async () => {
  await cache.close();
});

async function claimHeaders(path: string): Promise<Record<string, string | number>> {
  const [info] = await queryPathInfos([path]);
  return {
    'content-type': 'application/octet-stream',
    'x-nix-nar-hash': info.narHash,
    'x-nix-nar-size': info.narSize,
    'x-nix-references': info.references.map((r) => r.slice(11)).join(' '),
  };
}

const uploadUrl = (path: string) => `${cache.url}/api/cache/nar/${path.slice(11)}`;

async function cacheFiles(): Promise<string[]> {
  const dir = join(cache.dataDir, 'cache');
  const lists = await Promise.all(
    ['nar', 'narinfo', 'pack'].map(async (d) =>
      (await readdir(join(dir, d)).catch(() => [] as string[])).map((f) => `${d}/${f}`),
    ),
  );
  // tmp/ holds one (empty when idle) folder per process sharing the cache.
  const tmp = await readdir(join(dir, 'tmp'), { recursive: true, withFileTypes: true });
  return [...lists.flat(), ...tmp.filter((e) => !e.isDirectory()).map((e) => `tmp/${e.name}`)];
}

describe('refused uploads leave nothing', () => {
  test('a wrong claimed hash', async () => {
    const headers = await claimHeaders(closure.lib);
    const [other] = await queryPathInfos([closure.busybox]);
    const r = await rawUpload(
      uploadUrl(closure.lib),
      { ...headers, 'x-nix-nar-hash': other.narHash },
      await dumpNar(closure.lib),
    );
    expect(r.status).toBe(422);
    expect(r.json.error?.code).toBe('CACHE_HASH_MISMATCH');
    expect(await cacheFiles()).toEqual([]);
  });

  test('a wrong claimed size, smaller or larger than the body', async () => {
    const headers = await claimHeaders(closure.lib);
    const nar = await dumpNar(closure.lib);
    for (const size of [nar.length - 8, nar.length + 8]) {
      const r = await rawUpload(uploadUrl(closure.lib), { ...headers, 'x-nix-nar-size': size }, nar);
      expect(r.status).toBe(422);
      expect(r.json.error?.code).toBe('CACHE_SIZE_MISMATCH');
    }
    expect(await cacheFiles()).toEqual([]);
  });

  test('a path whose references are not in the cache yet', async () => {
    const r = await rawUpload(
      uploadUrl(closure.root),
      await claimHeaders(closure.root),
      await dumpNar(closure.root),
    );
    expect(r.status).toBe(409);
    expect(r.json.error?.code).toBe('CACHE_MISSING_REFERENCES');
    expect(r.json.error?.message).toContain(closure.lib);
    expect(await cacheFiles()).toEqual([]);
  });

  test('a body that is not a NAR', async () => {
    const body = Buffer.from('this is not a nar archive at all');
    const r = await rawUpload(
      uploadUrl(closure.lib),
      { ...(await claimHeaders(closure.lib)), 'x-nix-nar-size': body.length },
      body,
    );
    expect(r.status).toBe(400);
    expect(r.json.error?.code).toBe('CACHE_NOT_A_NAR');
    expect(await cacheFiles()).toEqual([]);
  });

  test('invalid names, traversal and bad references', async () => {
    const headers = await claimHeaders(closure.lib);
    const nar = await dumpNar(closure.lib);
    for (const name of [
      '..%2F..%2Fetc%2Fpasswd',
      '..%2F',
      'not-a-store-path',
      `${closure.lib.slice(11)}%2F..%2F..%2Fx`,
    ]) {
      const r = await rawUpload(`${cache.url}/api/cache/nar/${name}`, headers, nar);
      expect(r.status, name).toBe(400);
      expect(r.json.error?.code, name).toBe('CACHE_INVALID_PATH');
    }
    // A valid name of 211 characters reaches the handler and is judged on its merits (a wrong size here).
    const long = await rawUpload(
      `${cache.url}/api/cache/nar/${'0'.repeat(32)}-${'x'.repeat(211)}`,
      { ...headers, 'x-nix-nar-size': nar.length + 1 },
      nar,
    );
    expect(long.json.error?.code).toBe('CACHE_SIZE_MISMATCH');
    const badRef = await rawUpload(
      uploadUrl(closure.lib),
      { ...headers, 'x-nix-references': '../../etc' },
      nar,
    );
    expect(badRef.json.error?.code).toBe('CACHE_INVALID_PATH');
    const badHash = await rawUpload(
      uploadUrl(closure.lib),
      { ...headers, 'x-nix-nar-hash': 'sha256:nope' },
      nar,
    );
    expect(badHash.json.error?.code).toBe('CACHE_BAD_REQUEST');
    for (const path of [
      '/cache/nar/..%2Fsecret.key',
      '/cache/..%2Fsecret.key',
      '/cache/nar/%2e%2e%2fsecret.key',
    ]) {
      const res = await fetch(`${cache.url}${path}`);
      expect(res.status, path).toBe(404);
      expect(await res.text()).not.toContain('mxc-1:');
    }
    const missing = await fetch(`${cache.url}/api/cache/missing`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ paths: ['/etc/passwd'] }),
    });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('CACHE_INVALID_PATH');
    expect(await cacheFiles()).toEqual([]);
  });

  test('a client that disconnects half way through', async () => {
    const headers = await claimHeaders(closure.busybox);
    const nar = await dumpNar(closure.busybox);
    await new Promise<void>((resolve) => {
      const req = http.request(uploadUrl(closure.busybox), {
        method: 'PUT',
        headers: { ...headers, 'content-length': nar.length },
      });
      req.on('error', () => resolve());
      req.write(nar.subarray(0, nar.length / 2), () => setTimeout(() => req.destroy(), 100));
    });
    // The server notices the closed socket asynchronously.
    for (let i = 0; i < 50 && (await cacheFiles()).length > 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await cacheFiles()).toEqual([]);
  });

  test('a body that is not application/octet-stream', async () => {
    const r = await rawUpload(
      uploadUrl(closure.lib),
      { ...(await claimHeaders(closure.lib)), 'content-type': 'application/x-tar' },
      await dumpNar(closure.lib),
    );
    expect(r.status).toBe(415);
    expect(r.json.error?.code).toBe('CACHE_UNSUPPORTED_MEDIA_TYPE');
  });

  test('an oversize NAR', async () => {
    const small = await startCache({ maxNarBytes: 100_000 });
    try {
      const r = await rawUpload(
        `${small.url}/api/cache/nar/${closure.busybox.slice(11)}`,
        await claimHeaders(closure.busybox),
        await dumpNar(closure.busybox),
      );
      expect(r.status).toBe(413);
      expect(r.json.error?.code).toBe('CACHE_TOO_LARGE');
    } finally {
      await small.close();
    }
  });

  test('after all that, the same paths upload fine, and again is a no-op', async () => {
    const r = await pushClosure({ coordinator: cache.url, paths: [closure.root] });
    expect(r.uploaded).toHaveLength(3);
    const before = await cacheFiles();
    const again = await rawUpload(
      uploadUrl(closure.lib),
      await claimHeaders(closure.lib),
      await dumpNar(closure.lib),
    );
    expect(again.status).toBe(200);
    expect(again.json.data?.created).toBe(false);
    // Nothing written: no pack, no temp file.
    expect(await cacheFiles()).toEqual(before);
    expect(before.filter((f) => f.startsWith('tmp/'))).toEqual([]);
  });
});
