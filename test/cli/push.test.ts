/**
 * `mxc push [PATH…]`, the real CLI against a real coordinator: uploads the closures of the paths given
 * (or piped in) that the cache lacks, says what it did (`--json` for scripts), needs push scope, and
 * refuses an empty call as a usage error.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { closureOf, nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { clientTokens, startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { mxc } from './up-harness.js';

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
    const r = await mxc(['push', root], { env: env(tokens.viewer!) });
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/could not upload the closure: .*\[\w+\]/);
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
});
