// A pack file (spec/cache-pack.ts) damaged on disk: a bit flipped in a packed NAR or narinfo, a pack cut
// short. The cache never serves the damaged bytes as valid: it answers a coded error or "not here", says
// so in its log (CACHE_STORAGE_CORRUPT), keeps running, and the next push uploads the damaged paths
// again, after which stock nix realises the closure from the cache.
import { mkdtemp, open, readdir, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { ensureCacheKey } from '../../scheduler/cache/index.js';
import type { StorageProblem } from '../../scheduler/cache/storage.js';
import { eventually } from '../helpers/protocol-agent.js';
import {
  buildClosure,
  buildRandomPath,
  packedAt,
  realiseFrom,
  servedInfo,
  startCache,
  type TestCache,
} from './fixtures.js';

let work: string;
let closure: { root: string; lib: string; busybox: string };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-pack-corruption-'));
  closure = await buildClosure('pack-corruption');
}, 120_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** A cache holding the test closure in one pack, and a second app on its directory (a restart), which records problems. */
async function pushedThenRestarted(name: string): Promise<{
  dataDir: string;
  cacheDir: string;
  reopen: () => Promise<{ cache: TestCache; problems: StorageProblem[] }>;
}> {
  const dataDir = join(work, name);
  const first = await startCache({ dataDir });
  expect((await pushClosure({ coordinator: first.url, paths: [closure.root] })).uploaded).toHaveLength(3);
  await first.app.close();
  const cacheDir = join(dataDir, 'cache');
  expect(await readdir(join(cacheDir, 'pack'))).toHaveLength(1);
  return {
    dataDir,
    cacheDir,
    reopen: async () => {
      const problems: StorageProblem[] = [];
      const cache = await startCache({ dataDir, onCorrupt: (p) => problems.push(p) });
      return { cache, problems };
    },
  };
}

/** Flips one bit of a file at `at`. */
async function flipBit(file: string, at: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] = b[0]! ^ 0x04;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

const hashOf = (path: string) => path.slice(11, 43);

/** Pushes again, then realises the closure from the cache into a fresh store with stock nix. */
async function repairedAndRealised(
  cache: TestCache,
  dataDir: string,
  expectUploaded: string[],
  store: string,
) {
  const again = await pushClosure({ coordinator: cache.url, paths: [closure.root] });
  expect([...again.uploaded].sort()).toEqual([...expectUploaded].sort());
  const key = (await ensureCacheKey(dataDir)).publicKey;
  await realiseFrom(cache.url, key, closure.root, join(work, store));
}

describe('a damaged pack file', () => {
  test('a bit flipped in a packed NAR: refused with a coded error and logged, its path pushed again', async () => {
    const { dataDir, cacheDir, reopen } = await pushedThenRestarted('nar-flip');
    const { cache: before } = await reopen();
    const narName = (await servedInfo(before.url, closure.lib)).url.slice('nar/'.length);
    await before.app.close();
    const where = await packedAt(cacheDir, 'nar', narName);
    await flipBit(where.file, where.at + Math.floor(where.size / 2));

    const { cache, problems } = await reopen();
    try {
      const r = await fetch(`${cache.url}/cache/nar/${narName}`);
      expect(r.status).toBe(500);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('CACHE_STORAGE_CORRUPT');
      expect(problems.map((p) => p.code)).toContain('CACHE_STORAGE_CORRUPT');
      expect(problems.some((p) => p.message.includes(narName))).toBe(true);
      // Its narinfo is no longer served either: nix looks elsewhere, and a push uploads it again.
      expect((await fetch(`${cache.url}/cache/${hashOf(closure.lib)}.narinfo`)).status).toBe(404);
      expect((await fetch(`${cache.url}/cache/${hashOf(closure.busybox)}.narinfo`)).status).toBe(200);
      await repairedAndRealised(cache, dataDir, [closure.lib], 'store-nar-flip');
      // A restart reads both packs: the damaged NAR is passed over for the new pack's copy.
      await cache.app.close();
      const { cache: third } = await reopen();
      try {
        await realiseFrom(
          third.url,
          (await ensureCacheKey(dataDir)).publicKey,
          closure.lib,
          join(work, 'store-nar-flip-restarted'),
        );
      } finally {
        await third.app.close();
      }
    } finally {
      await cache.app.close();
    }
  }, 60_000);

  test("a bit flipped in a packed narinfo's signed fields: not served, logged, pushed again", async () => {
    const { dataDir, cacheDir, reopen } = await pushedThenRestarted('narinfo-flip');
    const where = await packedAt(cacheDir, 'narinfo', hashOf(closure.lib));
    const fh = await open(where.file, 'r');
    const text = Buffer.alloc(where.size);
    await fh.read(text, 0, where.size, where.at);
    await fh.close();
    // A bit of the NarSize digits: still a narinfo that parses, no longer the one that was signed.
    const at = text.indexOf('NarSize: ') + 'NarSize: '.length;
    await flipBit(where.file, where.at + at);

    const { cache, problems } = await reopen();
    try {
      expect((await fetch(`${cache.url}/cache/${hashOf(closure.lib)}.narinfo`)).status).toBe(404);
      expect(problems.map((p) => p.code)).toEqual(['CACHE_STORAGE_CORRUPT']);
      expect(problems[0]!.message).toContain(hashOf(closure.lib));
      await repairedAndRealised(cache, dataDir, [closure.lib], 'store-narinfo-flip');
      // A restart reads both packs: the damaged copy is passed over for the new one.
      await cache.app.close();
      const { cache: third } = await reopen();
      try {
        expect((await servedInfo(third.url, closure.lib)).storePath).toBe(closure.lib);
      } finally {
        await third.app.close();
      }
    } finally {
      await cache.app.close();
    }
  }, 60_000);

  test('a pack cut short (a lost tail): not served, logged, pushed again; while served, a coded error', async () => {
    const { dataDir, cacheDir, reopen } = await pushedThenRestarted('truncated');
    const { cache: live, problems: liveProblems } = await reopen();
    const [pack] = await readdir(join(cacheDir, 'pack'));
    const file = join(cacheDir, 'pack', pack!);
    const narName = (await servedInfo(live.url, closure.root)).url.slice('nar/'.length);
    // Cut while the app has the pack indexed: a read past the end is a coded error, not a crash.
    await truncate(file, 10);
    try {
      const r = await fetch(`${live.url}/cache/nar/${narName}`);
      expect(r.status).toBe(500);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('CACHE_STORAGE_CORRUPT');
      expect(liveProblems.map((p) => p.code)).toContain('CACHE_STORAGE_CORRUPT');
    } finally {
      await live.app.close();
    }

    const { cache, problems } = await reopen();
    try {
      for (const p of [closure.lib, closure.root, closure.busybox])
        expect((await fetch(`${cache.url}/cache/${hashOf(p)}.narinfo`)).status).toBe(404);
      expect(problems.map((p) => p.code)).toEqual(['CACHE_STORAGE_CORRUPT']);
      expect(problems[0]!.location).toBe(file);
      expect((await stat(file)).size).toBe(10);
      await repairedAndRealised(
        cache,
        dataDir,
        [closure.lib, closure.root, closure.busybox],
        'store-truncated',
      );
    } finally {
      await cache.app.close();
    }
  }, 60_000);

  test('a bit flipped in a large NAR file (nar/): its transfer breaks off short, logged, pushed again', async () => {
    const large = await buildRandomPath('mxc-pack-corruption-large', 2_000_000);
    const dataDir = join(work, 'large');
    const first = await startCache({ dataDir });
    await pushClosure({ coordinator: first.url, paths: [large] });
    const narName = (await servedInfo(first.url, large)).url.slice('nar/'.length);
    const file = join(dataDir, 'cache', 'nar', narName);
    // Whole, it is served whole (checked on the way the first time, then as it is).
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`${first.url}/cache/nar/${narName}`);
      expect((await r.arrayBuffer()).byteLength).toBe((await stat(file)).size);
    }
    await first.app.close();
    await flipBit(file, 1_000_000);

    const problems: StorageProblem[] = [];
    const cache = await startCache({ dataDir, onCorrupt: (p) => problems.push(p) });
    try {
      const r = await fetch(`${cache.url}/cache/nar/${narName}`);
      expect(r.status).toBe(200); // the headers go out before the last byte is read
      const body = await r.arrayBuffer().then(
        (b) => b.byteLength,
        () => 'broken off',
      );
      expect(body).not.toBe((await stat(file)).size);
      await eventually(async () => problems.length > 0, 5000, 'the damaged NAR to be logged');
      expect(problems[0]).toMatchObject({ code: 'CACHE_STORAGE_CORRUPT', location: file });
      // Its narinfo is no longer served; a push uploads the path again, and nix then realises it.
      expect((await fetch(`${cache.url}/cache/${hashOf(large)}.narinfo`)).status).toBe(404);
      expect((await pushClosure({ coordinator: cache.url, paths: [large] })).uploaded).toEqual([large]);
      const again = await fetch(`${cache.url}/cache/nar/${narName}`);
      expect((await again.arrayBuffer()).byteLength).toBe((await stat(file)).size);
      await realiseFrom(
        cache.url,
        (await ensureCacheKey(dataDir)).publicKey,
        large,
        join(work, 'store-large'),
      );
    } finally {
      await cache.app.close();
    }
  }, 60_000);
});
