/**
 * `mxc build`: nix-builds a job expression (offline), then reads and validates the job JSON. Nix's own
 * error text (file and line) comes through unchanged.
 */

import { CommandError, isSameCommand, loadRunner, type StartedCommand } from '../lib/exec.js';
import { nixBuild, nixBuildArgs } from '../lib/nix.js';
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
  const earlyRead =
    opts.started && isSameCommand(opts.started, 'nix-build', nixBuildArgs(args))
      ? readFirstOutputEarly(opts.started, readJobInput)
      : undefined;
  let outs: string[];
  try {
    outs = await building;
  } catch (err) {
    if (err instanceof CommandError)
      throw new BuildError(`nix-build ${file} failed:\n${err.stderr.trim() || err.message}`, { cause: err });
    throw err;
  }
  if (outs.length !== 1) {
    throw new BuildError(
      `nix-build ${file} produced ${outs.length} outputs; a job expression must build exactly one JSON file (use -A)`,
    );
  }
  const { spec } = await (earlyRead?.(outs[0]!) ?? readJobInput(outs[0]!, outs[0]!));
  return { storePath: outs[0]!, spec };
}

/**
 * nix-build prints its out path once the build is done and the path is valid, then takes another
 * 1-3 ms to exit (its clean-up): the job is read and validated from the first path it prints
 * meanwhile. Returns the read for a path if it was that one; `buildJob` uses it only once nix-build
 * has succeeded with exactly that output (the same call on the same immutable store file gives the
 * same spec or the same error), and otherwise it is dropped.
 */
function readFirstOutputEarly(
  started: StartedCommand,
  readJobInput: (input: string, source: string) => Promise<{ spec: JobSpec }>,
): (path: string) => Promise<{ spec: JobSpec }> | undefined {
  let pending = Buffer.alloc(0);
  let early: { path: string; read: Promise<{ spec: JobSpec }> } | undefined;
  started.onStdout?.((chunk) => {
    if (early) return;
    pending = Buffer.concat([pending, chunk]);
    for (let end = pending.indexOf(10); end >= 0 && !early; end = pending.indexOf(10)) {
      const line = pending.subarray(0, end).toString();
      pending = pending.subarray(end + 1);
      if (!line.startsWith('/nix/store/')) continue;
      const read = readJobInput(line, line);
      read.catch(() => {}); // awaited only when nix-build succeeds with this one output
      early = { path: line, read };
    }
  });
  return (path) => (early?.path === path ? early.read : undefined);
}
