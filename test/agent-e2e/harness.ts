/**
 * Shared pieces of the agent end-to-end tests: a real coordinator (PGlite), real Agents each on its
 * own chroot store, store scripts pushed to the coordinator's signed cache, and waits on workloads.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, type AgentOptions } from '../../agent/daemon.js';
import { pushClosure } from '../../compiler/push.js';
import * as logs from '../../scheduler/store/logs.js';
import * as wl from '../../scheduler/store/workloads.js';
import type { JobSpecInput } from '../../spec/job.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { testLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';

export const TOKENS = { api: 'client-token', agent: 'join-token' } as const;

export interface Cluster {
  c: TestCoordinator;
  dir: string;
  agents: Agent[];
  /** A real Agent named `name` with its own store under `<dir>/<name>/store`, started and joined. */
  agent(name: string, over?: Partial<AgentOptions>): Promise<Agent>;
  stop(): Promise<void>;
}

export async function startCluster(opts: { heartbeatTtlMs?: number } = {}): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-agent-e2e-'));
  const c = await startTestCoordinator(
    process.env.MXC_AGENT_E2E_ENGINE === 'pglite' ? 'pglite' : 'postgres',
    {
      tokens: { ...TOKENS },
      heartbeatTtlMs: opts.heartbeatTtlMs,
    },
  );
  const agents: Agent[] = [];
  return {
    c,
    dir,
    agents,
    async agent(name, over = {}) {
      const a = new Agent({
        coordinator: c.url,
        token: TOKENS.agent,
        name,
        stateDir: join(dir, name, 'state'),
        storeRoot: join(dir, name, 'store'),
        logger: testLogger(),
        gracePeriodMs: 500,
        ...over,
      });
      agents.push(a);
      await a.start();
      await a.ready;
      return a;
    },
    async stop() {
      for (const a of agents) await a.close().catch(() => {});
      await c.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Uploads the closure of `paths` to the coordinator's cache, as `mxc submit` does. */
export async function push(c: TestCoordinator, paths: string[]): Promise<void> {
  await pushClosure({ coordinator: c.url, token: TOKENS.api, paths });
}

/** A one-process batch job running `script` (a store path), its closure pinned to it. */
export function scriptJob(name: string, script: string, over: Partial<JobSpecInput> = {}): JobSpecInput {
  return {
    name,
    role: 'test',
    cluster: 'test',
    environment: 'test',
    service: false,
    task: {
      name,
      processes: [{ name: 'main', cmdline: script }],
      resources: { cpu: 0.25, ram: 64 * 1024 * 1024, disk: 16 * 1024 * 1024 },
    },
    mxc: { closure: [script] },
    ...over,
  };
}

export async function submit(c: TestCoordinator, spec: JobSpecInput): Promise<string> {
  const r = await c.coordinator.submitJob(spec);
  return r.job.id;
}

export function workloadsOf(c: TestCoordinator, jobId: string): Promise<wl.WorkloadRow[]> {
  return wl.listWorkloads(c.db, { jobId });
}

/** Waits until the job's workloads satisfy `pred`; returns them. */
export function waitWorkloads(
  c: TestCoordinator,
  jobId: string,
  pred: (ws: wl.WorkloadRow[]) => boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<wl.WorkloadRow[]> {
  let last: wl.WorkloadRow[] = [];
  return eventually(
    async () => {
      last = await workloadsOf(c, jobId);
      return pred(last) ? last : null;
    },
    timeoutMs,
    what,
  ).catch((err: Error) => {
    const seen = last.map((w) => `${w.id} ${w.status} ${w.pending_reason ?? ''} ${w.error ?? ''}`).join('; ');
    throw new Error(`${err.message} (workloads: ${seen || 'none'})`);
  });
}

/** The log lines the coordinator received for a workload. */
export async function logLines(c: TestCoordinator, workloadId: string): Promise<logs.LogRow[]> {
  return logs.readLogs(c.db, workloadId, { limit: 10_000 });
}

export { eventually };
