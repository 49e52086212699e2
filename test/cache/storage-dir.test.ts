// The directory storage keeps the storage contract, with two handles (two coordinators) on one folder.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, unlink, utimes } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { toNixBase32 } from '../../lib/nix-base32.js';
import { DirectoryStorage } from '../../scheduler/cache/storage-dir.js';
import { eventually } from '../helpers/protocol-agent.js';
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

describe('a packed NAR read again from its open pack', () => {
  test('changed in place or removed after it was found whole: no longer served once its pack is looked at again', async () => {
    const dir = await mkdtemp(join(work, 'reopened-'));
    const storage = new DirectoryStorage(dir);
    const problems: string[] = [];
    storage.onProblem = (p) => problems.push(p.code);
    await storage.init();
    try {
      const stored = async (data: Buffer, hash: string) => {
        const file = `${toNixBase32(createHash('sha256').update(data).digest())}.nar`;
        const ready = await storage.storeGroup(
          [{ file, data }],
          [{ hash, text: `StorePath: x\nURL: nar/${file}\n` }],
        );
        await ready.publish([true]);
        return file;
      };
      const damaged = await stored(randomBytes(70_000), '0123456789abcdfghijklmnpqrsvwxya');
      const removed = await stored(randomBytes(70_000), '0123456789abcdfghijklmnpqrsvwxyb');
      const packs = await readdir(join(dir, 'pack'));
      expect(packs).toHaveLength(2);
      const served = async (file: string) => {
        const nar = await storage.getNar(file);
        return nar && (await buffer(nar.stream)).length;
      };
      // Found whole, then read with the descriptor kept open and not hashed again.
      for (let i = 0; i < 2; i++) {
        expect(await served(damaged)).toBe(70_000);
        expect(await served(removed)).toBe(70_000);
      }
      const packOf = async (file: string) => {
        for (const p of packs) {
          const bytes = await readFile(join(dir, 'pack', p));
          if (bytes.includes(file)) return join(dir, 'pack', p);
        }
        throw new Error(`no pack indexes ${file}`);
      };
      // A bit flipped by hand (its mtime a moment later), and the other pack removed by hand.
      const damagedPack = await packOf(damaged);
      const fh = await open(damagedPack, 'r+');
      const byte = Buffer.alloc(1);
      await fh.read(byte, 0, 1, 35_000);
      byte[0]! ^= 1;
      await fh.write(byte, 0, 1, 35_000);
      await fh.close();
      const later = new Date(Date.now() + 5000);
      await utimes(damagedPack, later, later);
      await unlink(await packOf(removed));
      await eventually(
        async () => (await served(removed)) === null,
        5000,
        'the removed pack to be no longer served',
      );
      await eventually(
        () =>
          storage.getNar(damaged).then(
            () => false,
            (err: { code?: string }) => err.code === 'CACHE_STORAGE_CORRUPT',
          ),
        5000,
        'the damaged NAR to be refused',
      );
      expect(problems).toEqual(['CACHE_STORAGE_CORRUPT']);
    } finally {
      await storage.close();
    }
  });
});
