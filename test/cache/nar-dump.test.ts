// The in-process NAR writer must produce exactly the bytes of `nix-store --dump`.
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, expect, test } from 'vitest';
import { narInto, narStream } from '../../lib/nar-dump.js';
import { buildClosure, dumpNar } from './fixtures.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

test('matches nix-store --dump on a real closure', async () => {
  const c = await buildClosure('nar-dump');
  for (const p of [c.root, c.lib, c.busybox])
    expect((await buffer(narStream(p))).equals(await dumpNar(p)), p).toBe(true);
});

/** narInto's NAR of `p`, in a buffer of `size` bytes after a 3-byte prefix that must stay as it was. */
function whole(p: string, size: number): Buffer {
  const buf = Buffer.alloc(3 + size, 0xee);
  narInto(p, buf, 3);
  expect(buf.subarray(0, 3).equals(Buffer.alloc(3, 0xee))).toBe(true);
  return buf.subarray(3);
}

test('narInto writes the same bytes into a buffer of the recorded size, and refuses any other size', async () => {
  const c = await buildClosure('nar-dump-whole');
  for (const p of [c.root, c.lib, c.busybox]) {
    const nix = await dumpNar(p);
    expect(whole(p, nix.length).equals(nix), p).toBe(true);
    expect(() => whole(p, nix.length - 8)).toThrow(/changed on disk/);
    expect(() => whole(p, nix.length + 8)).toThrow(/changed on disk/);
  }
});

test('matches nix-store --dump on odd trees: empty files, symlinks, executables, unicode and sorting', async () => {
  const d = await mkdtemp(join(tmpdir(), 'mxc-nar-'));
  dirs.push(d);
  await mkdir(join(d, 'sub', 'deeper'), { recursive: true });
  await mkdir(join(d, 'empty-dir'));
  await writeFile(join(d, 'empty'), '');
  await writeFile(join(d, 'seven'), '1234567');
  await writeFile(join(d, 'eight'), '12345678');
  await writeFile(join(d, 'B-upper'), 'b');
  await writeFile(join(d, 'a-lower'), 'a');
  await writeFile(join(d, 'ünïcödé'), 'u');
  await writeFile(join(d, 'sub', 'deeper', 'run'), '#!/bin/sh\n', { mode: 0o755 });
  await writeFile(join(d, 'big'), Buffer.alloc(3 * 1024 * 1024 + 5, 7));
  await symlink('sub/deeper/run', join(d, 'link'));
  await symlink('/nonexistent/target', join(d, 'dangling'));
  const { execa } = await import('execa');
  const nix = Buffer.from((await execa('nix-store', ['--dump', d], { encoding: 'buffer' })).stdout);
  expect((await buffer(narStream(d))).equals(nix)).toBe(true);
  expect(whole(d, nix.length).equals(nix)).toBe(true);
  const single = join(d, 'seven');
  const nixSingle = Buffer.from(
    (await execa('nix-store', ['--dump', single], { encoding: 'buffer' })).stdout,
  );
  expect((await buffer(narStream(single))).equals(nixSingle)).toBe(true);
  expect(whole(single, nixSingle.length).equals(nixSingle)).toBe(true);
});
