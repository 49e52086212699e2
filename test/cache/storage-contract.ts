/**
 * The contract every cache storage backend keeps, as a reusable suite: narinfos published once and
 * never replaced, NARs streamed in and out, listings and deletes, two handles on one storage.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import { describe, expect, test } from 'vitest';
import { toNixBase32 } from '../../lib/nix-base32.js';
import type { CacheStorage } from '../../scheduler/cache/storage.js';

const HASH = '0123456789abcdfghijklmnpqrsvwxyz'.slice(0, 32);
/** A NAR's name under `nar/`: the nix-base32 sha256 of its bytes (which a directory checks as it serves it). */
const narName = (bytes: Buffer | string, suffix = '.nar') =>
  `${toNixBase32(createHash('sha256').update(bytes).digest())}${suffix}`;

/** The contract every backend keeps; `open` gives two handles on one fresh storage (two coordinators). */
export function storageContract(
  name: string,
  open: () => Promise<[CacheStorage, CacheStorage]>,
  /** Whether two simultaneous publishes of one narinfo are decided by the backend (link, If-None-Match). */
  atomicPublish = true,
) {
  describe(name, () => {
    test('a narinfo is published once: a second writer is told, and the first text stays', async () => {
      const [a, b] = await open();
      expect(await a.getNarinfo(HASH)).toBeNull();
      expect(await a.narinfoVersion(HASH)).toBeNull();
      const results = await Promise.all([a.putNarinfo(HASH, 'first\n'), b.putNarinfo(HASH, 'second\n')]);
      const stored = (await b.getNarinfo(HASH))?.text;
      if (atomicPublish) {
        expect(results.filter(Boolean)).toHaveLength(1);
        expect(stored).toBe(results[0] ? 'first\n' : 'second\n');
      } else {
        expect(results).toContain(true);
        expect(['first\n', 'second\n']).toContain(stored);
      }
      const winner = stored;
      expect(await a.putNarinfo(HASH, 'third\n')).toBe(false);
      const got = await a.getNarinfo(HASH);
      expect(got?.text).toBe(winner);
      expect(await b.narinfoVersion(HASH)).toBe(got?.version);
      expect(await b.listNarinfos()).toEqual([HASH]);
      await b.deleteNarinfo(HASH);
      expect(await a.getNarinfo(HASH)).toBeNull();
      expect(await a.listNarinfos()).toEqual([]);
      await Promise.all([a.close(), b.close()]);
    });

    test('ready narinfos are not visible; the kept ones are published in order, the others never', async () => {
      const [a, b] = await open();
      const hashes = ['0', '1', '2'].map((c) => `${HASH.slice(0, 31)}${c}`);
      const ready = await a.readyNarinfos(hashes.map((hash) => ({ hash, text: `${hash}\n` })));
      expect(await b.listNarinfos()).toEqual([]);
      expect(await b.putNarinfo(hashes[2]!, 'theirs\n')).toBe(true);
      expect(await ready.publish([true, false, true])).toEqual([true, false]);
      expect((await b.listNarinfos()).sort()).toEqual([hashes[0], hashes[2]]);
      expect((await b.getNarinfo(hashes[2]!))?.text).toBe('theirs\n');
      const dropped = await a.readyNarinfos([{ hash: hashes[1]!, text: 'dropped\n' }]);
      await dropped.drop();
      expect(await b.getNarinfo(hashes[1]!)).toBeNull();
    });

    test('a group stored with its narinfos is visible only once published; its NARs are served whole', async () => {
      const [a, b] = await open();
      const hashes = ['3', '4', '5'].map((c) => `${HASH.slice(0, 31)}${c}`);
      const small = Buffer.from('small NAR bytes\n'.repeat(100));
      const large = 'large NAR bytes\n'.repeat(10_000);
      const spooled = join(a.spoolDir, 'large.tmp');
      await writeFile(spooled, large);
      const names = [narName(small), narName(large)];
      const ready = await a.storeGroup(
        [
          { file: names[0]!, data: small },
          { file: names[1]!, spooled },
        ],
        hashes.map((hash) => ({ hash, text: `${hash}\n` })),
      );
      await expect(readFile(spooled)).rejects.toThrow(/ENOENT/);
      expect(await b.listNarinfos()).toEqual([]);
      expect(await b.getNarinfo(hashes[0]!)).toBeNull();
      expect(await b.putNarinfo(hashes[2]!, 'theirs\n')).toBe(true);
      expect(await ready.publish([true, false, true])).toEqual([true, false]);
      await a.syncPublished();
      expect((await b.listNarinfos()).sort()).toEqual([hashes[0], hashes[2]]);
      expect((await b.getNarinfo(hashes[0]!))?.text).toBe(`${hashes[0]}\n`);
      expect((await b.getNarinfo(hashes[2]!))?.text).toBe('theirs\n');
      expect(await b.getNarinfo(hashes[1]!)).toBeNull();
      for (const [name, body] of [
        [names[0]!, small.toString()],
        [names[1]!, large],
      ] as const) {
        expect(await b.hasNar(name)).toBe(true);
        const nar = await b.getNar(name);
        expect(nar?.size).toBe(body.length);
        expect(await text(nar!.stream)).toBe(body);
      }
      // A group dropped leaves nothing visible.
      const dropped = await a.storeGroup(
        [{ file: `${'6'.repeat(52)}.nar`, data: small }],
        [{ hash: hashes[1]!, text: 'dropped\n' }],
      );
      await dropped.drop();
      expect(await b.getNarinfo(hashes[1]!)).toBeNull();
      await Promise.all([a.close(), b.close()]);
    });

    test('a narinfo condemned at its version is not served, and a group published again replaces it; never another', async () => {
      const [a, b] = await open();
      const hash = `${HASH.slice(0, 31)}6`;
      expect(await (await a.storeGroup([], [{ hash, text: 'damaged\n' }])).publish([true])).toEqual([true]);
      const { version } = (await a.getNarinfo(hash))!;
      // Condemned at another version (a copy replaced since): what is there stays served and kept.
      await a.condemnNarinfo!(hash, 'an-earlier-version');
      expect((await a.getNarinfo(hash))?.text).toBe('damaged\n');
      expect(await (await a.storeGroup([], [{ hash, text: 'other\n' }])).publish([true])).toEqual([false]);
      await a.condemnNarinfo!(hash, version);
      expect(await a.getNarinfo(hash)).toBeNull();
      expect(await a.narinfoVersion(hash)).toBeNull();
      expect(await (await a.storeGroup([], [{ hash, text: 'whole\n' }])).publish([true])).toEqual([true]);
      expect((await a.getNarinfo(hash))?.text).toBe('whole\n');
      // Another writer still reading the damaged copy (a directory's first pack) condemns it as its
      // store does, then reads the repaired one.
      const seen = (await b.getNarinfo(hash))!;
      if (seen.text === 'damaged\n') await b.condemnNarinfo!(hash, seen.version);
      expect((await b.getNarinfo(hash))?.text).toBe('whole\n');
      // The repaired copy is never replaced again, by this writer or another.
      expect(await (await a.storeGroup([], [{ hash, text: 'again\n' }])).publish([true])).toEqual([false]);
      expect(await (await b.storeGroup([], [{ hash, text: 'theirs\n' }])).publish([true])).toEqual([false]);
      expect((await b.getNarinfo(hash))?.text).toBe('whole\n');
      expect(await b.listNarinfos()).toEqual([hash]);
      await Promise.all([a.close(), b.close()]);
    });

    test('a spooled NAR is moved in, streamed back out and deleted', async () => {
      const [a, b] = await open();
      const body = 'x'.repeat(100_000);
      const NAR = narName(body, '.nar.br');
      const spooled = join(a.spoolDir, 'upload.tmp');
      await writeFile(spooled, body);
      expect(await a.hasNar(NAR)).toBe(false);
      await a.putNar(NAR, spooled);
      await expect(readFile(spooled)).rejects.toThrow(/ENOENT/);
      expect(await b.hasNar(NAR)).toBe(true);
      const [listed, ...more] = await b.listNars();
      expect(more).toEqual([]);
      expect(listed?.file).toBe(NAR);
      // Written just now (a bucket's clock, to the second).
      expect(Math.abs(Date.now() - listed!.modifiedMs)).toBeLessThan(60_000);
      const nar = await b.getNar(NAR);
      expect(nar?.size).toBe(body.length);
      expect(await text(nar!.stream)).toBe(body);
      await a.deleteNar(NAR);
      expect(await b.getNar(NAR)).toBeNull();
      expect(await b.listNars()).toEqual([]);
      await Promise.all([a.close(), b.close()]);
    });
  });
}
