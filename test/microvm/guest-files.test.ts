/**
 * The host-side pieces of a microVM that need no QEMU: the cpio writer (checked by busybox cpio),
 * the console protocol parser, and the closure-only store view (checked against the real store).
 */
import { lstat, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { buildCpio } from '../../agent/microvm/cpio.js';
import { envScript } from '../../agent/microvm/guest-files.js';
import { parseGuestLine } from '../../agent/microvm/guest-protocol.js';
import { buildStoreView } from '../../agent/microvm/store-view.js';
import { run } from '../../lib/exec.js';
import { closureOf, nixBuild } from '../../lib/nix.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'mxc-microvm-unit-'));
  dirs.push(d);
  return d;
}

describe('cpio', () => {
  test('busybox cpio lists what buildCpio wrote, device nodes and symlinks included', async () => {
    const dir = await tmp();
    const archive = buildCpio([
      { kind: 'dir', path: 'bin' },
      { kind: 'file', path: 'bin/hello', data: 'echo hi\n', mode: 0o755 },
      { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
      { kind: 'chardev', path: 'console', major: 5, minor: 1 },
    ]);
    await writeFile(join(dir, 'a.cpio'), archive);
    const { stdout } = await run('busybox', ['sh', '-c', `busybox cpio -tv < ${join(dir, 'a.cpio')}`]);
    const lines = stdout.trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^d.* bin$/);
    expect(lines[1]).toMatch(/^-rwxr-xr-x .* bin\/hello$/);
    expect(lines[2]).toMatch(/^l.* bin\/sh -> busybox$/);
    expect(lines[3]).toMatch(/^crw------- .* console$/);
  });
});

describe('guest protocol', () => {
  test('tagged lines are demultiplexed; everything else is console noise', () => {
    expect(parseGuestLine('@@mxc:o:web:3:a: b: c\r')).toEqual({
      kind: 'output',
      process: 'web',
      run: 3,
      stream: 'stdout',
      line: 'a: b: c',
    });
    expect(parseGuestLine('@@mxc:e:web:1:')).toEqual({
      kind: 'output',
      process: 'web',
      run: 1,
      stream: 'stderr',
      line: '',
    });
    expect(parseGuestLine('@@mxc:x:web:2:143')).toEqual({
      kind: 'exit',
      process: 'web',
      run: 2,
      exitCode: 143,
    });
    expect(parseGuestLine('@@mxc:s:a.b-c:1')).toEqual({ kind: 'started', process: 'a.b-c', run: 1 });
    expect(parseGuestLine('@@mxc:r')).toEqual({ kind: 'ready' });
    expect(parseGuestLine('[    0.6] PCI: Fatal')).toEqual({ kind: 'noise', line: '[    0.6] PCI: Fatal' });
  });

  test('environment values are quoted for sh and bad names are refused', () => {
    expect(envScript({ A: "it's $HOME" })).toBe(`export A='it'\\''s $HOME'\n`);
    expect(() => envScript({ 'BAD-NAME': 'x' })).toThrow(/BAD-NAME/);
  });
});

describe('store view', () => {
  test('holds exactly the closure, as hard links into the store', async () => {
    const [probe] = await nixBuild([join(import.meta.dirname, 'fixtures', 'scripts.nix'), '-A', 'probe']);
    const closure = await closureOf([probe!]);
    const view = join(await tmp(), 'store');
    const stats = await buildStoreView('/nix/store', closure, view);
    expect((await readdir(view)).sort()).toEqual(closure.map((p) => basename(p)).sort());
    expect(stats).toMatchObject({ paths: 2, copied: 0 });
    const a = await lstat(probe!);
    const b = await lstat(join(view, basename(probe!)));
    expect(b.ino).toBe(a.ino);
  });
});
