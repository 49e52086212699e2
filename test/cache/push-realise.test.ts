// End to end with stock nix: push a real closure, then realise / copy it from the cache into fresh stores.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type PushProgress, pushClosure } from '../../compiler/push.js';
import { run } from '../../lib/exec.js';
import { ensureCacheKey } from '../../scheduler/cache/index.js';
import {
  buildClosure,
  NIX_COMMAND,
  realiseFrom,
  servedInfo,
  startCache,
  type TestCache,
} from './fixtures.js';

let cache: TestCache;
let closure: { root: string; lib: string; busybox: string };
let publicKey: string;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-cache-e2e-'));
  closure = await buildClosure('e2e');
  cache = await startCache();
  publicKey = (await ensureCacheKey(cache.dataDir)).publicKey;
});
afterAll(async () => {
  await cache.close();
  await rm(work, { recursive: true, force: true });
});

describe('push then realise', () => {
  test('pushes the closure in reference order and reports progress', async () => {
    const seen: PushProgress[] = [];
    const r = await pushClosure({
      coordinator: cache.url,
      paths: [closure.root],
      onProgress: (p) => seen.push(p),
    });
    expect(r.skipped).toBe(0);
    expect([...r.uploaded].sort()).toEqual([closure.busybox, closure.lib, closure.root].sort());
    // The root references the other two, so it can only have gone last.
    expect(r.uploaded[2]).toBe(closure.root);
    const last = seen[seen.length - 1];
    expect(last.pathsDone).toBe(3);
    expect(last.bytesDone).toBe(last.bytesTotal);
    expect(r.bytes).toBe(last.bytesTotal);

    const info = await servedInfo(cache.url, closure.root);
    // Stored as uploaded by default (MXC_CACHE_COMPRESSION=none): the file is the NAR itself.
    expect(info.compression).toBe('none');
    expect(info.url).toMatch(/^nar\/[0-9a-z]{52}\.nar$/);
    expect(info.references).toEqual([closure.busybox, closure.lib].sort());
    expect(info.sigs[0]).toMatch(/^mxc-1:/);
    expect(info.fileHash).toBe(info.narHash);
    expect(info.fileSize).toBe(info.narSize);
  });

  test('a second push uploads nothing', async () => {
    const r = await pushClosure({ coordinator: cache.url, paths: [closure.root] });
    expect(r).toEqual({ uploaded: [], skipped: 3, bytes: 0 });
  });

  test('pushing through nix-store --dump stores the same signed narinfos', async () => {
    const other = await startCache();
    try {
      const r = await pushClosure({
        coordinator: other.url,
        paths: [closure.root],
        narSource: 'nix-store',
      });
      expect(r.uploaded).toHaveLength(3);
      const otherKey = (await ensureCacheKey(other.dataDir)).publicKey;
      for (const p of [closure.root, closure.lib, closure.busybox]) {
        const mine = await servedInfo(cache.url, p);
        const theirs = await servedInfo(other.url, p);
        expect({ ...theirs, sigs: [] }).toEqual({ ...mine, sigs: [] });
      }
      await realiseFrom(other.url, otherKey, closure.root, join(work, 'store-dumped'));
    } finally {
      await other.close();
    }
  });

  test('a cache storing brotli (MXC_CACHE_COMPRESSION=br) compresses, and nix realises from it', async () => {
    const br = await startCache({ compression: 'br' });
    try {
      expect((await pushClosure({ coordinator: br.url, paths: [closure.root] })).uploaded).toHaveLength(3);
      for (const p of [closure.root, closure.lib, closure.busybox]) {
        const info = await servedInfo(br.url, p);
        expect(info.compression).toBe('br');
        expect(info.url).toMatch(/^nar\/[0-9a-z]{52}\.nar\.br$/);
        expect(info.fileSize).toBeLessThan(info.narSize);
      }
      const key = (await ensureCacheKey(br.dataDir)).publicKey;
      const store = join(work, 'store-br');
      await realiseFrom(br.url, key, closure.root, store);
      await run('nix-store', [
        '--store',
        store,
        '--check-validity',
        closure.root,
        closure.lib,
        closure.busybox,
      ]);
    } finally {
      await br.close();
    }
  });

  test('nix-store --realise from the cache with the right key works, and the script runs', async () => {
    const store = join(work, 'store-ok');
    await realiseFrom(cache.url, publicKey, closure.root, store);
    expect((await readdir(join(store, 'nix', 'store'))).sort()).toEqual(
      expect.arrayContaining([closure.busybox, closure.lib, closure.root].map((p) => p.slice(11))),
    );
    const data = await readFile(join(store, closure.lib, 'data'), 'utf8');
    expect(data.trim()).toBe('hello-e2e');
    await run('nix-store', ['--store', store, '--check-validity', closure.root]);
  });

  test('nix copy --from the cache works', async () => {
    const store = join(work, 'store-copy');
    await run('nix', [
      ...NIX_COMMAND,
      'copy',
      '--from',
      `${cache.url}/cache`,
      '--to',
      store,
      '--option',
      'trusted-public-keys',
      publicKey,
      closure.root,
    ]);
    await run('nix-store', [
      '--store',
      store,
      '--check-validity',
      closure.root,
      closure.lib,
      closure.busybox,
    ]);
  });

  test('a store trusting another key refuses the paths', async () => {
    const other = (await ensureCacheKey(join(work, 'other-key'))).publicKey;
    const store = join(work, 'store-wrong-key');
    await expect(realiseFrom(cache.url, other, closure.lib, store)).rejects.toThrow(
      /not signed by any of the keys/,
    );
    await expect(run('nix-store', ['--store', store, '--check-validity', closure.lib])).rejects.toThrow();
  });

  test('the cache answers nix-cache-info, HEAD and plain 404s', async () => {
    const info = await fetch(`${cache.url}/cache/nix-cache-info`);
    expect(await info.text()).toBe('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n');
    const hash = closure.root.slice(11, 43);
    expect((await fetch(`${cache.url}/cache/${hash}.narinfo`, { method: 'HEAD' })).status).toBe(200);
    const absent = await fetch(`${cache.url}/cache/${'0'.repeat(32)}.narinfo`, { method: 'HEAD' });
    expect(absent.status).toBe(404);
    expect((await fetch(`${cache.url}/cache/${'0'.repeat(32)}.narinfo`)).status).toBe(404);
    const key = (await (await fetch(`${cache.url}/api/cache/key`)).json()) as {
      data: { name: string; public_key: string };
    };
    expect(key.data).toEqual({ name: 'mxc-1', public_key: publicKey });
  });
});
