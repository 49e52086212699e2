/**
 * What the security tests need to see a workload's whole process tree from the host: every process
 * whose environment carries the workload's id (setsid children, sandboxed ones and the bubblewrap
 * monitors included), found by scanning /proc; and a real Agent joined to a scripted coordinator.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, type AgentOptions } from '../../agent/daemon.js';
import { JobSpec, type JobSpecInput } from '../../spec/job.js';
import type { WorkloadAssignment } from '../../spec/messages.js';
import { FakeCoordinator } from '../helpers/fake-coordinator.js';
import { testLogger } from '../helpers/logger.js';

export interface TreeProcess {
  pid: number;
  /** The session id (field 6 of /proc/<pid>/stat): a setsid child has its own. */
  session: number;
  state: string;
}

/** Live processes (zombies excluded) whose environment has `MXC_WORKLOAD_ID=<id>`. */
export function workloadProcesses(id: string): TreeProcess[] {
  const needle = `\0MXC_WORKLOAD_ID=${id}\0`;
  const out: TreeProcess[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environ = `\0${readFileSync(`/proc/${entry}/environ`, 'latin1')}`;
      if (!environ.includes(needle)) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (f[0] === 'Z' || f[0] === 'X') continue;
      out.push({ pid: Number(entry), session: Number(f[3]), state: f[0]! });
    } catch {
      // exited while we were scanning
    }
  }
  return out;
}

/** Polls `fn` every 5 ms until it returns a value; throws `what` after `timeoutMs`. */
export async function until<T>(
  fn: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A real Agent on the host store, joined to a scripted coordinator. */
export async function agentWithFakeCoordinator(
  over: Partial<AgentOptions> = {},
): Promise<{ agent: Agent; coord: FakeCoordinator; stateDir: string }> {
  const coord = await FakeCoordinator.start();
  const stateDir = await mkdtemp(join(tmpdir(), 'mxc-security-agent-'));
  const agent = new Agent({
    coordinator: coord.url,
    name: 'sec',
    stateDir,
    logger: testLogger(),
    gracePeriodMs: 500,
    cgroups: false,
    ...over,
  });
  await agent.start();
  await agent.ready;
  return { agent, coord, stateDir };
}

let counter = 0;

/** An assignment of a one-process job running `cmdline`, with `closure` pinned. */
export function assignment(
  cmdline: string,
  closure: string[],
  over: { isolation?: 'process' | 'sandbox' | 'microvm' } = {},
): WorkloadAssignment {
  const input: JobSpecInput = {
    name: `tree-${++counter}`,
    role: 'test',
    cluster: 'test',
    environment: 'test',
    task: {
      name: 'tree',
      processes: [{ name: 'main', cmdline }],
      resources: { cpu: 0.25, ram: 64 * 1024 * 1024, disk: 0 },
    },
    mxc: { closure, isolation: over.isolation ?? 'process' },
  };
  return {
    id: `w-sec-${process.pid}-${counter}`,
    job_id: `j-sec-${counter}`,
    instance: 0,
    spec: JobSpec.parse(input),
  };
}
