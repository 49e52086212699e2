// The directory storage keeps the storage contract, with two handles (two coordinators) on one folder.
import { mkdir, mkdtemp, readdir, rm, utimes } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DirectoryStorage } from '../../scheduler/cache/storage-dir.js';
import { storageContract } from './storage-contract.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-storage-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

storageContract('directory storage', async () => {
  const dir = await mkdtemp(join(work, 'dir-'));
  const a = new DirectoryStorage(dir);
  const b = new DirectoryStorage(dir);
  await a.init();
  await b.init();
  expect(a.spoolDir).not.toBe(b.spoolDir);
  return [a, b];
});

describe('temp folders of processes sharing the directory', () => {
  test("a live process's folder stays however old; a dead one's of this host goes minutes later, another host's after a day", async () => {
    const dir = await mkdtemp(join(work, 'spools-'));
    const live = new DirectoryStorage(dir);
    await live.init();
    try {
      // Its files go into sub-folders, which leave the folder's own mtime as old as the process.
      const longAgo = new Date(Date.now() - 3 * 86_400_000);
      await utimes(live.spoolDir, longAgo, longAgo);
      const tmp = join(dir, 'tmp');
      // Processes of this host that are gone (no such pid): one untouched for minutes, one touched just
      // now (maybe a container of another host with this name); two of another host: stale and touched.
      const dead = join(tmp, `${hostname()}-${2 ** 22 + 1}-0123abcd`);
      const justDead = join(tmp, `${hostname()}-${2 ** 22 + 2}-0123abcd`);
      const staleElsewhere = join(tmp, 'elsewhere-42-0123abcd');
      const freshElsewhere = join(tmp, 'elsewhere-43-0123abcd');
      for (const d of [dead, justDead, staleElsewhere, freshElsewhere])
        await mkdir(join(d, '0'), { recursive: true });
      const minutesAgo = new Date(Date.now() - 10 * 60_000);
      await utimes(dead, minutesAgo, minutesAgo);
      await utimes(staleElsewhere, longAgo, longAgo);
      const next = new DirectoryStorage(dir);
      await next.init();
      try {
        expect((await readdir(tmp)).sort()).toEqual(
          [live.spoolDir, next.spoolDir, justDead, freshElsewhere].map((p) => p.split('/').pop()).sort(),
        );
        // The old-looking live folder still takes uploads.
        await live.putNars([{ file: `${'7'.repeat(52)}.nar`, data: Buffer.from('x') }]);
      } finally {
        await next.close();
      }
    } finally {
      await live.close();
    }
  });
});

describe('a packed narinfo found damaged', () => {
  test('is not served but stays listed (orphan collection then collects nothing) until published again', async () => {
    const dir = await mkdtemp(join(work, 'condemned-'));
    const storage = new DirectoryStorage(dir);
    await storage.init();
    try {
      const hash = '0123456789abcdfghijklmnpqrsvwxyz';
      const first = await storage.storeGroup([], [{ hash, text: 'damaged\n' }]);
      expect(await first.publish([true])).toEqual([true]);
      const { version } = (await storage.getNarinfo(hash))!;
      await storage.condemnNarinfo(hash, version);
      expect(await storage.getNarinfo(hash)).toBeNull();
      expect(await storage.listNarinfos()).toEqual([hash]);
      // A push publishes it again: served, listed once.
      const again = await storage.storeGroup([], [{ hash, text: 'whole\n' }]);
      expect(await again.publish([true])).toEqual([true]);
      expect((await storage.getNarinfo(hash))?.text).toBe('whole\n');
      expect(await storage.listNarinfos()).toEqual([hash]);
    } finally {
      await storage.close();
    }
  });
});
