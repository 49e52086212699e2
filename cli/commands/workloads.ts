/** `mxc workloads list|show|create|stop|logs|events`. */
import { readFile } from 'node:fs/promises';
import * as z from 'zod';
import * as api from '../../spec/api.js';
import { ApiClient, type ClientOptions } from '../client.js';
import { CliError } from '../errors.js';
import {
  ago,
  color,
  printable,
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

/** What `workloads list` shows without `--status` or `--all`: what is alive now, not the history. */
const LIVE = 'pending,starting,running,stopping';

/**
 * The NOTE of a workload in a list: why it is pending, its error, else for one ending or ended the
 * reason of its last status change (lost with its node, stopped by request, replaced by an update).
 */
function note(w: z.output<typeof api.Workload>): string {
  if (w.status === 'pending') return w.pending_reason ?? 'waiting for a scheduling pass';
  if (w.error) return w.error;
  return ['starting', 'running'].includes(w.status) ? '' : w.reason;
}

export async function list(opts: Opts & { status?: string; job?: string; node?: string; all?: boolean }) {
  const q = new URLSearchParams();
  if (opts.status) q.set('status', opts.status);
  else if (!opts.all) q.set('status', LIVE);
  if (opts.job) q.set('job', opts.job);
  if (opts.node) q.set('node', opts.node);
  const rows = await new ApiClient(opts).get(`/api/workloads${q.size ? `?${q}` : ''}`, z.array(api.Workload));
  if (opts.json) return printJson(rows);
  printTable(
    ['id', 'job', 'status', 'node', 'cpu', 'mem', 'updated', 'note'],
    rows.map((w) => [
      w.id,
      w.job,
      workloadStatus(w),
      w.node ?? '-',
      String(w.cpu),
      `${w.memory_mb}M`,
      ago(w.updated_at),
      printable(note(w)),
    ]),
  );
}

export async function show(id: string, opts: Opts) {
  id = await resolveId(new ApiClient(opts), 'workload', id);
  const w = await new ApiClient(opts).get(`/api/workloads/${encodeURIComponent(id)}`, api.WorkloadDetail);
  if (opts.json) return printJson(w);
  const out = (k: string, v: string) => printField(k, v, 12);
  out('id', w.id);
  out('job', `${w.job} (instance ${w.instance})`);
  out('status', workloadStatus(w));
  out('node', w.node ?? '-');
  out('isolation', w.isolation);
  out('resources', `cpu ${w.cpu}, memory ${w.memory_mb} MiB`);
  if (w.restarts) out('restarts', String(w.restarts));
  if (w.health)
    out(
      'health',
      w.health === 'healthy'
        ? color.green(w.health)
        : w.health === 'unhealthy'
          ? color.red(w.health)
          : w.health,
    );
  if (w.fetched_paths !== null) {
    out(
      'fetched',
      `${w.fetched_paths} path(s), ${((w.fetched_bytes ?? 0) / 1048576).toFixed(1)} MiB from the cache`,
    );
  }
  if (Object.keys(w.ports).length)
    out(
      'ports',
      Object.entries(w.ports)
        .map(([n, p]) => `${n}=${p}`)
        .join(', '),
    );
  if (w.status === 'pending') out('pending', printable(w.pending_reason ?? 'waiting for a scheduling pass'));
  if (w.error) out('error', printable(w.error));
  if (w.processes.length) {
    process.stdout.write(`\n${color.bold('processes')}\n`);
    printTable(
      ['name', 'state', 'runs', 'failures', 'exit'],
      w.processes.map((p) => [
        p.name,
        statusColor(p.state),
        String(p.runs),
        String(p.failures),
        String(p.exit_code ?? '-'),
      ]),
    );
  }
  process.stdout.write(`\n${color.bold('events')}\n`);
  printTable(
    ['when', 'transition', 'reason'],
    w.events.map((e) => [
      new Date(e.ts).toISOString(),
      `${e.from_status ?? '∅'} → ${e.to_status}`,
      printable(e.reason),
    ]),
  );
}

/**
 * samrose/mxc's `workloads deploy`: a JSON file `{type, command, args, env, cpu, memory_mb, constraints}`
 * becomes a run-once, one-process job; prints its workload.
 */
export async function create(file: string, opts: Opts) {
  let body: unknown;
  try {
    body = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new CliError(`cannot read ${file} as JSON: ${(err as Error).message}`, 2, undefined, {
      cause: err,
    });
  }
  const w = await new ApiClient(opts).post('/api/workloads', api.SeedWorkload, body);
  if (opts.json) return printJson(w);
  process.stdout.write(`${w.id}: ${statusColor(w.status)} (job ${w.job})\n`);
}

export async function stop(id: string, opts: Opts) {
  // Stopping acts on a live workload: a prefix naming one live among ended ones names it.
  id = await resolveId(new ApiClient(opts), 'workload', id, { live: true });
  const w = await new ApiClient(opts).post(`/api/workloads/${encodeURIComponent(id)}/stop`, api.Workload);
  if (opts.json) return printJson(w);
  process.stdout.write(`${w.id}: ${statusColor(w.status)}\n`);
}

export async function events(id: string, opts: Opts) {
  id = await resolveId(new ApiClient(opts), 'workload', id);
  const rows = await new ApiClient(opts).get(
    `/api/workloads/${encodeURIComponent(id)}/events`,
    z.array(api.WorkloadEvent),
  );
  if (opts.json) return printJson(rows);
  printTable(
    ['when', 'transition', 'reason'],
    rows.map((e) => [
      new Date(e.ts).toISOString(),
      `${e.from_status ?? '∅'} → ${e.to_status}`,
      printable(e.reason),
    ]),
  );
}

type LogRow = z.infer<typeof api.LogEntry>;

const printLog = (l: LogRow, json?: boolean, timestamps?: boolean) => {
  if (json) return process.stdout.write(`${JSON.stringify(l)}\n`);
  const ts = timestamps ? `${new Date(l.ts).toISOString()} ` : '';
  if (l.stream === 'system') process.stdout.write(color.dim(`${ts}[${l.process}] ${l.line}\n`));
  else process.stdout.write(`${ts}${color.dim(`[${l.process}]`)} ${l.line}\n`);
};

/** `-p NAME` must name a process of the workload's task (or mxc's own `mxc` / `:task` lines). */
async function checkProcess(client: ApiClient, id: string, name: string): Promise<void> {
  const w = await client.get(`/api/workloads/${encodeURIComponent(id)}`, api.Workload);
  // Loaded here, the one place this command needs a job spec (spec/api-jobs.ts says why).
  const { JobDetail } = await import('../../spec/api-jobs.js');
  const job = await client.get(`/api/jobs/${encodeURIComponent(w.job_id)}`, JobDetail);
  const names = new Set([
    'mxc',
    ':task',
    ...job.spec.task.processes.map((p) => p.name),
    ...w.processes.map((p) => p.name),
  ]);
  if (!names.has(name))
    throw new CliError(
      `workload ${w.id} has no process "${name}"; its processes: ${[...names].filter((n) => n !== 'mxc' && n !== ':task').join(', ')}`,
      2,
    );
}

export async function logs(
  id: string,
  opts: Opts & { process?: string; follow?: boolean; tail?: string; timestamps?: boolean },
) {
  // Checked here, named as the user gave it (the coordinator would name its query's `limit`).
  if (
    opts.tail !== undefined &&
    !(/^\d+$/.test(opts.tail.trim()) && Number(opts.tail) <= api.MAX_LOG_LINES_ASKED)
  )
    throw new CliError(
      `-n/--tail takes a number of lines from 0 to ${api.MAX_LOG_LINES_ASKED} (0 with -f: only new lines), not "${opts.tail}"`,
      2,
    );
  const client = new ApiClient(opts);
  id = await resolveId(client, 'workload', id);
  const q = new URLSearchParams();
  if (opts.process) {
    await checkProcess(client, id, opts.process);
    q.set('process', opts.process);
  }
  if (opts.tail) q.set('limit', opts.tail);
  if (!opts.follow) {
    // An answer holds a page of the lines asked for: the rest follow its next_cursor.
    const rows: LogRow[] = [];
    let got = 0;
    let dropped = 0;
    let cursor: string | null = null;
    do {
      const page: z.output<typeof api.LogsPage> = await client.getWhole(
        `/api/workloads/${encodeURIComponent(id)}/logs?${q}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
        api.LogsPage,
      );
      got += page.data.length;
      dropped = page.dropped;
      cursor = page.next_cursor;
      if (opts.json) rows.push(...page.data);
      else for (const l of page.data) printLog(l, false, opts.timestamps);
    } while (cursor !== null);
    if (opts.json) printJson(rows);
    // The lines shown reach back to the oldest the coordinator still has, and it had older ones.
    if (dropped > 0 && got < Number(opts.tail ?? 1000))
      process.stderr.write(
        `${color.yellow('note:')} the coordinator dropped this workload's ${dropped} oldest lines (it keeps the newest MXC_LOG_LINES_KEPT of a workload)\n`,
      );
    return;
  }
  q.set('follow', '1');
  const res = await client.raw('GET', `/api/workloads/${encodeURIComponent(id)}/logs?${q}`);
  if (!res.ok || !res.body) {
    const body = (await res.json().catch(() => ({}))) as { error?: { message: string } };
    throw new CliError(body.error?.message ?? `HTTP ${res.status}`);
  }
  let buf = '';
  const decoder = new TextDecoder();
  const chunks = res.body[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<unknown>;
    try {
      next = await chunks.next();
    } catch (err) {
      // The coordinator went away or closed the stream (token revoked, restart): a message, not a crash.
      throw new CliError(
        `the log stream from the coordinator was cut (${(err as Error).message}); run the command again to resume`,
        1,
        undefined,
        { cause: err },
      );
    }
    if (next.done) break;
    buf += decoder.decode(next.value as Uint8Array, { stream: true });
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line) printLog(api.LogEntry.parse(JSON.parse(line)), opts.json, opts.timestamps);
      nl = buf.indexOf('\n');
    }
  }
  // The stream ends with the workload: say how it ended (on stderr, so stdout holds its lines alone).
  if (!opts.json) {
    const w = await client.get(`/api/workloads/${encodeURIComponent(id)}`, api.Workload);
    process.stderr.write(
      `${color.dim(`mxc: ${w.id} ${workloadStatus(w, false)}${w.error ? `: ${printable(w.error)}` : w.reason ? `: ${printable(w.reason)}` : ''}; no more lines will come`)}\n`,
    );
  }
}
