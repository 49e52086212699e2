/** `mxc submit [FILE]`: reads a job (store path, file or JSON; stdin by default), validates it, sends it, optionally waits. */
import { JobInputError, readJobInput } from '../../compiler/job-input.js';
import * as api from '../../spec/api.js';
import * as apiJobs from '../../spec/api-jobs.js';
import type { JobSpec } from '../../spec/job.js';
import { ApiClient, type ClientOptions } from '../client.js';
import { CliError } from '../errors.js';
import { printableLine, printJson, workloadStatus } from '../output.js';
import { waitForJob } from './wait.js';

export interface SubmitOptions extends ClientOptions {
  json?: boolean;
  wait?: boolean;
  timeout?: string;
  push?: boolean;
}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) {
    throw new CliError(
      'no job given: pipe `nix-build examples/x --no-out-link` into this command, or pass a file path',
      2,
    );
  }
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The job a command was given: a store path, a file, JSON, or stdin (`-` or nothing). */
export async function readJobArgument(file: string | undefined): Promise<JobSpec> {
  try {
    const input = file ? (file === '-' ? await readStdin() : file) : await readStdin();
    return (await readJobInput(input, file && file !== '-' ? file : 'stdin')).spec;
  } catch (err) {
    if (err instanceof JobInputError) throw new CliError(err.message, 2, undefined, { cause: err });
    throw err;
  }
}

export async function submit(file: string | undefined, opts: SubmitOptions): Promise<void> {
  // Checked before anything is pushed or submitted: a usage error (exit 2) must change nothing.
  const timeout = Number(opts.timeout ?? '300');
  if (!Number.isFinite(timeout) || timeout <= 0)
    throw new CliError(`--timeout takes a number of seconds, got "${opts.timeout}"`, 2);
  const spec = await readJobArgument(file);
  const client = new ApiClient(opts);
  if (opts.push !== false) {
    const { pushJobClosure } = await import('./push-closure.js');
    await pushJobClosure(client, spec, { quiet: opts.json === true });
  }
  const since = Date.now() - 1000;
  const res = await client.post('/api/jobs', api.SubmitResult, spec);
  const rolling = res.changed && res.workloads.length === 0 && !spec.cron_schedule;
  if (spec.cron_schedule && !opts.json) {
    process.stdout.write(
      `${res.job.key} version ${res.version} runs on its schedule "${spec.cron_schedule}" (UTC)\n`,
    );
    return;
  }
  if (!opts.wait || spec.cron_schedule) {
    if (opts.json) printJson(res);
    else if (rolling) {
      process.stdout.write(
        `${res.job.key}: rolling update to version ${res.version} started; follow it with \`mxc jobs show ${res.job.key}\`\n`,
      );
    } else if (res.changed) {
      process.stdout.write(
        `submitted ${res.job.key} version ${res.version}: ${res.workloads.length} workload(s)\n`,
      );
      for (const w of res.workloads) process.stdout.write(`  ${w}\n`);
    } else
      process.stdout.write(
        `${res.job.key} is unchanged (version ${res.version}); ${await unchangedNote(client, res.job.id, spec)}\n`,
      );
    return;
  }
  if (!opts.json)
    process.stderr.write(
      res.changed
        ? `submitted ${res.job.key} version ${res.version}${rolling ? ': rolling update' : ''}; waiting until it is up\n`
        : `${res.job.key} is unchanged (version ${res.version}); checking that it is up\n`,
    );
  const result = await waitForJob(client, res.job.id, {
    timeoutMs: timeout * 1000,
    quiet: opts.json === true,
    since,
    rolling,
    version: res.version,
  });
  if (opts.json)
    printJson({
      ...res,
      ok: result.ok,
      reason: result.reason || undefined,
      workloads: result.workloads,
      update: result.update,
    });
  else {
    if (rolling && result.update)
      process.stdout.write(
        `${res.job.key}: rolling update to version ${res.version} ${result.update.status}: ${printableLine(result.update.message)}\n`,
      );
    else
      for (const w of result.workloads)
        process.stdout.write(
          `${printableLine(`${w.id}  ${workloadStatus(w, false)}${w.node ? `  on ${w.node}` : ''}${w.health && w.health !== 'unknown' ? `  ${w.health}` : ''}`)}\n`,
        );
  }
  // One line: the reason holds an agent's words (a line break in them would start a forged line).
  if (!result.ok) throw new CliError(printableLine(result.reason), 1);
}

/**
 * What an unchanged submit says: nothing to do, unless instances of the service are not running (stopped
 * by hand: a submit of the same spec does not start them again, a restart does).
 */
async function unchangedNote(client: ApiClient, jobId: string, spec: JobSpec): Promise<string> {
  if (!spec.service) return 'nothing to do';
  const job = await client.get(`/api/jobs/${encodeURIComponent(jobId)}`, apiJobs.JobDetail);
  const live = new Set(
    job.workloads
      .filter(
        (w) => w.job_version === job.current_version && ['pending', 'starting', 'running'].includes(w.status),
      )
      .map((w) => w.instance),
  );
  if (live.size >= job.spec.instances) return 'nothing to do';
  return `but ${live.size} of its ${job.spec.instances} instance(s) run: \`mxc jobs restart ${job.key}\` starts them again`;
}
