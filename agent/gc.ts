/**
 * The agent's store garbage: each workload's closure is rooted under `<stateDir>/gcroots/<workload>/`
 * while the workload exists. `collectGarbage` (`mxc agent gc`, or automatic when the store's filesystem
 * runs low) never deletes a live closure. In the agent's own store (`--store-root`) it deletes every
 * path no root keeps; in the host's store it deletes only paths this agent fetched (recorded in
 * `<stateDir>/fetched-paths`) that no root keeps: the rest of that store is its owner's.
 */
import { createHash } from 'node:crypto';
import {
  appendFile,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  statfs,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../lib/exec.js';
import { toNixBase32 } from '../lib/nix-base32.js';

export interface GcOptions {
  stateDir: string;
  /** Chroot store root (`nix-store --store DIR`); unset: the host store. */
  storeRoot?: string;
  signal?: AbortSignal;
}

export interface GcResult {
  /** Bytes freed: the NAR sizes of the deleted paths. */
  freedBytes: number;
  /** Store paths deleted. */
  deleted: number;
  /** The deleted store paths. */
  paths: string[];
}

/** The directory holding a workload's root links. */
export function workloadRootDir(stateDir: string, workloadId: string): string {
  return join(stateDir, 'gcroots', workloadId);
}

/** Where `realiseClosure({ gcRoot })` should put a workload's roots (creates the directory). */
export async function prepareWorkloadRoot(stateDir: string, workloadId: string): Promise<string> {
  const dir = workloadRootDir(stateDir, workloadId);
  await mkdir(dir, { recursive: true });
  return join(dir, 'root');
}

/**
 * Drops a workload's roots; its closure becomes collectable unless another root keeps it. The
 * store's own link to the removed root goes stale and Nix removes it at the next collection.
 */
export async function removeWorkloadRoots(stateDir: string, workloadId: string): Promise<void> {
  await rm(workloadRootDir(stateDir, workloadId), { recursive: true, force: true });
}

/** Drops the roots of every workload not in `keep` (an agent start: nothing of a previous run survives). */
export async function removeStaleRoots(stateDir: string, keep: Iterable<string> = []): Promise<string[]> {
  const alive = new Set(keep);
  const ids = await readdir(join(stateDir, 'gcroots')).catch(() => [] as string[]);
  const removed = ids.filter((id) => !alive.has(id));
  await Promise.all(removed.map((id) => removeWorkloadRoots(stateDir, id)));
  return removed;
}

/** Where an agent on the host's store lists the store paths it fetched, one a line. */
export function fetchedListOf(stateDir: string): string {
  return join(stateDir, 'fetched-paths');
}

const STORE_PATH = /^\/nix\/store\/[0-9a-z]{32}-[^/\s]+$/;

/** Records store paths this agent fetched into the host's store (what its collections may delete). */
export async function recordFetched(stateDir: string, paths: readonly string[]): Promise<void> {
  const ok = paths.filter((p) => STORE_PATH.test(p));
  if (ok.length) await appendFile(fetchedListOf(stateDir), ok.map((p) => `${p}\n`).join(''));
}

async function readFetched(stateDir: string): Promise<Set<string>> {
  const text = await readFile(fetchedListOf(stateDir), 'utf8').catch(() => '');
  return new Set(text.split('\n').filter((l) => STORE_PATH.test(l)));
}

/** Paths per nix command line. */
const ARGS_BATCH = 1000;

/**
 * Deletes what no GC root (nor a running nix) keeps: in a chroot store everything (`nix-store --store
 * DIR --gc`), in the host's store only what this agent fetched (`nix-store --delete`). Nix reports what
 * it freed in MiB with two decimals; the bytes are counted from the NAR sizes of the dead paths instead,
 * listed just before.
 */
export async function collectGarbage(opts: GcOptions): Promise<GcResult> {
  const store = opts.storeRoot ? ['--store', opts.storeRoot] : [];
  const nix = (args: string[]) =>
    run('nix-store', [...store, ...args, '--option', 'substituters', ''], {
      signal: opts.signal,
      timeoutMs: 60 * 60_000,
    });
  const deletedIn = (stderr: string) =>
    [...stderr.matchAll(/^deleting '(\/nix\/store\/[^']+)'$/gm)]
      .map((m) => m[1]!)
      .filter((p) => STORE_PATH.test(p));
  try {
    const fetched = opts.storeRoot ? null : await readFetched(opts.stateDir);
    if (fetched?.size === 0) return { freedBytes: 0, deleted: 0, paths: [] };
    const dead = (await nix(['--gc', '--print-dead'])).stdout
      .split('\n')
      .filter((l) => STORE_PATH.test(l) && (fetched === null || fetched.has(l)));
    const sizes = await narSizes(nix, dead);
    let paths: string[] = [];
    if (fetched === null) paths = deletedIn((await nix(['--gc'])).stderr);
    else {
      // A path that came alive since --print-dead (a workload rooted it, or a path of the host's owner
      // refers to it) makes nix refuse its whole batch: the others go one by one, the live ones stay.
      await inBatchesOrOneByOne(dead, async (batch) => {
        paths.push(...deletedIn((await nix(['--delete', ...batch])).stderr));
      });
      // The deleted leave the list, read again now: paths recorded while this ran stay on it.
      const gone = new Set(paths);
      const kept = [...(await readFetched(opts.stateDir))].filter((p) => !gone.has(p));
      const list = fetchedListOf(opts.stateDir);
      await writeFile(`${list}.tmp`, kept.map((p) => `${p}\n`).join(''));
      await rename(`${list}.tmp`, list);
    }
    const freedBytes = paths.reduce((n, p) => n + (sizes.get(p) ?? 0), 0);
    return { freedBytes, deleted: paths.length, paths };
  } catch (err) {
    throw new Error(
      `garbage collection of the ${opts.storeRoot ? `store under ${opts.storeRoot}` : 'host store'} failed`,
      { cause: err },
    );
  }
}

/**
 * Runs `fn` on `paths` ARGS_BATCH at a time; a batch it fails is tried again path by path, and a path
 * that fails alone is left out.
 */
async function inBatchesOrOneByOne(
  paths: readonly string[],
  fn: (batch: readonly string[]) => Promise<void>,
): Promise<void> {
  for (let i = 0; i < paths.length; i += ARGS_BATCH) {
    const batch = paths.slice(i, i + ARGS_BATCH);
    try {
      await fn(batch);
    } catch {
      for (const p of batch) await fn([p]).catch(() => {});
    }
  }
}

/**
 * NAR sizes of store paths; one nix refuses (not valid, which `--print-dead` may list) counts 0, and no
 * longer makes every size of its batch 0.
 */
async function narSizes(
  nix: (args: string[]) => Promise<{ stdout: string }>,
  paths: readonly string[],
): Promise<Map<string, number>> {
  const sizes = new Map<string, number>();
  await inBatchesOrOneByOne(paths, async (batch) => {
    const out = (await nix(['--query', '--size', ...batch])).stdout.split('\n');
    for (const [i, p] of batch.entries()) sizes.set(p, Number(out[i]) || 0);
  });
  return sizes;
}

/** For `mxc agent gc`: one collection of the agent's store, keeping every workload's closure. */
export async function runAgentGc(opts: { stateDir: string; storeRoot?: string }): Promise<GcResult> {
  return collectGarbage(opts);
}

/** Free space, in MiB, of the filesystem holding the store (the chroot store's, or /nix/store's). */
export async function storeFreeMb(storeRoot?: string): Promise<number> {
  const dir = storeRoot ? storeRoot : '/nix/store';
  const s = await statfs(dir);
  return Math.floor((s.bavail * s.bsize) / 1048576);
}

/**
 * Collects when the store's filesystem has less than `minFreeMb` free. Returns the result, or null
 * when there was enough space.
 */
export async function collectIfLow(opts: GcOptions & { minFreeMb: number }): Promise<GcResult | null> {
  const free = await storeFreeMb(opts.storeRoot);
  if (free >= opts.minFreeMb) return null;
  return collectGarbage(opts);
}

/**
 * Registers `paths` as indirect GC roots at `<gcRoot>`, `<gcRoot>-2`, … exactly as
 * `nix-store --add-root <gcRoot> --realise` does (a symlink to the path, and a link to that symlink in
 * the store's gcroots/auto named by the SHA-1 of its location), without starting nix. Only for paths
 * this agent has realised and verified already.
 */
export async function addIndirectRoots(gcRoot: string, paths: string[], storeRoot?: string): Promise<void> {
  const auto = join(storeRoot ?? '/', 'nix', 'var', 'nix', 'gcroots', 'auto');
  await Promise.all(
    paths.map(async (p, i) => {
      const link = i === 0 ? gcRoot : `${gcRoot}-${i + 1}`;
      await replaceSymlink(p, link);
      const name = toNixBase32(createHash('sha1').update(link).digest());
      await replaceSymlink(link, join(auto, name), auto);
    }),
  );
}

/**
 * `ln -sfn target link`, in one system call when `link` is new (a workload's roots always are):
 * an existing link is replaced, and a missing `makeDir` is made first.
 */
async function replaceSymlink(target: string, link: string, makeDir?: string): Promise<void> {
  try {
    await symlink(target, link);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') await rm(link, { force: true });
    else if (code === 'ENOENT' && makeDir) await mkdir(makeDir, { recursive: true });
    else throw err;
    await symlink(target, link);
  }
}
