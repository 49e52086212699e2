/** Pushes a job's closure to the coordinator's cache before submit (only what is missing), showing progress. */
import { PushError, pushClosure } from '../../compiler/push.js';
import type { JobSpec } from '../../spec/job.js';
import type { ApiClient } from '../client.js';
import { CliError } from '../errors.js';
import { MiB, progress } from '../output.js';

export async function pushJobClosure(
  client: ApiClient,
  spec: JobSpec,
  opts: { quiet: boolean },
): Promise<void> {
  if (spec.mxc.closure.length === 0) return;
  try {
    const r = await pushClosure({
      coordinator: client.base,
      token: client.token,
      paths: spec.mxc.closure,
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
    if (!opts.quiet && r.uploaded.length) {
      process.stderr.write(
        `uploaded ${r.uploaded.length} path(s), ${MiB(r.bytes)}; ${r.skipped} already in the cache\n`,
      );
    }
  } catch (err) {
    if (err instanceof PushError)
      throw new CliError(
        `could not upload the closure: ${err.message} [${err.code}]`,
        err.code === 'PUSH_PATH_MISSING' ? 2 : 1,
        undefined,
        { cause: err },
      );
    throw err;
  }
}
