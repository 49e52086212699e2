/**
 * The pool of idle task supervisors (issue 17): a task takes one whose PID namespace exists already,
 * no two tasks share one, a taken one enters the task's cgroup before its first process, and nothing
 * of the pool outlives its close (nor the agent's).
 */
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { hostLaunch } from '../../agent/sandbox.js';
import { SupervisorPool } from '../../agent/thermos/supervisor-pool.js';
import { SUPERVISOR_ARG } from '../../agent/thermos/task-supervisor.js';
import type { AgentMessage } from '../../spec/messages.js';
import { markedPids } from '../helpers/marked-pids.js';
import { agentWithFakeCoordinator, assignment, until } from '../security/workload-tree.js';
import { buildScript, makeTask, requiredTaskSupervisor, sleep, tempDir } from './helpers.js';
import { harness } from './task-runner-harness.js';

let supervisor: string;

beforeAll(async () => {
  supervisor = await requiredTaskSupervisor();
}, 120_000);

/** Live host processes whose command line is a task supervisor's, and whose parent is `parent`. */
function supervisorLaunchers(parent: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (/^[ZX]$/.test(f[0]!) || Number(f[1]) !== parent) continue;
      if (readFileSync(`/proc/${e}/cmdline`, 'latin1').split('\0').includes(SUPERVISOR_ARG))
        out.push(Number(e));
    } catch {}
  }
  return out;
}

let marks = 0;

function pool(over: { size?: number; refillAfterMs?: number; mark?: string } = {}) {
  const diagnostics: string[] = [];
  const launch = hostLaunch({ supervisor });
  const p = new SupervisorPool({
    spec: launch.supervised!.supervisor({ workDir: '/', env: over.mark ? { MXC_TEST_MARK: over.mark } : {} }),
    size: over.size ?? 1,
    refillAfterMs: over.refillAfterMs ?? 0,
    onDiagnostic: (l) => diagnostics.push(l),
  });
  return { pool: p, launch, diagnostics };
}

const NS_AND_PID = 'echo "ns $(readlink /proc/self/ns/pid) pid $$"; sleep 0.3';

describe('task supervisor pool', () => {
  test('each task takes its own idle supervisor; the pool refills; empty means null', async () => {
    const { pool: p, launch } = pool({ size: 1, refillAfterMs: 0 });
    try {
      const first = p.take(() => {});
      expect(first).not.toBeNull();
      expect(p.take(() => {})).toBeNull(); // the one idle supervisor is gone: the caller starts its own
      await until(() => p.available === 1, 10_000, 'the pool to refill');
      const second = p.take(() => {});
      expect(second).not.toBeNull();
      expect(second).not.toBe(first);
      // Two tasks side by side, each in its own namespace, neither in ours.
      const hs = [first!, second!].map((s) =>
        harness({ task: makeTask([{ name: 'p', cmdline: NS_AND_PID }]), launch, supervisor: s }),
      );
      for (const h of hs) h.runner.start();
      const snaps = await Promise.all(hs.map((h) => h.runner.done));
      for (const s of snaps) expect(s.status).toBe('success');
      const seen = hs.map((h) => /^ns (pid:\[\d+\]) pid (\d+)$/.exec(h.stdout('p')[0] ?? '')!);
      expect(seen[0]![1]).not.toBe(seen[1]![1]);
      for (const m of seen) {
        expect(m[1]).not.toBe(readlinkSync('/proc/self/ns/pid'));
        expect(Number(m[2])).toBeLessThan(10); // the first processes of a fresh namespace
      }
    } finally {
      await p.close();
    }
  });

  test('close ends every idle supervisor and its namespace; nothing is spawned after it', async () => {
    const mark = `${process.pid}-pool-${++marks}`;
    const { pool: p } = pool({ size: 2, mark });
    const marked = () => markedPids(mark);
    // bubblewrap's monitor and init, and the supervisor, for each of the two.
    await until(() => marked().length >= 6, 10_000, 'two idle supervisors');
    await p.close();
    expect(marked()).toEqual([]);
    expect(p.take(() => {})).toBeNull();
    await sleep(50);
    expect(marked()).toEqual([]);
  });

  test("a taken supervisor enters the task's cgroup before its first process, or ends the task", async () => {
    const { pool: p, launch } = pool({ size: 1 });
    try {
      // A stand-in cgroup directory (cgroup v2 is not writable everywhere): the supervisor's own
      // write lands in its cgroup.procs before the process runs.
      const dir = tempDir('pool-cg');
      writeFileSync(join(dir, 'cgroup.procs'), '');
      const s = p.take(() => {})!;
      s.joinCgroup(dir);
      const h = harness({
        task: makeTask([{ name: 'p', cmdline: `cat ${join(dir, 'cgroup.procs')}` }]),
        launch,
        supervisor: s,
      });
      h.runner.start();
      expect((await h.runner.done).status).toBe('success');
      expect(h.stdout('p')).toEqual(['0']);

      await until(() => p.available === 1, 10_000, 'the pool to refill');
      const lines: string[] = [];
      const t = p.take((l) => lines.push(l))!;
      t.joinCgroup(join(dir, 'missing'));
      const failed = harness({
        task: makeTask([{ name: 'p', cmdline: 'echo ran', max_failures: 1 }]),
        launch,
        supervisor: t,
      });
      failed.runner.start();
      expect((await failed.runner.done).status).toBe('failed');
      expect(failed.stdout('p')).toEqual([]);
      expect(lines).toContainEqual(expect.stringMatching(/cannot enter cgroup .*missing: No such file/));
    } finally {
      await p.close();
    }
  });

  test("the agent's pool: plain tasks use it, and closing the agent leaves no idle supervisor", async () => {
    const { agent, coord, stateDir } = await agentWithFakeCoordinator();
    try {
      await until(() => supervisorLaunchers(process.pid).length >= 1, 15_000, "the agent's idle supervisor");
    } finally {
      await agent.close();
      await coord.close();
      await rm(stateDir, { recursive: true, force: true });
    }
    await until(() => supervisorLaunchers(process.pid).length === 0, 5_000, 'the idle supervisor to end');
  });
});

describe("the agent's start path", () => {
  test('the running report carries the first process states; a warm sandbox start still sees only its closure', async () => {
    const script = await buildScript(
      'start-path-store-view',
      'echo "store: $(ls /nix/store | tr "\\n" " ")"\n',
    );
    const names = script.closure.map((p) => p.slice('/nix/store/'.length)).sort();
    const { agent, coord, stateDir } = await agentWithFakeCoordinator();
    try {
      // The first start realises and learns the closure; the second is warm (its sandbox comes up
      // while the roots are added); a plain one takes the pool's supervisor.
      for (const isolation of ['sandbox', 'sandbox', 'process'] as const) {
        const a = assignment(script.path, [script.path], { isolation });
        coord.send({ type: 'start', workload: a });
        await until(
          () => coord.statuses(a.id).find((m) => m.status === 'stopped' || m.status === 'failed'),
          30_000,
          `${a.id} (${isolation}) to end`,
        );
        const statuses = coord.statuses(a.id);
        expect(statuses.map((m) => m.status)[0]).toBe('running');
        expect(statuses[0]!.reason).toBe('processes started');
        expect(statuses[0]!.processes?.map((p) => p.name)).toEqual(['main']);
        expect(statuses.at(-1)!.status, JSON.stringify(statuses)).toBe('stopped');
        const out = coord.received
          .filter(
            (m): m is Extract<AgentMessage, { type: 'logs' }> => m.type === 'logs' && m.workload_id === a.id,
          )
          .flatMap((m) => m.lines)
          .filter((l) => l.process === 'main' && l.stream === 'stdout')
          .map((l) => l.line);
        const listed = out[0]!.slice('store: '.length).trim().split(' ').sort();
        if (isolation === 'sandbox') expect(listed).toEqual(names);
        else expect(listed.length).toBeGreaterThan(names.length);
      }
    } finally {
      await agent.close();
      await coord.close();
      await rm(stateDir, { recursive: true, force: true });
    }
  }, 120_000);
});
