// What nix must refuse after the files on disk were tampered with, the read/write authorization of
// every route, and that a push interrupted part way resumes with only what is missing.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyRequest } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { PushError, pushClosure } from '../../compiler/push.js';
import { run } from '../../lib/exec.js';
import { parseNarInfo } from '../../lib/nar-info.js';
import { queryPathInfos } from '../../lib/path-info.js';
import { ensureCacheKey } from '../../scheduler/cache/index.js';
import {
  batchBody,
  batchEntry,
  buildClosure,
  dumpNar,
  rawBatch,
  rawUpload,
  realiseFrom,
  startCache,
  type TestCache,
} from './fixtures.js';

let work: string;
let closure: { root: string; lib: string; busybox: string };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-cache-tamper-'));
  closure = await buildClosure('tamper');
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('tampered files on disk', () => {
  let cache: TestCache;
  let key: string;
  let infoFile: string;
  let original: string;
  beforeAll(async () => {
    // Edits on disk must show at once (no narinfo served from memory without a stat).
    cache = await startCache({ narinfoRevalidateMs: 0 });
    key = (await ensureCacheKey(cache.dataDir)).publicKey;
    await pushClosure({ coordinator: cache.url, paths: [closure.root] });
    infoFile = join(cache.dataDir, 'cache', 'narinfo', `${closure.lib.slice(11, 43)}.narinfo`);
    original = await readFile(infoFile, 'utf8');
  });
  afterAll(async () => {
    await cache.close();
  });

  test('an edited narinfo (signature kept) is refused', async () => {
    const size = parseNarInfo(original).narSize;
    await writeFile(infoFile, original.replace(`NarSize: ${size}`, `NarSize: ${size + 1}`));
    try {
      const store = join(work, 'edited');
      await expect(realiseFrom(cache.url, key, closure.lib, store)).rejects.toThrow(
        /not signed by any of the keys/,
      );
      await expect(run('nix-store', ['--store', store, '--check-validity', closure.lib])).rejects.toThrow();
    } finally {
      await writeFile(infoFile, original);
    }
  });

  test('a swapped NAR is refused', async () => {
    const info = parseNarInfo(original);
    const rootInfo = parseNarInfo(
      await readFile(
        join(cache.dataDir, 'cache', 'narinfo', `${closure.root.slice(11, 43)}.narinfo`),
        'utf8',
      ),
    );
    const narFile = join(cache.dataDir, 'cache', info.url);
    const narOriginal = await readFile(narFile);
    await writeFile(narFile, await readFile(join(cache.dataDir, 'cache', rootInfo.url)));
    try {
      const store = join(work, 'swapped');
      await expect(realiseFrom(cache.url, key, closure.lib, store)).rejects.toThrow(/hash mismatch/);
      await expect(run('nix-store', ['--store', store, '--check-validity', closure.lib])).rejects.toThrow();
    } finally {
      await writeFile(narFile, narOriginal);
    }
    // Restored, the same request works: the refusals above came from the tampering.
    await realiseFrom(cache.url, key, closure.lib, join(work, 'restored'));
  });
});

describe('authorization', () => {
  let cache: TestCache;
  const tokens: Record<string, 'read' | 'write'> = { 'reader-token': 'read', 'writer-token': 'write' };
  const authorize = (req: FastifyRequest, access: 'read' | 'write') => {
    const granted = tokens[(req.headers.authorization ?? '').replace(/^Bearer /, '')];
    return granted === 'write' || granted === access;
  };
  beforeAll(async () => {
    cache = await startCache({ authorize });
  });
  afterAll(async () => {
    await cache.close();
  });

  const get = (path: string, token?: string) =>
    fetch(`${cache.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });

  test('reads need a read token', async () => {
    const hash = closure.lib.slice(11, 43);
    for (const path of [
      '/cache/nix-cache-info',
      `/cache/${hash}.narinfo`,
      '/api/cache/key',
      `/cache/nar/${'0'.repeat(52)}.nar.br`,
    ]) {
      const res = await get(path);
      expect(res.status, path).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('CACHE_UNAUTHORIZED');
      expect((await get(path, 'reader-token')).status, path).not.toBe(401);
    }
  });

  test('writes need a write token', async () => {
    const [info] = await queryPathInfos([closure.lib]);
    const headers = {
      'content-type': 'application/octet-stream',
      'x-nix-nar-hash': info.narHash,
      'x-nix-nar-size': info.narSize,
    };
    const url = `${cache.url}/api/cache/nar/${closure.lib.slice(11)}`;
    const nar = await dumpNar(closure.lib);
    for (const auth of [{}, { authorization: 'Bearer reader-token' }] as Record<string, string>[]) {
      const r = await rawUpload(url, { ...headers, ...auth }, nar);
      expect(r.status).toBe(401);
      expect(r.json.error?.code).toBe('CACHE_UNAUTHORIZED');
    }
    const push = pushClosure({ coordinator: cache.url, token: 'reader-token', paths: [closure.root] });
    await expect(push).rejects.toBeInstanceOf(PushError);
    await expect(push).rejects.toMatchObject({ code: 'CACHE_UNAUTHORIZED' });
    expect((await get(`/cache/${closure.lib.slice(11, 43)}.narinfo`, 'reader-token')).status).toBe(404);

    const r = await pushClosure({ coordinator: cache.url, token: 'writer-token', paths: [closure.root] });
    expect(r.uploaded).toHaveLength(3);
  });
});

describe('resuming', () => {
  test('a push stopped part way re-uploads only what is missing', async () => {
    const cache = await startCache();
    try {
      // A batch stopped at its second NAR (here by a wrong claimed hash): the first one, which passed
      // every check, is kept.
      const first = await batchEntry(closure.busybox);
      const second = await batchEntry(closure.lib);
      second.header.nar_hash = first.header.nar_hash;
      const stopped = await rawBatch(cache.url, batchBody([first, second]));
      expect([stopped.status, stopped.json.error?.code]).toEqual([422, 'CACHE_HASH_MISMATCH']);
      const again = await pushClosure({ coordinator: cache.url, paths: [closure.root] });
      expect(again.skipped).toBe(1);
      expect(again.uploaded).toEqual([closure.lib, closure.root]);
      const key = (await ensureCacheKey(cache.dataDir)).publicKey;
      await realiseFrom(cache.url, key, closure.root, join(work, 'resumed'));
    } finally {
      await cache.close();
    }
  });
});
