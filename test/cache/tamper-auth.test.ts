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
  packedAt,
  rawBatch,
  rawUpload,
  realiseFrom,
  servedInfo,
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
  let cacheDir: string;
  beforeAll(async () => {
    cache = await startCache();
    cacheDir = join(cache.dataDir, 'cache');
    key = (await ensureCacheKey(cache.dataDir)).publicKey;
    await pushClosure({ coordinator: cache.url, paths: [closure.root] });
  });
  afterAll(async () => {
    await cache.close();
  });

  /** Overwrites bytes of a pack in place; returns what was there. */
  async function overwrite(file: string, at: number, bytes: Buffer): Promise<Buffer> {
    const whole = await readFile(file);
    const was = Buffer.from(whole.subarray(at, at + bytes.length));
    bytes.copy(whole, at);
    await writeFile(file, whole);
    return was;
  }

  test('an edited narinfo (signature kept) is not served', async () => {
    const hash = closure.lib.slice(11, 43);
    const where = await packedAt(cacheDir, 'narinfo', hash);
    const original = (await readFile(where.file)).subarray(where.at, where.at + where.size).toString('utf8');
    const size = parseNarInfo(original).narSize;
    // The same length, another NarSize: the pack's index stays right.
    const edited = original.replace(`NarSize: ${size}`, `NarSize: ${size - 1}`);
    expect(edited.length).toBe(original.length);
    const was = await overwrite(where.file, where.at, Buffer.from(edited));
    // Read by a process that has not seen the narinfo before (this one holds it in memory).
    const fresh = await startCache({ dataDir: cache.dataDir, onCorrupt: () => {} });
    try {
      // The cache checks the signature itself (and logs CACHE_STORAGE_CORRUPT): nix is told it is not here.
      expect((await fetch(`${fresh.url}/cache/${hash}.narinfo`)).status).toBe(404);
      const store = join(work, 'edited');
      await expect(realiseFrom(fresh.url, key, closure.lib, store)).rejects.toThrow(
        /don't know how to build/,
      );
      await expect(run('nix-store', ['--store', store, '--check-validity', closure.lib])).rejects.toThrow();
    } finally {
      await fresh.app.close();
      await overwrite(where.file, where.at, was);
    }
  });

  test('a swapped NAR is refused, by the cache itself', async () => {
    const info = await servedInfo(cache.url, closure.lib);
    const where = await packedAt(cacheDir, 'nar', info.url.slice('nar/'.length));
    // Still a NAR, of the same length, with other contents (the lib's data file says jello, not hello).
    const nar = Buffer.from((await readFile(where.file)).subarray(where.at, where.at + where.size));
    const data = nar.indexOf('hello-tamper');
    expect(data).toBeGreaterThan(0);
    nar.write('j', data);
    const was = await overwrite(where.file, where.at, nar);
    const reader = await startCache({ dataDir: cache.dataDir, onCorrupt: () => {} });
    try {
      const r = await fetch(`${reader.url}/cache/${info.url}`);
      expect([r.status, ((await r.json()) as { error: { code: string } }).error.code]).toEqual([
        500,
        'CACHE_STORAGE_CORRUPT',
      ]);
      const store = join(work, 'swapped');
      await expect(realiseFrom(reader.url, key, closure.lib, store)).rejects.toThrow();
      await expect(run('nix-store', ['--store', store, '--check-validity', closure.lib])).rejects.toThrow();
    } finally {
      await reader.app.close();
      await overwrite(where.file, where.at, was);
    }
    // Restored, a process reading the pack afresh serves it: the refusals above came from the tampering.
    const restored = await startCache({ dataDir: cache.dataDir });
    try {
      await realiseFrom(restored.url, key, closure.lib, join(work, 'restored'));
    } finally {
      await restored.app.close();
    }
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
