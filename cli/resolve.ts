/**
 * What names a workload, job or node on the command line: its id, what the coordinator takes for it
 * (job key or name, node name), or a unique prefix of any of those. One helper for every command taking
 * such an id, and the live ids shell completion offers (`mxc __complete KIND`).
 */
import * as z from 'zod';
import * as api from '../spec/api.js';
import type { ApiClient } from './client.js';
import { CliError } from './errors.js';
import { ago, printableLine, workloadStatus } from './output.js';

export type Kind = 'workload' | 'job' | 'node';

interface Candidate {
  /** What the coordinator takes unambiguously. */
  id: string;
  /** What a person reads in a list of candidates (and completion offers). */
  label: string;
  /** Every name a prefix may start. */
  handles: string[];
  /** A workload's status: whether it is live. */
  status?: string;
  /** What tells candidates apart in a list of them, after the label: job, node, status, age. */
  columns: string[];
}

/** The workloads `workloads list` shows by default: the live ones. */
const LIVE_STATUSES = ['pending', 'starting', 'running', 'stopping'];
const LIVE = LIVE_STATUSES.join(',');
/** The most workloads one lookup reads (the API's most); a prefix naming more is ambiguous anyway. */
const MAX_WORKLOADS = 10000;

const exact: Record<Kind, (c: ApiClient, id: string) => Promise<string>> = {
  workload: async (c, id) => (await c.get(`/api/workloads/${encodeURIComponent(id)}`, api.Workload)).id,
  job: async (c, id) => (await c.get(`/api/jobs/${encodeURIComponent(id)}`, api.Job)).id,
  node: async (c, id) => (await c.get(`/api/nodes/${encodeURIComponent(id)}`, api.Node)).id,
};

/**
 * Every candidate of a kind; `live` keeps workloads to the live ones (what completion offers), `prefix`
 * to those whose id starts with it (asked of the coordinator, so history beyond one list does not hide any).
 */
async function candidates(c: ApiClient, kind: Kind, live = false, prefix = ''): Promise<Candidate[]> {
  if (kind === 'workload') {
    const q = new URLSearchParams({ limit: String(MAX_WORKLOADS) });
    if (live) q.set('status', LIVE);
    if (prefix) q.set('id_prefix', prefix);
    return (await c.get(`/api/workloads?${q}`, z.array(api.Workload))).map((w) => ({
      id: w.id,
      label: w.id,
      handles: [w.id],
      status: w.status,
      columns: [w.job, w.node ?? '-', workloadStatus(w, false), `created ${ago(w.created_at)}`],
    }));
  }
  if (kind === 'job')
    return (await c.getAll('/api/jobs', api.Job)).map((j) => ({
      id: j.id,
      label: j.key,
      handles: [j.id, j.key, j.name],
      columns: [j.id, `v${j.current_version}`, j.status, `updated ${ago(j.updated_at)}`],
    }));
  return (await c.getAll('/api/nodes', api.Node)).map((n) => ({
    id: n.id,
    label: n.name,
    handles: [n.id, n.name],
    columns: [n.id, n.status, `seen ${ago(n.last_seen_at)}`],
  }));
}

/** Renders candidates as aligned columns: the label, then what tells them apart. */
function candidateLine(shown: Candidate[]): (c: Candidate) => string {
  const cells = (c: Candidate) => [c.label, ...c.columns].map(printableLine);
  const widths: number[] = [];
  for (const c of shown)
    for (const [i, v] of cells(c).entries()) widths[i] = Math.max(widths[i] ?? 0, v.length);
  return (c) =>
    cells(c)
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
}

/**
 * The id of the workload, job or node `given` names: exactly; else as a unique prefix; else, for a
 * command acting on live workloads (`live`: stop), as the prefix of one live workload among ended ones
 * (a restarted job's name). An ambiguous prefix is a usage error (exit 2) listing the candidates with
 * what tells them apart (a workload's job, node, status and age); no match at all is the coordinator's
 * own NOT_FOUND.
 */
export async function resolveId(
  client: ApiClient,
  kind: Kind,
  given: string,
  opts: { live?: boolean } = {},
): Promise<string> {
  try {
    return await exact[kind](client, given);
  } catch (err) {
    if (!(err instanceof CliError) || err.code !== 'NOT_FOUND' || given === '') throw err;
    const hits = (await candidates(client, kind, false, kind === 'workload' ? given : '')).filter((x) =>
      x.handles.some((h) => h.startsWith(given)),
    );
    if (hits.length === 1) return hits[0]!.id;
    const live = hits.filter((h) => h.status !== undefined && LIVE_STATUSES.includes(h.status));
    if (opts.live && live.length === 1) return live[0]!.id;
    if (hits.length > 1)
      throw new CliError(
        `"${given}" names ${hits.length >= MAX_WORKLOADS && kind === 'workload' ? `${hits.length} or more` : hits.length} ${kind}s; say which:\n  ${hits
          .slice(0, 20)
          .map(candidateLine(hits.slice(0, 20)))
          .join('\n  ')}${hits.length > 20 ? `\n  … and ${hits.length - 20} more` : ''}`,
        2,
        'AMBIGUOUS',
      );
    throw err;
  }
}

/** What completion offers for a kind: live workload ids, job keys, node names; one a line. */
export async function completionWords(client: ApiClient, kind: Kind): Promise<string[]> {
  return (await candidates(client, kind, true)).map((x) => x.label);
}
