/**
 * Realises a workload's closure before anything of it runs: `nix-store --realise` with the coordinator's
 * cache as the only substituter, its key as the only trusted key and signatures required. These
 * settings belong to the agent, never to the job. The realised roots are registered as GC roots.
 */
import { withDir } from 'tmp-promise';
import { CommandError, run } from '../lib/exec.js';
import { recordFetched } from './gc.js';
import { RealiseLog, type RealiseProgress } from './realise-log.js';

export type { RealiseProgress } from './realise-log.js';

export interface CacheTrust {
  /** e.g. http://127.0.0.1:4000/cache */
  url: string;
  /** `name:base64` */
  publicKey: string;
  /** A netrc file holding the agent token as the password for the cache's host (nix sends basic auth). */
  netrcFile?: string;
}

export interface RealiseOptions {
  paths: string[];
  /** Chroot store root (`nix-store --store DIR`); unset: the host store. */
  storeRoot?: string;
  cache?: CacheTrust | null;
  /**
   * Register each realised root as an indirect GC root: `<gcRoot>`, `<gcRoot>-2`, … (Nix's naming),
   * so the closure survives `nix-store --gc` until these links are removed.
   */
  gcRoot?: string;
  signal?: AbortSignal;
  /** Where the per-call scratch directory goes (see below); default the OS temp dir. */
  scratchDir?: string;
  /** Human lines worth logging: what is fetched and from where, Nix's warnings. */
  onLine?: (line: string) => void;
  /** Called when a path finished copying (`finished` set) or the totals became known. */
  onProgress?: (p: RealiseProgress, finished?: string) => void;
  /**
   * The agent's state dir: paths fetched into the host's store are recorded there, the only ones its
   * collections delete from that store (agent/gc.ts). Unused with `storeRoot` (the agent's own store).
   */
  stateDir?: string;
}

/** Nix refused or failed to realise the closure; `reason` is Nix's own words (warnings and errors). */
export class RealiseError extends Error {
  constructor(
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`nix could not realise the closure: ${reason}`, options);
    this.name = 'RealiseError';
  }
}

/** Nix options pinning trust to the coordinator's cache alone. */
export function trustOptions(cache: CacheTrust | null | undefined): string[] {
  return [
    '--option',
    'substituters',
    cache ? cache.url : '',
    '--option',
    'trusted-public-keys',
    cache ? cache.publicKey : '',
    '--option',
    'require-sigs',
    'true',
    '--option',
    'fallback',
    'false',
    // Every narinfo is read fresh from the cache: a path pushed a moment ago must not be hidden by a
    // cached "not found", and a narinfo seen earlier at the same URL (another coordinator on a reused
    // port, a cache rebuilt under a new key) must not stand in for what the cache holds now.
    '--option',
    'narinfo-cache-negative-ttl',
    '0',
    '--option',
    'narinfo-cache-positive-ttl',
    '0',
    ...(cache?.netrcFile ? ['--option', 'netrc-file', cache.netrcFile] : []),
  ];
}

/** Realises `paths` (and their closure); resolves with the final progress, rejects with RealiseError. */
export async function realiseClosure(opts: RealiseOptions): Promise<RealiseProgress> {
  // Each fetched path is recorded as it arrives (in order, one append after another): an agent killed
  // part way has its earlier fetches on the list that its collections delete from.
  let recorded: Promise<void> = Promise.resolve();
  const record = !opts.storeRoot && opts.stateDir ? opts.stateDir : null;
  const log = new RealiseLog({
    line: opts.onLine,
    progress: (p, finished) => {
      if (finished && record)
        recorded = recorded.then(() => recordFetched(record, [finished]).catch(() => {}));
      opts.onProgress?.(p, finished);
    },
  });
  if (opts.paths.length === 0) return log.snapshot();
  const store = opts.storeRoot ? ['--store', opts.storeRoot] : [];
  const root = opts.gcRoot ? ['--add-root', opts.gcRoot] : [];
  // Nix keeps a narinfo cache in $XDG_CACHE_HOME/nix shared by every nix process of the user, and
  // 2.8 breaks its rows when two processes first meet the same cache URL at once ("constraint
  // failed"). The TTLs above make it useless to us anyway, so each call gets a private one.
  await withDir(
    async ({ path: scratch }) => {
      try {
        await run(
          'nix-store',
          [
            ...store,
            '--realise',
            ...opts.paths,
            ...root,
            '--log-format',
            'internal-json',
            ...trustOptions(opts.cache),
          ],
          {
            signal: opts.signal,
            timeoutMs: 30 * 60_000,
            env: { XDG_CACHE_HOME: scratch },
            // An agent killed mid-fetch left it downloading on, beside its restarted self's.
            dieWithParent: true,
            onStderrLine: (l) => log.push(l),
          },
        );
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        const fallback =
          err instanceof CommandError ? `nix-store exited with code ${err.exitCode}` : String(err);
        throw new RealiseError(log.reason() || fallback, { cause: err });
      }
    },
    { tmpdir: opts.scratchDir, prefix: 'mxc-realise-', unsafeCleanup: true },
  ).finally(() => recorded);
  return log.complete();
}

/**
 * Creates the chroot store's database before any realisation: two nix processes creating a fresh
 * store at once fail with "SQLite database … is busy" (the schema setup does not retry).
 */
export async function initStore(storeRoot: string): Promise<void> {
  await run('nix-store', ['--store', storeRoot, '--init'], { timeoutMs: 60_000 });
}
