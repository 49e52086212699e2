/**
 * `mxc build`: nix-builds a job expression (offline), then reads and validates the job JSON. Nix's own
 * error text (file and line) comes through unchanged.
 */

import { CommandError, loadRunner, type StartedCommand } from '../lib/exec.js';
import { nixBuild } from '../lib/nix.js';
import type { JobSpec } from '../spec/job.js';

export interface BuildOptions {
  attr?: string;
  args?: Record<string, string>;
  argstrs?: Record<string, string>;
  /** The nix-build the launcher started already (bin/mxc.js); used when its arguments are these. */
  started?: StartedCommand;
}

export class BuildError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BuildError';
  }
}

export async function buildJob(
  file: string,
  opts: BuildOptions = {},
): Promise<{ storePath: string; spec: JobSpec }> {
  const args = [file];
  if (opts.attr) args.push('-A', opts.attr);
  for (const [k, v] of Object.entries(opts.args ?? {})) args.push('--arg', k, v);
  for (const [k, v] of Object.entries(opts.argstrs ?? {})) args.push('--argstr', k, v);
  // nix-build runs on another core while the job-spec schemas (zod) load, which takes about as long:
  // start it first (the runner loaded, it spawns before the import below begins), unless it runs already.
  if (!opts.started) await loadRunner();
  const building = nixBuild(args, { started: opts.started });
  building.catch(() => {}); // awaited below, after the import
  const { readJobInput } = await import('./job-input.js');
  let outs: string[];
  try {
    outs = await building;
  } catch (err) {
    if (err instanceof CommandError)
      throw new BuildError(`nix-build ${file} failed:\n${err.stderr.trim()}`, { cause: err });
    throw err;
  }
  if (outs.length !== 1) {
    throw new BuildError(
      `nix-build ${file} produced ${outs.length} outputs; a job expression must build exactly one JSON file (use -A)`,
    );
  }
  const { spec } = await readJobInput(outs[0]!, outs[0]!);
  return { storePath: outs[0]!, spec };
}
