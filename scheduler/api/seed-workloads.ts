/**
 * samrose/mxc's workload API on top of jobs: a `{type, command, args, env, cpu, memory_mb, constraints}`
 * request becomes a one-process, run-once job under the key `api/workloads/default/<type>-<id>`, and a
 * workload row is shown with the seed's fields. Pure functions; the routes do the I/O.
 */
import { randomBytes } from 'node:crypto';
import type { z } from 'zod';
import type { SeedWorkload, SeedWorkloadRequest } from '../../spec/api.js';
import type { JobSpecInput } from '../../spec/job.js';
import type { WorkloadRow } from '../store/workloads.js';

/** The job key prefix of workloads created through `POST /api/workloads`. */
export const SEED_JOB = { cluster: 'api', role: 'workloads', environment: 'default' } as const;

export const isSeedJobKey = (key: string) =>
  key.startsWith(`${SEED_JOB.cluster}/${SEED_JOB.role}/${SEED_JOB.environment}/`);

const STORE_PATH = /\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+/g;
const PLAIN_WORD = /^[A-Za-z0-9_./=:,+@%-]+$/;

/** One argument as a shell word: as is when plain, else single-quoted. */
export const shellWord = (s: string) => (PLAIN_WORD.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`);

/**
 * The seed runs `/bin/sh -c "command args"`: the command is a shell line and the arguments follow it.
 * Arguments are quoted here so that each stays one word (the seed joins them with spaces, which splits
 * an argument holding a space; quoting is the fix, not a difference a plain argument can see).
 */
export const seedCmdline = (command: string, args: string[]) => [command, ...args.map(shellWord)].join(' ');

/** The store paths named in the command line: the job's closure (they must be in the cache). */
export const seedClosure = (cmdline: string) => [...new Set(cmdline.match(STORE_PATH) ?? [])].sort();

export function seedJobSpec(
  req: z.output<typeof SeedWorkloadRequest>,
  suffix = randomBytes(4).toString('hex'),
) {
  const cmdline = seedCmdline(req.command, req.args);
  const spec: JobSpecInput = {
    ...SEED_JOB,
    name: `${req.type}-${suffix}`,
    instances: 1,
    service: false,
    max_task_failures: 1,
    constraints: Object.keys(req.constraints).length ? req.constraints : undefined,
    task: {
      name: 'command',
      processes: [{ name: 'command', cmdline, max_failures: 1, min_duration: 0 }],
      resources: { cpu: req.cpu, ram: req.memory_mb * 1024 * 1024, disk: 0 },
    },
    mxc: { isolation: req.type, env: req.env, closure: seedClosure(cmdline) },
  };
  return spec;
}

/** The seed's status vocabulary: it has no `lost` (a workload whose node died is `failed` there). */
const seedStatus = (s: WorkloadRow['status']) => (s === 'lost' ? 'failed' : s);

export function seedView(
  w: WorkloadRow,
  job: { key: string },
  req: z.output<typeof SeedWorkloadRequest>,
): z.output<typeof SeedWorkload> {
  return {
    id: w.id,
    type: req.type,
    status: seedStatus(w.status),
    command: req.command,
    args: req.args,
    env: req.env,
    cpu_required: w.cpu,
    memory_required: w.memory_mb,
    constraints: req.constraints,
    error: w.error,
    ip: null,
    node_id: w.node_id,
    started_at: w.started_at,
    stopped_at: w.finished_at,
    inserted_at: w.created_at,
    updated_at: w.updated_at,
    job: job.key,
    job_id: w.job_id,
  };
}
