/**
 * What names a workload, job or node on the command line: its id, what the coordinator takes for it
 * (job key or name, node name), or a unique prefix of any of those. One helper for every command taking
 * such an id, and the live ids shell completion offers (`mxc __complete KIND`).
 */
import * as z from 'zod';
import * as api from '../spec/api.js';
import type { ApiClient } from './client.js';
import { CliError } from './errors.js';

export type Kind = 'workload' | 'job' | 'node';

interface Candidate {
  /** What the coordinator takes unambiguously. */
  id: string;
  /** What a person reads in a list of candidates (and completion offers). */
  label: string;
  /** Every name a prefix may start. */
  handles: string[];
}

/** The workloads `workloads list` shows by default: the live ones. */
const LIVE = 'pending,starting,running,stopping';

const exact: Record<Kind, (c: ApiClient, id: string) => Promise<string>> = {
  workload: async (c, id) => (await c.get(`/api/workloads/${encodeURIComponent(id)}`, api.Workload)).id,
  job: async (c, id) => (await c.get(`/api/jobs/${encodeURIComponent(id)}`, api.Job)).id,
  node: async (c, id) => (await c.get(`/api/nodes/${encodeURIComponent(id)}`, api.Node)).id,
};

/** Every candidate of a kind; `live` keeps workloads to the live ones (what completion offers). */
async function candidates(c: ApiClient, kind: Kind, live = false): Promise<Candidate[]> {
  if (kind === 'workload') {
    const q = live ? `status=${LIVE}&limit=10000` : 'limit=10000';
    return (await c.get(`/api/workloads?${q}`, z.array(api.Workload))).map((w) => ({
      id: w.id,
      label: w.id,
      handles: [w.id],
    }));
  }
  if (kind === 'job')
    return (await c.getAll('/api/jobs', api.Job)).map((j) => ({
      id: j.id,
      label: j.key,
      handles: [j.id, j.key, j.name],
    }));
  return (await c.getAll('/api/nodes', api.Node)).map((n) => ({
    id: n.id,
    label: n.name,
    handles: [n.id, n.name],
  }));
}

/**
 * The id of the workload, job or node `given` names: exactly, else as a unique prefix. An ambiguous
 * prefix is a usage error (exit 2) listing the candidates; no match at all is the coordinator's own
 * NOT_FOUND.
 */
export async function resolveId(client: ApiClient, kind: Kind, given: string): Promise<string> {
  try {
    return await exact[kind](client, given);
  } catch (err) {
    if (!(err instanceof CliError) || err.code !== 'NOT_FOUND' || given === '') throw err;
    const hits = (await candidates(client, kind)).filter((x) => x.handles.some((h) => h.startsWith(given)));
    if (hits.length === 1) return hits[0]!.id;
    if (hits.length > 1)
      throw new CliError(
        `"${given}" names ${hits.length} ${kind}s; say which:\n  ${hits
          .slice(0, 20)
          .map((h) => h.label)
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
