/** `mxc jobs list|show|stop|versions|endpoints`. */
import type * as z from 'zod';
import * as api from '../../spec/api.js';
import * as apiJobs from '../../spec/api-jobs.js';
import { jobKey } from '../../spec/job.js';
import { ApiClient, type ClientOptions } from '../client.js';
import { CliError } from '../errors.js';
import {
  ago,
  bytes,
  color,
  printable,
  printableLine,
  printField,
  printJson,
  printTable,
  statusColor,
  workloadStatus,
} from '../output.js';
import { resolveId } from '../resolve.js';

interface Opts extends ClientOptions {
  json?: boolean;
}

/** Service discovery: the job's serving instances with host and named ports. */
export async function endpoints(id: string, opts: Opts) {
  id = await resolveId(new ApiClient(opts), 'job', id);
  const e = await new ApiClient(opts).get(`/api/jobs/${encodeURIComponent(id)}/endpoints`, api.JobEndpoints);
  if (opts.json) return printJson(e);
  printTable(
    ['instance', 'host', 'primary', 'ports', 'node', 'workload'],
    e.instances.map((i) => [
      String(i.instance),
      i.host,
      i.primary_port === null ? '-' : `${i.host}:${i.primary_port}`,
      Object.entries(i.ports)
        .map(([n, p]) => `${n}=${p}`)
        .join(' ') || '-',
      i.node,
      i.workload_id,
    ]),
  );
}

const stateColor = (s: string) => (s === 'complete' ? color.green(s) : statusColor(s));

/** An update's status coloured as workload statuses are: under way yellow, done green, ended short red. */
const UPDATE_COLOR: Record<z.output<typeof api.JobUpdate>['status'], (s: string) => string> = {
  rolling: color.yellow,
  paused: color.yellow,
  succeeded: color.green,
  failed: color.red,
  rolled_back: color.red,
  cancelled: color.red,
};

/**
 * Jobs with their state (running / complete / failed / stopped) and their instances per state (each
 * instance's newest workload: a restarted instance counts once, as what it does now).
 */
export async function list(opts: Opts) {
  const rows = await new ApiClient(opts).getAll('/api/jobs', apiJobs.JobWithSpec);
  if (opts.json) return printJson(rows);
  const n = (v: number, paint?: (s: string) => string) => (v && paint ? paint(String(v)) : String(v));
  printTable(
    [
      'job',
      'state',
      'version',
      'type',
      'instances',
      'running',
      'pending',
      'finished',
      'failed',
      'lost',
      'isolation',
      'updated',
    ],
    rows.map((j) => [
      j.key,
      stateColor(j.state),
      String(j.current_version),
      j.spec.cron_schedule ? 'cron' : j.spec.service ? 'service' : 'batch',
      String(j.spec.instances),
      n(j.latest.running + j.latest.stopping),
      n(j.latest.pending + j.latest.starting),
      n(j.latest.finished),
      n(j.latest.failed, color.red),
      n(j.latest.lost),
      j.spec.mxc.isolation,
      ago(j.updated_at),
    ]),
  );
}

export async function show(id: string, opts: Opts) {
  id = await resolveId(new ApiClient(opts), 'job', id);
  const j = await new ApiClient(opts).get(`/api/jobs/${encodeURIComponent(id)}`, apiJobs.JobDetail);
  if (opts.json) return printJson(j);
  const out = (k: string, v: string) => printField(k, v, 10);
  out('job', j.key);
  out('id', j.id);
  out('state', stateColor(j.state));
  out('version', String(j.current_version));
  // Aurora's rank, when not the default: what scheduling order and preemption go by.
  if (j.spec.production || j.spec.priority)
    out('rank', `${j.spec.production ? 'production, ' : ''}priority ${j.spec.priority ?? 0}`);
  if (j.update) {
    out(
      'update',
      // "v1 → v2: paused by alice", not "paused (paused by alice)"; else the status, then the message.
      `v${j.update.from_version} → v${j.update.to_version}: ${
        j.update.message.startsWith(j.update.status)
          ? UPDATE_COLOR[j.update.status](printable(j.update.message))
          : `${UPDATE_COLOR[j.update.status](j.update.status)} (${printable(j.update.message)})`
      }`,
    );
  }
  if (j.spec.cron_schedule)
    out(
      'schedule',
      `${j.spec.cron_schedule} (UTC); ${
        j.status === 'stopped'
          ? 'descheduled: the job is stopped (submit it again to schedule it)'
          : `next run ${j.next_run_at ? new Date(j.next_run_at).toISOString() : '-'}`
      }`,
    );
  process.stdout.write(`\n${color.bold('workloads')}\n`);
  printTable(
    ['id', 'version', 'status'],
    (j.workloads ?? []).map((w) => [w.id, String(w.job_version), workloadStatus(w)]),
  );
}

export async function stop(id: string, opts: Opts) {
  id = await resolveId(new ApiClient(opts), 'job', id);
  const r = await new ApiClient(opts).post(`/api/jobs/${encodeURIComponent(id)}/stop`, api.StopJobResult);
  if (opts.json) return printJson(r);
  process.stdout.write(`${r.job.key}: stopped (${r.stopped} workload(s) stopping)\n`);
}

export async function restart(id: string, opts: Opts) {
  id = await resolveId(new ApiClient(opts), 'job', id);
  const r = await new ApiClient(opts).post(
    `/api/jobs/${encodeURIComponent(id)}/restart`,
    api.RestartJobResult,
  );
  if (opts.json) return printJson(r);
  process.stdout.write(
    r.rolling
      ? `${r.job.key}: rolling restart started (batch by batch, per its update_config); follow it with \`mxc jobs show ${r.job.key}\`\n`
      : `${r.job.key}: restarted, ${r.workloads.length} new workload(s)\n`,
  );
}

/** "3 on v2, 1 on v1": the job's live instances by the version they run (each instance once, its newest). */
function instancesByVersion(workloads: z.output<typeof api.Workload>[]): string {
  const newest = new Map<number, z.output<typeof api.Workload>>();
  for (const w of workloads) {
    const seen = newest.get(w.instance);
    if (!seen || w.created_at > seen.created_at) newest.set(w.instance, w);
  }
  const perVersion = new Map<number, number>();
  for (const w of newest.values())
    if (['pending', 'starting', 'running', 'stopping'].includes(w.status))
      perVersion.set(w.job_version, (perVersion.get(w.job_version) ?? 0) + 1);
  if (perVersion.size === 0) return 'no instance live';
  return [...perVersion.entries()]
    .sort(([a], [b]) => b - a)
    .map(([v, n]) => `${n} on v${v}`)
    .join(', ');
}

/**
 * `mxc jobs pause|resume|abort JOB` (Aurora's `update pause|resume|abort`): the job's rolling update.
 * Says what happened, where the instances stand (by version) and what comes next.
 */
export async function moveUpdate(action: 'pause' | 'resume' | 'abort', id: string, opts: Opts) {
  const client = new ApiClient(opts);
  id = await resolveId(client, 'job', id);
  const r = await client.post(`/api/jobs/${encodeURIComponent(id)}/update/${action}`, api.UpdateActionResult);
  if (opts.json) return printJson(r);
  const u = r.update;
  const key = r.job.key;
  const j = await client.get(`/api/jobs/${encodeURIComponent(r.job.id)}`, apiJobs.JobDetail);
  const what = `${u.rollback ? 'rollback' : u.restart ? 'restart' : 'update'} v${u.from_version} → v${u.to_version}`;
  const next =
    action === 'pause'
      ? `no instance moves until \`mxc jobs resume ${key}\` (or \`mxc jobs abort ${key}\` to end the update here)`
      : action === 'resume'
        ? `the rest move to v${u.to_version} batch by batch; follow it with \`mxc jobs show ${key}\``
        : `\`mxc jobs restart ${key}\` replaces every instance with the job's version, v${j.current_version}`;
  // The update's message says what was done and by whom: "paused by alice".
  process.stdout.write(
    `${key}: ${what} ${UPDATE_COLOR[u.status](printable(u.message))}\n` +
      `  instances: ${instancesByVersion(j.workloads)}; ${next}\n`,
  );
}

export const pauseUpdate = (id: string, opts: Opts) => moveUpdate('pause', id, opts);
export const resumeUpdate = (id: string, opts: Opts) => moveUpdate('resume', id, opts);
export const abortUpdate = (id: string, opts: Opts) => moveUpdate('abort', id, opts);

/** `mxc jobs run JOB` (Aurora's `cron start`): a cron job's run now, outside its schedule. */
export async function runNow(id: string, opts: Opts) {
  const client = new ApiClient(opts);
  id = await resolveId(client, 'job', id);
  const r = await client.post(`/api/jobs/${encodeURIComponent(id)}/run`, api.RunNowResult);
  if (opts.json) return printJson(r);
  process.stdout.write(
    `${r.job.key}: run started, ${r.workloads.length} workload(s)${r.stopped ? `; ${r.stopped} of the previous run stopped (KILL_EXISTING)` : ''}\n`,
  );
}

export async function versions(id: string, opts: Opts) {
  id = await resolveId(new ApiClient(opts), 'job', id);
  const rows = await new ApiClient(opts).getAll(
    `/api/jobs/${encodeURIComponent(id)}/versions`,
    apiJobs.JobVersion,
  );
  if (opts.json) return printJson(rows);
  printTable(
    ['version', 'spec hash', 'created'],
    rows.map((v) => [String(v.version), v.spec_hash.slice(0, 16), new Date(v.created_at).toISOString()]),
  );
}

/** The closure of the job's roots with NAR sizes, from this machine's store; null when it is not all here. */
async function localClosure(roots: string[]): Promise<{ path: string; nar_size: number }[] | null> {
  const { closureOf } = await import('../../lib/nix.js');
  const { queryPathInfos } = await import('../../lib/path-info.js');
  try {
    const infos = await queryPathInfos(await closureOf(roots));
    return infos.map((i) => ({ path: i.path, nar_size: i.narSize }));
  } catch {
    return null;
  }
}

/** `mxc jobs plan FILE|STORE_PATH`: what a submit would do, changing nothing. */
export async function plan(file: string | undefined, opts: Opts) {
  const { readJobArgument } = await import('./submit.js');
  const spec = await readJobArgument(file);
  const closure = await localClosure(spec.mxc.closure);
  const p = await new ApiClient(opts).post('/api/jobs/plan', api.JobPlan, {
    spec,
    ...(closure ? { closure } : {}),
  });
  if (opts.json) return printJson(p);
  const out = (s: string) => process.stdout.write(`${printableLine(s)}\n`);
  const versions =
    p.status === 'new'
      ? 'version 1'
      : p.status === 'changed'
        ? `version ${p.current_version} → ${p.next_version}`
        : `version ${p.current_version}`;
  out(
    `${color.bold(p.job)}: ${p.status === 'unchanged' ? 'unchanged' : p.status === 'new' ? color.green('new') : color.yellow('changed')} (${versions}${p.rolling ? ', rolling update batch by batch' : ''})`,
  );
  out(
    `  instances  ${p.instances.place} to place, ${p.instances.replace} to replace, ${p.instances.stop} to stop`,
  );
  if (p.closure.known) {
    const delta = p.closure.size_delta;
    out(
      `  closure    ${p.closure.paths} path(s), ${bytes(p.closure.size)}` +
        (p.current_version !== null
          ? ` (${delta >= 0 ? '+' : '-'}${bytes(Math.abs(delta))}): ${p.closure.added.length} added, ${p.closure.removed.length} removed`
          : ''),
    );
    if (p.current_version !== null) {
      for (const a of p.closure.added) out(color.green(`    + ${a}`));
      for (const r of p.closure.removed) out(color.red(`    - ${r}`));
    }
  } else out('  closure    not in this store or the cache: build the job here to see its closure diff');
  if (p.closure.missing_from_cache.length)
    out(
      `             ${p.closure.missing_from_cache.length} path(s) not in the cache yet (submit uploads them)`,
    );
  const pr = p.processes;
  if (pr.changed.length) out(`  processes  store paths changed: ${pr.changed.join(', ')}`);
  if (pr.added.length) out(`  processes  added: ${pr.added.join(', ')}`);
  if (pr.removed.length) out(`  processes  removed: ${pr.removed.join(', ')}`);
  out(
    p.fits
      ? `  fits       ${color.green('yes')}`
      : `  fits       ${color.red('no')}: ${p.unplaced} instance(s) cannot be placed now: ${p.reasons.join('; ')}`,
  );
}

/** `mxc jobs revert JOB VERSION`: submit an earlier version's spec again (its closure is in the cache). */
export async function revert(id: string, version: string, opts: Opts) {
  const n = Number(version);
  if (!Number.isInteger(n) || n < 1) throw new CliError(`VERSION is a version number, got "${version}"`, 2);
  const client = new ApiClient(opts);
  id = await resolveId(client, 'job', id);
  const versions = await client.getAll(`/api/jobs/${encodeURIComponent(id)}/versions`, apiJobs.JobVersion);
  const v = versions.find((x) => x.version === n);
  if (!v)
    throw new CliError(
      // Named by its key, as the user knows it (the id is what the lookup gave).
      `job ${versions[0] ? jobKey(versions[0].spec) : id} has no version ${n}; its versions: ${versions.map((x) => x.version).join(', ')}`,
      2,
    );
  const res = await client.post('/api/jobs', api.SubmitResult, v.spec);
  if (opts.json) return printJson(res);
  process.stdout.write(
    res.changed
      ? `${res.job.key}: reverted to the spec of version ${n}, now version ${res.version}\n`
      : `${res.job.key} already runs the spec of version ${n} (version ${res.version}); nothing to do\n`,
  );
}
