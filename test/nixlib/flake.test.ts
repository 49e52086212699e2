/**
 * flake.nix evaluates purely and offline, and its jobs are the same store paths as
 * `nix-build examples/<name>`, although the flake has a nixpkgs input: flake.lock pins it, so locking
 * needs no lookup, and inputs are fetched only when an output uses them (the package, app, dev shell).
 * The flake is copied (flake.nix, flake.lock, nixlib, examples, nix) to a temporary `path:` flake, so
 * the test neither needs git nor copies node_modules into the store.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../lib/exec.js';
import { NIX_OFFLINE_OPTIONS, nixBuild } from '../../lib/nix.js';
import { REPO } from './nix-eval.js';

const NIX = ['--extra-experimental-features', 'nix-command flakes', ...NIX_OFFLINE_OPTIONS];
let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mxc-flake-'));
  for (const entry of ['flake.nix', 'flake.lock', 'nixlib', 'examples', 'nix']) {
    await cp(join(REPO, entry), join(dir, entry), { recursive: true });
  }
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('flake.nix', () => {
  it('builds jobs.x86_64-linux.hello_world in pure mode to the same path as nix-build', async () => {
    const { stdout } = await run('nix', [
      ...NIX,
      'build',
      `path:${dir}#jobs.x86_64-linux.hello_world`,
      '--no-link',
      '--json',
    ]);
    const built = JSON.parse(stdout) as { outputs: { out: string } }[];
    const [viaNixBuild] = await nixBuild([join(REPO, 'examples/hello_world')]);
    expect(built[0]?.outputs.out).toBe(viaNixBuild);
  }, 60_000);

  it('lists a job for every example and exposes lib, the modules, the overlay and the package names', async () => {
    const evalAttr = async (attr: string, apply: string) =>
      JSON.parse(
        (await run('nix', [...NIX, 'eval', '--json', `path:${dir}#${attr}`, '--apply', apply])).stdout,
      );
    expect(await evalAttr('jobs.x86_64-linux', 'builtins.attrNames')).toEqual([
      'batch',
      'cron',
      'hello_world',
      'microvm',
      'nix_aurora',
      'pipeline',
      'web',
    ]);
    expect(await evalAttr('lib', 'lib: lib.MB')).toBe(1048576);
    expect(await evalAttr('nixosModules', 'builtins.attrNames')).toEqual([
      'agent',
      'coordinator',
      'default',
      'postgres',
    ]);
    expect(await evalAttr('overlays', 'builtins.attrNames')).toEqual(['default']);
    // Naming the outputs that use nixpkgs does not fetch it either (building them does).
    expect(await evalAttr('packages.x86_64-linux', 'builtins.attrNames')).toEqual(['default', 'mxc']);
    expect(await evalAttr('apps.x86_64-linux', 'builtins.attrNames')).toEqual(['default']);
  }, 60_000);
});
