/** `mxc build FILE.nix [-A attr] [--arg n v] [--argstr n v]`: builds and validates a job, prints its store path. */
import { BuildError, buildJob } from '../../compiler/build.js';
import type { StartedCommand } from '../../lib/exec.js';
import { CliError } from '../errors.js';
import { printJson } from '../output.js';
import { writeOut } from '../stdio.js';

export async function build(
  file: string,
  opts: { attr?: string; arg?: string[]; argstr?: string[]; json?: boolean },
  started?: StartedCommand,
) {
  const pairs = (list: string[] = [], flag: string) => {
    if (list.length % 2 !== 0) throw new CliError(`${flag} takes a name and a value`, 2);
    const out: Record<string, string> = {};
    for (let i = 0; i < list.length; i += 2) out[list[i]!] = list[i + 1]!;
    return out;
  };
  try {
    const r = await buildJob(file, {
      attr: opts.attr,
      args: pairs(opts.arg, '--arg'),
      argstrs: pairs(opts.argstr, '--argstr'),
      started,
    });
    if (opts.json) printJson(r.spec);
    else writeOut(`${r.storePath}\n`);
  } catch (err) {
    if (err instanceof BuildError) throw new CliError(err.message, 2, undefined, { cause: err });
    // Loaded by buildJob by now (it holds the zod schemas: not imported before nix-build runs).
    const { JobInputError } = await import('../../compiler/job-input.js');
    if (err instanceof JobInputError) throw new CliError(err.message, 2, undefined, { cause: err });
    throw err;
  }
}
