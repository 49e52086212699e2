/** bin/mxc.js's V8 code cache of the bundle: written on a first run, reused, replaced when bad, refused in a folder others can write. */
import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { type DirectoryResult, dir as tmpDir } from 'tmp-promise';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';

const bin = repoPath('bin', 'mxc.js');
let tmp: DirectoryResult;
beforeEach(async () => {
  tmp = await tmpDir({ prefix: 'mxc-code-cache-', unsafeCleanup: true });
});
afterEach(async () => {
  await tmp.cleanup();
});

const version = (env: Record<string, string>) =>
  execa(process.execPath, [bin, '--version'], { env: { ...env, HOME: tmp.path }, extendEnv: true });

describe('code cache', () => {
  it('is written by the first run in a private folder and read, unchanged, by the next', async () => {
    const cache = join(tmp.path, 'cache');
    expect((await version({ MXC_CODE_CACHE_DIR: cache })).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const files = (await readdir(cache)).sort();
    expect(files.some((f) => /^mxc\.cjs-[0-9a-f]+-[0-9a-f]+\.v8$/.test(f))).toBe(true);
    expect((await stat(cache)).mode & 0o777).toBe(0o700);
    const entry = join(cache, files.find((f) => f.startsWith('mxc.cjs-'))!);
    expect((await stat(entry)).mode & 0o777).toBe(0o600);
    const before = await readFile(entry);

    expect((await version({ MXC_CODE_CACHE_DIR: cache })).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect((await readdir(cache)).sort()).toEqual(files);
    expect((await readFile(entry)).equals(before)).toBe(true);
  });

  it('replaces an entry V8 rejects, and the command still runs', async () => {
    const cache = join(tmp.path, 'cache');
    await version({ MXC_CODE_CACHE_DIR: cache });
    const entry = join(cache, (await readdir(cache)).find((f) => f.startsWith('mxc.cjs-'))!);
    await writeFile(entry, Buffer.alloc(4096, 7));
    expect((await version({ MXC_CODE_CACHE_DIR: cache })).exitCode).toBe(0);
    expect((await readFile(entry)).equals(Buffer.alloc(4096, 7))).toBe(false);
  });

  it('is neither read nor written in a folder others can write, nor when off', async () => {
    const open = join(tmp.path, 'open');
    await version({ MXC_CODE_CACHE_DIR: open });
    for (const f of await readdir(open)) await writeFile(join(open, f), Buffer.alloc(16));
    await chmod(open, 0o777);
    const planted = await readdir(open);
    expect((await version({ MXC_CODE_CACHE_DIR: open })).exitCode).toBe(0);
    // Not rewritten: the (bad) entries stay as planted, so they were not taken into account either.
    for (const f of planted) expect((await readFile(join(open, f))).equals(Buffer.alloc(16))).toBe(true);

    const xdg = join(tmp.path, 'xdg');
    expect((await version({ MXC_CODE_CACHE_DIR: 'off', XDG_CACHE_HOME: xdg })).exitCode).toBe(0);
    await expect(readdir(xdg)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
