/**
 * `mxc push [PATH…]`, the real CLI against a real coordinator: uploads the closures of the paths given
 * (or piped in) that the cache lacks, says what it did (`--json` for scripts), needs push scope, and
 * refuses an empty call as a usage error.
 */
import { chmod, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { closureOf, NIX_OFFLINE_OPTIONS, nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { clientTokens, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { mxc } from './up-harness.js';

const early = createRequire(import.meta.url)('../../bin/push-early.js') as {
  pathInfoArgs(argv: string[]): string[] | null;
};

/** The `nix path-info` lib/path-info.ts runs for a push of `roots`. */
const pathInfoArgs = (roots: string[]) => [
  '--extra-experimental-features',
  'nix-command',
  ...NIX_OFFLINE_OPTIONS,
  'path-info',
  '--json',
  '--recursive',
  ...roots,
];

const ADMIN = 'push-test-admin-token';
let c: TestCoordinator;
let root: string;
let closure: string[];
const tokens: Record<string, string> = {};
const env = (token: string) => ({ MXC_COORDINATOR: c.url, MXC_API_TOKEN: token });

/** Which closure paths the cache serves a narinfo for. */
async function served(): Promise<string[]> {
  const out: string[] = [];
  for (const p of closure) {
    const hash = p.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    if ((await fetch(`${c.url}/cache/${hash}.narinfo`, { headers: { authorization: `Bearer ${ADMIN}` } })).ok)
      out.push(p);
  }
  return out;
}

beforeAll(async () => {
  [root] = (await nixBuild([repoPath('examples', 'hello_world')])) as [string];
  closure = await closureOf([root]);
  c = await startTestCoordinator('pglite', { tokens: { api: ADMIN } });
  Object.assign(tokens, await clientTokens(c, ADMIN, { ci: 'push', viewer: 'read' }));
}, 120_000);
afterAll(async () => {
  await c?.stop();
});

describe('mxc push', () => {
  test('a read token is refused and nothing is stored; no paths at all is a usage error', async () => {
    // A permission refusal exits 3, as every other command's does; --json names the cache's code.
    const r = await mxc(['push', root], { env: env(tokens.viewer!) });
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/could not upload the closure: .*\[CACHE_FORBIDDEN\]/);
    const j = await mxc(['push', '--json', root], { env: env(tokens.viewer!) });
    expect(j.exitCode).toBe(3);
    expect(JSON.parse(j.stdout || j.stderr).error.code).toBe('CACHE_FORBIDDEN');
    expect(await served()).toEqual([]);
    const none = await mxc(['push'], { env: env(tokens.ci!), input: '\n' });
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/no store paths given/);
  }, 60_000);

  test('uploads the whole closure of a path once; a second push, from stdin, finds it all there', async () => {
    const first = await mxc(['push', root], { env: env(tokens.ci!) });
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stderr).toMatch(
      new RegExp(`uploaded ${closure.length} path\\(s\\), [\\d.]+ MiB; 0 already in the cache`),
    );
    expect((await served()).sort()).toEqual([...closure].sort());

    const again = await mxc(['push', '--json'], { env: env(tokens.ci!), input: `${root}\n` });
    expect(again.exitCode, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ uploaded: [], skipped: closure.length, bytes: 0 });
  }, 60_000);

  test("a relative path is a file here (nix-build's ./result), not a flake reference", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mxc-push-rel-'));
    try {
      await symlink(root, join(dir, 'result'));
      const r = await mxc(['push', 'result', '--json'], { env: env(tokens.ci!), cwd: dir });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).skipped + JSON.parse(r.stdout).uploaded.length).toBe(closure.length);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test('bin/mxc.js starts nix path-info early for paths given as arguments, never for stdin, help or other spellings', () => {
    const argv = (...rest: string[]) => ['node', 'mxc.js', 'push', ...rest];
    const p = '/nix/store/00000000000000000000000000000000-a';
    const q = '/nix/store/11111111111111111111111111111111-b';
    expect(early.pathInfoArgs(argv(p))).toEqual(pathInfoArgs([p]));
    expect(early.pathInfoArgs(argv('--json', p, '-c', 'http://x', q, '--token', 't'))).toEqual(
      pathInfoArgs([p, q]),
    );
    for (const rest of [[], ['--json'], ['--help'], [p, '-h'], [p, 'result'], [p, '--token'], ['--', p]])
      expect(early.pathInfoArgs(argv(...rest)), rest.join(' ')).toBeNull();
    expect(early.pathInfoArgs(['node', 'mxc.js', 'build', p])).toBeNull();
  });

  test('runs one nix path-info, the one bin/mxc.js starts first (or, for stdin, its own), with the same arguments', async () => {
    // A nix first on PATH that logs its arguments (unit-separated, a line a run), then runs the real one.
    const dir = await mkdtemp(join(tmpdir(), 'mxc-push-nix-'));
    try {
      const real = (await execa('sh', ['-c', 'command -v nix'])).stdout.trim();
      const log = join(dir, 'nix.log');
      await writeFile(
        join(dir, 'nix'),
        `#!/bin/sh\nprintf '%s\\037' "$@" >> ${log}\nprintf '\\n' >> ${log}\nexec ${real} "$@"\n`,
      );
      await chmod(join(dir, 'nix'), 0o755);
      const PATH = `${dir}:${process.env.PATH}`;
      for (const [args, input] of [
        [[root], undefined],
        [['--json'], `${root}\n`],
      ] as const) {
        await writeFile(log, '');
        const r = await mxc(['push', ...args], { env: { ...env(tokens.ci!), PATH }, input });
        expect(r.exitCode, r.stderr).toBe(0);
        const runs = (await readFile(log, 'utf8')).split('\n').filter(Boolean);
        expect(runs.map((l) => l.split('\x1f').slice(0, -1))).toEqual([pathInfoArgs([root])]);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
