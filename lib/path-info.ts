/**
 * Metadata of local store paths (NAR hash and size, references, deriver) from one
 * `nix path-info --json` call per batch, the facts a binary cache upload claims.
 */
import * as z from 'zod';
import { isSameCommand, type RunOptions, run, type StartedCommand, settleStarted } from './exec.js';
import { NIX_OFFLINE_OPTIONS } from './nix.js';

export interface PathInfo {
  path: string;
  /** As nix prints it (SRI `sha256-…` on nix 2.8). */
  narHash: string;
  narSize: number;
  references: string[];
  deriver?: string;
}

const PathInfoJson = z.array(
  z.object({
    path: z.string(),
    narHash: z.string().optional(),
    narSize: z.number().int().nonnegative().optional(),
    references: z.array(z.string()).optional(),
    deriver: z.string().optional(),
    valid: z.boolean().optional(),
  }),
);

/** Keeps command lines well below ARG_MAX even for long store path names. */
const BATCH = 500;

/** Path info for each given path, in input order; throws naming a path that is not valid locally. */
export function queryPathInfos(paths: readonly string[], opts: RunOptions = {}): Promise<PathInfo[]> {
  return pathInfos(paths, [], opts);
}

/**
 * Path info for the whole closure of the given paths (each path once), from one `nix path-info
 * --recursive` per batch of roots instead of a closure query followed by a path-info query.
 */
export async function queryClosureInfos(
  roots: readonly string[],
  opts: RunOptions & { started?: StartedCommand } = {},
): Promise<PathInfo[]> {
  const seen = new Map<string, PathInfo>();
  for (const info of await pathInfos(roots, ['--recursive'], opts)) seen.set(info.path, info);
  return [...seen.values()];
}

async function pathInfos(
  paths: readonly string[],
  flags: readonly string[],
  opts: RunOptions & { started?: StartedCommand },
): Promise<PathInfo[]> {
  const { started, ...runOpts } = opts;
  const argsFor = (batch: readonly string[]) => [
    '--extra-experimental-features',
    'nix-command',
    ...NIX_OFFLINE_OPTIONS,
    'path-info',
    '--json',
    ...flags,
    ...batch,
  ];
  // bin/push-early.js may have started the first call before the CLI loaded; any other is not needed.
  let early = started && isSameCommand(started, 'nix', argsFor(paths.slice(0, BATCH))) ? started : undefined;
  if (started && !early) started.kill();
  const out: PathInfo[] = [];
  for (let i = 0; i < paths.length; i += BATCH) {
    const args = argsFor(paths.slice(i, i + BATCH));
    const { stdout } = early ? await settleStarted(early, runOpts) : await run('nix', args, runOpts);
    early = undefined;
    const parsed = PathInfoJson.safeParse(JSON.parse(stdout));
    if (!parsed.success)
      throw new Error(`unexpected \`nix path-info --json\` output: ${parsed.error.message}`, {
        cause: parsed.error,
      });
    for (const p of parsed.data) {
      if (p.valid === false || p.narHash === undefined || p.narSize === undefined) {
        throw new Error(`${p.path} is not a valid path in the local nix store; build or realise it first`);
      }
      out.push({
        path: p.path,
        narHash: p.narHash,
        narSize: p.narSize,
        references: p.references ?? [],
        deriver: p.deriver,
      });
    }
  }
  return out;
}
