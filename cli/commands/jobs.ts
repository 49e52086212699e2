/** `mxc jobs list|show|stop|versions|endpoints`. */
import type { z } from 'zod';
import type * as api from '../../spec/api.js';
import { ApiClient, type ClientOptions } from '../client.js';
import { ago, color, printJson, printTable, statusColor } from '../output.js';

interface Opts extends ClientOptions {
  json?: boolean;
}

type JobView = z.infer<typeof api.JobWithSpec>;
type JobDetail = z.infer<typeof api.JobDetail>;
type JobEndpoints = z.infer<typeof api.JobEndpoints>;

/** Service discovery: the job's serving instances with host and named ports. */
export async function endpoints(id: string, opts: Opts) {
  const e = await new ApiClient(opts).get<JobEndpoints>(`/api/jobs/${encodeURIComponent(id)}/endpoints`);
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

type WorkloadView = z.infer<typeof api.Workload>;

/** How an ended instance counts: a clean end (`finished`, or `stopped` without an error) is complete. */
const isComplete = (w: WorkloadView) =>
  (w.status as string) === 'finished' || (w.status === 'stopped' && !w.error);
const isFailed = (w: WorkloadView) => w.status === 'failed' || w.status === 'lost';

/** The newest attempt of each instance of the job's current version. */
function newestPerInstance(job: JobView, all: WorkloadView[]): WorkloadView[] {
  const by = new Map<number, WorkloadView>();
  for (const w of all) {
    if (w.job_id !== job.id || w.job_version !== job.current_version) continue;
    const seen = by.get(w.instance);
    if (!seen || w.created_at > seen.created_at) by.set(w.instance, w);
  }
  return [...by.values()];
}

/** A job's state as a person asks it: running, pending, complete, failed, stopped, scheduled (cron). */
export function jobState(job: JobView, current: WorkloadView[]): string {
  if (job.status === 'stopped') return 'stopped';
  const live = current.filter((w) => ['pending', 'starting', 'running', 'stopping'].includes(w.status));
  if (job.spec.cron_schedule && live.length === 0) return 'scheduled';
  if (current.some((w) => w.status === 'pending')) return 'pending';
  if (current.some((w) => w.status === 'starting')) return 'starting';
  if (current.some(isFailed) && live.length === 0) return 'failed';
  if (!job.spec.service && current.length > 0 && current.every(isComplete)) return 'complete';
  if (live.length > 0) return 'running';
  return current.some(isFailed) ? 'failed' : 'complete';
}

const stateColor = (s: string) =>
  s === 'complete' ? color.green(s) : s === 'scheduled' ? s : statusColor(s);

export async function list(opts: Opts) {
  const client = new ApiClient(opts);
  const [rows, workloads] = await Promise.all([
    client.get<JobView[]>('/api/jobs'),
    client.get<WorkloadView[]>('/api/workloads?limit=10000'),
  ]);
  const views = rows.map((j) => {
    const current = newestPerInstance(j, workloads);
    const count = (f: (w: WorkloadView) => boolean) => current.filter(f).length;
    return {
      job: j,
      state: jobState(j, current),
      counts: {
        pending: count((w) => w.status === 'pending' || w.status === 'starting'),
        running: count((w) => w.status === 'running' || w.status === 'stopping'),
        complete: count(isComplete),
        failed: count(isFailed),
      },
    };
  });
  if (opts.json)
    return printJson(rows.map((j, i) => ({ ...j, state: views[i]!.state, counts: views[i]!.counts })));
  printTable(
    [
      'job',
      'state',
      'version',
      'type',
      'instances',
      'running',
      'pending',
      'complete',
      'failed',
      'isolation',
      'updated',
    ],
    views.map(({ job: j, state, counts }) => [
      j.key,
      stateColor(state),
      String(j.current_version),
      j.spec.cron_schedule ? 'cron' : j.spec.service ? 'service' : 'batch',
      String(j.spec.instances),
      String(counts.running),
      String(counts.pending),
      String(counts.complete),
      counts.failed ? color.red(String(counts.failed)) : '0',
      j.spec.mxc.isolation,
      ago(j.updated_at),
    ]),
  );
}

export async function show(id: string, opts: Opts) {
  const j = await new ApiClient(opts).get<JobDetail>(`/api/jobs/${encodeURIComponent(id)}`);
  if (opts.json) return printJson(j);
  const out = (k: string, v: string) => process.stdout.write(`${color.bold(k.padEnd(10))}${v}\n`);
  out('job', j.key);
  out('id', j.id);
  out('status', statusColor(j.status));
  out('version', String(j.current_version));
  if (j.update) {
    out(
      'update',
      `${j.update.from_version} → ${j.update.to_version}: ${statusColor(j.update.status === 'rolling' ? 'starting' : j.update.status === 'succeeded' ? 'running' : 'failed').replace(/starting|running|failed/, j.update.status)} (${j.update.message})`,
    );
  }
  if (j.spec.cron_schedule)
    out(
      'schedule',
      `${j.spec.cron_schedule} (UTC); next run ${j.next_run_at ? new Date(j.next_run_at).toISOString() : '-'}`,
    );
  process.stdout.write(`\n${color.bold('workloads')}\n`);
  printTable(
    ['id', 'version', 'status'],
    (j.workloads ?? []).map((w) => [w.id, String(w.job_version), statusColor(w.status)]),
  );
}

export async function stop(id: string, opts: Opts) {
  const r = await new ApiClient(opts).post<{ job: z.infer<typeof api.Job>; stopped: number }>(
    `/api/jobs/${encodeURIComponent(id)}/stop`,
  );
  if (opts.json) return printJson(r);
  process.stdout.write(`${r.job.key}: stopped (${r.stopped} workload(s) stopping)\n`);
}

export async function restart(id: string, opts: Opts) {
  const r = await new ApiClient(opts).post<{
    job: z.infer<typeof api.Job>;
    rolling: boolean;
    workloads: string[];
  }>(`/api/jobs/${encodeURIComponent(id)}/restart`);
  if (opts.json) return printJson(r);
  process.stdout.write(
    r.rolling
      ? `${r.job.key}: rolling restart started (batch by batch, per its update_config); follow it with \`mxc jobs show ${r.job.key}\`\n`
      : `${r.job.key}: restarted, ${r.workloads.length} new workload(s)\n`,
  );
}

export async function versions(id: string, opts: Opts) {
  const rows = await new ApiClient(opts).get<{ version: number; spec_hash: string; created_at: string }[]>(
    `/api/jobs/${encodeURIComponent(id)}/versions`,
  );
  if (opts.json) return printJson(rows);
  printTable(
    ['version', 'spec hash', 'created'],
    rows.map((v) => [String(v.version), v.spec_hash.slice(0, 16), new Date(v.created_at).toISOString()]),
  );
}
