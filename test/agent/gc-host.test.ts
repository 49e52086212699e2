/**
 * `mxc agent gc` on an agent that uses the host's store deletes only what that agent fetched and no
 * root keeps: a path the machine's owner built (unrooted, `nix-build --no-out-link`) is theirs, and it
 * used to go with everything else a plain `nix-store --gc` finds.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { fetchedListOf, recordFetched, runAgentGc } from '../../agent/gc.js';
import { isValidPath, nixBuild } from '../../lib/nix.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** An unrooted path of its own in the host's store; `refers` puts another path in it (a reference). */
async function unrootedPath(name: string, refers?: string): Promise<string> {
  const tag = randomBytes(6).toString('hex');
  const content = refers ? `\${builtins.storePath ${refers}}` : tag;
  const [p] = await nixBuild([
    '-E',
    `let bb = builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; }; in derivation { name = "${name}-${tag}"; system = builtins.currentSystem; builder = "\${bb}/busybox"; args = [ "sh" "-c" "echo ${content} > $out" ]; }`,
  ]);
  return p!;
}

it("deletes the dead paths the agent fetched and nothing of the host's own", async () => {
  const state = await mkdtemp(join(tmpdir(), 'mxc-gc-host-'));
  dirs.push(state);
  const owners = await unrootedPath('owners-build');
  const fetched = await unrootedPath('agent-fetched');

  // Nothing recorded: nothing deleted, even though both are garbage to nix.
  expect(await runAgentGc({ stateDir: state })).toEqual({ freedBytes: 0, deleted: 0, paths: [] });
  expect([await isValidPath(owners), await isValidPath(fetched)]).toEqual([true, true]);

  await recordFetched(state, [fetched]);
  const r = await runAgentGc({ stateDir: state });
  expect(r.paths).toEqual([fetched]);
  expect(r.freedBytes).toBeGreaterThan(0);
  expect([await isValidPath(owners), await isValidPath(fetched)]).toEqual([true, false]);
  expect(await readFile(fetchedListOf(state), 'utf8')).toBe('');
  // The owner's path is left for them (tidied here, as the test made it).
  await recordFetched(state, [owners]);
  await runAgentGc({ stateDir: state });

  // A fetched path one of the owner's own paths refers to is alive to nix: it stays, the rest go, and
  // the collection does not fail for it.
  const referred = await unrootedPath('agent-fetched-referred');
  const other = await unrootedPath('agent-fetched-other');
  const ownersReferrer = await unrootedPath('owners-referrer', referred);
  await recordFetched(state, [referred, other]);
  const partly = await runAgentGc({ stateDir: state });
  expect(partly.paths).toEqual([other]);
  expect([await isValidPath(referred), await isValidPath(ownersReferrer)]).toEqual([true, true]);
  expect(await readFile(fetchedListOf(state), 'utf8')).toBe(`${referred}\n`);
  await recordFetched(state, [ownersReferrer]);
  await runAgentGc({ stateDir: state });
}, 120_000);
