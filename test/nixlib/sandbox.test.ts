/**
 * nixlib and every example build with a sandboxed Nix, as on NixOS and any multi-user install: each
 * example is built from nothing into a temporary chroot store (`--store DIR`), where Nix always
 * sandboxes builds, so a builder that reaches for a host file fails here on any machine. The flake,
 * which cannot import the host busybox purely, needs the README's `extra-sandbox-paths` on a cold,
 * sandboxed store: both halves of that claim are checked.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandError, run } from '../../lib/exec.js';
import { closureOf, NIX_OFFLINE_OPTIONS, nixBuild } from '../../lib/nix.js';
import { REPO } from './nix-eval.js';

const EXAMPLES = ['hello_world', 'web', 'pipeline', 'batch', 'cron', 'microvm', 'nix_aurora'];
const SANDBOX = ['--option', 'sandbox', 'true'];
const FLAKES = ['--extra-experimental-features', 'nix-command flakes'];
let scratch = '';

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'mxc-sandboxed-'));
});

afterAll(async () => {
  // A chroot store's files are read-only like any store's: make them writable to remove them.
  if (scratch) {
    await run('chmod', ['-R', 'u+w', scratch]).catch(() => {});
    await rm(scratch, { recursive: true, force: true });
  }
});

describe('sandboxed builds', () => {
  it('every example builds from a cold chroot store (always sandboxed) to the same paths as nix-build', async () => {
    const store = join(scratch, 'store');
    const files = EXAMPLES.map((e) => join(REPO, 'examples', e));
    const sandboxed = await nixBuild([...SANDBOX, '--store', store, ...files]);
    const host = await nixBuild([...SANDBOX, ...files]);
    expect(sandboxed).toHaveLength(EXAMPLES.length);
    expect(sandboxed).toEqual(host);
    // Really built there: the job JSON and its whole closure are valid paths of the chroot store.
    const closure = await closureOf(sandboxed, { store });
    expect(closure.some((p) => p.endsWith('-busybox'))).toBe(true);
    expect(closure.filter((p) => p.includes('-mxc-process-')).length).toBeGreaterThanOrEqual(EXAMPLES.length);
  }, 120_000);

  it('the flake on a cold sandboxed store fails without extra-sandbox-paths and builds with it', async () => {
    const flake = join(scratch, 'flake');
    for (const entry of ['flake.nix', 'flake.lock', 'nixlib', 'examples', 'nix'])
      await cp(join(REPO, entry), join(flake, entry), { recursive: true });
    const build = (store: string, extra: string[] = []) =>
      run('nix', [
        ...FLAKES,
        ...NIX_OFFLINE_OPTIONS,
        ...extra,
        'build',
        `path:${flake}#jobs.x86_64-linux.hello_world`,
        '--store',
        store,
        '--no-link',
        '--json',
      ]);
    const refused = await build(join(scratch, 'cold-1')).then(
      () => null,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(CommandError);
    expect((refused as CommandError).stderr).toContain("executing '/usr/bin/busybox'");

    const { stdout } = await build(join(scratch, 'cold-2'), [
      '--option',
      'extra-sandbox-paths',
      '/usr/bin/busybox',
    ]);
    const [viaNixBuild] = await nixBuild([join(REPO, 'examples/hello_world')]);
    expect((JSON.parse(stdout) as { outputs: { out: string } }[])[0]?.outputs.out).toBe(viaNixBuild);
  }, 120_000);
});
