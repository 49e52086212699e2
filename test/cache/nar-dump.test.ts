// The in-process NAR writer must produce exactly the bytes of `nix-store --dump`.
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, expect, test } from 'vitest';
import { narStream } from '../../lib/nar-dump.js';
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
  const single = join(d, 'seven');
  const nixSingle = Buffer.from(
    (await execa('nix-store', ['--dump', single], { encoding: 'buffer' })).stdout,
  );
  expect((await buffer(narStream(single))).equals(nixSingle)).toBe(true);
});
