/**
 * Uploads closures to the coordinator's cache (only what it lacks), showing progress: a job's closure
 * before submit, and `mxc push [PATH…]`, the store paths given or read from stdin (as `cachix push`).
 */
import { resolve } from 'node:path';
import { PushError, type PushResult, pushClosure } from '../../compiler/push.js';
import type { StartedCommand } from '../../lib/exec.js';
import type { JobSpec } from '../../spec/job.js';
import { ApiClient, type ClientOptions, exitCodeOf } from '../client.js';
import { CliError } from '../errors.js';
import { MiB, printJson, progress } from '../output.js';

/** Store paths one `mxc push` takes (arguments or stdin); each brings its whole closure. */
const MAX_ROOTS = 10_000;

export async function pushJobClosure(
  client: ApiClient,
  spec: JobSpec,
  opts: { quiet: boolean },
): Promise<void> {
  if (spec.mxc.closure.length === 0) return;
  await pushPaths(client, spec.mxc.closure, opts);
}

/**
 * `mxc push [PATH…]`: the closures of the paths (or of the whitespace-separated paths on stdin).
 * `pathInfo`: their `nix path-info`, started by bin/push-early.js before the CLI loaded.
 */
export async function push(
  paths: string[],
  opts: ClientOptions & { json?: boolean },
  pathInfo?: StartedCommand,
): Promise<void> {
  // A relative argument (`mxc push result`) is a file, not a flake reference: nix path-info needs it absolute.
  const roots = (paths.length ? paths : await pathsFromStdin()).map((p) => resolve(p));
  if (roots.length === 0) throw new CliError('no store paths given (as arguments or on stdin)', 2);
  if (roots.length > MAX_ROOTS)
    throw new CliError(`at most ${MAX_ROOTS} store paths a push (got ${roots.length})`, 2);
  const r = await pushPaths(new ApiClient(opts), roots, {
    quiet: opts.json === true,
    always: true,
    pathInfo,
  });
  if (opts.json) printJson({ uploaded: r.uploaded, skipped: r.skipped, bytes: r.bytes });
}

async function pathsFromStdin(): Promise<string[]> {
  if (process.stdin.isTTY)
    throw new CliError(
      'no store paths given: `mxc push PATH…`, or pipe them in (`nix-build … | mxc push`)',
      2,
    );
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').split(/\s+/).filter(Boolean);
}

/** Pushes the closures of `paths`; says what it did on stderr (when it uploaded anything, or `always`). */
async function pushPaths(
  client: ApiClient,
  paths: string[],
  opts: { quiet: boolean; always?: boolean; pathInfo?: StartedCommand },
): Promise<PushResult> {
  try {
    const r = await pushClosure({
      coordinator: await client.answering(),
      token: client.token,
      paths,
      pathInfo: opts.pathInfo,
      onProgress: opts.quiet
        ? undefined
        : (p) =>
            progress(
              'uploading closure',
              p.pathsDone,
              p.pathsTotal,
              `${MiB(p.bytesDone)} of ${MiB(p.bytesTotal)}`,
            ),
    });
    if (!opts.quiet && (r.uploaded.length || opts.always)) {
      process.stderr.write(
        `uploaded ${r.uploaded.length} path(s), ${MiB(r.bytes)}; ${r.skipped} already in the cache\n`,
      );
    }
    return r;
  } catch (err) {
    if (err instanceof PushError)
      throw new CliError(
        `could not upload the closure: ${err.message} [${err.code}]`,
        err.code === 'PUSH_PATH_MISSING' || err.code === 'PUSH_NOT_A_STORE_PATH'
          ? 2
          : err.status !== undefined
            ? exitCodeOf(err.status)
            : 1,
        err.code,
        { cause: err },
      );
    throw err;
  }
}
