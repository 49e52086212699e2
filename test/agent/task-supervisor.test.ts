/**
 * One namespace per task (issue 17): the task supervisor forks every process of a task inside one
 * PID namespace (or sandbox), and the runs behave exactly as when each starts in a namespace of its
 * own: same output, exit codes, start failures, stop with grace, nothing left behind.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { hostLaunch, sandboxLaunch } from '../../agent/sandbox.js';
import { type Launcher, plainLaunch } from '../../agent/thermos/cmdline.js';
import { markedPids } from '../helpers/marked-pids.js';
import { buildScript, makeTask, requiredTaskSupervisor, sleep, tempDir } from './helpers.js';
import { harness } from './task-runner-harness.js';

let supervisor: string;

beforeAll(async () => {
  supervisor = await requiredTaskSupervisor();
}, 120_000);

let marks = 0;
const env = () => ({ PATH: '/usr/bin:/bin', MXC_TEST_MARK: `${process.pid}-${++marks}` });

describe('task supervisor: one PID namespace per task', () => {
  test('every process of the task runs in the one namespace, each leading its own group', async () => {
    const h = harness({
      task: makeTask([
        { name: 'a', cmdline: 'echo "pid $$ pgid $(cut -d" " -f5 /proc/self/stat)"; sleep 0.3' },
        { name: 'b', cmdline: 'echo "pid $$ pgid $(cut -d" " -f5 /proc/self/stat)"; sleep 0.3' },
      ]),
      env: env(),
      launch: hostLaunch({ supervisor }),
    });
    h.runner.start();
    while (h.runner.pids().length === 0) await sleep(5);
    expect(h.runner.pids()).toHaveLength(1); // the host sees one launcher for the whole task
    const snap = await h.runner.done;
    expect(snap.status).toBe('success');
    const seen = ['a', 'b'].map((p) => /^pid (\d+) pgid \d+$/.exec(h.stdout(p)[0] ?? '')?.[1]);
    for (const p of ['a', 'b']) {
      const [, pid, pgid] = /^pid (\d+) pgid (\d+)$/.exec(h.stdout(p)[0]!)!;
      expect(Number(pid)).toBeLessThan(50); // numbered inside the task's namespace
      expect(pgid).toBe(pid);
    }
    expect(seen[0]).not.toBe(seen[1]);
    expect(h.system('a')).toContainEqual(
      expect.stringMatching(/^run 1 started \(pid \d+ in the task's PID namespace\)$/),
    );
    expect(h.runner.pids()).toEqual([]);
  });

  test('output, exit codes and start failures are the same as with a bare spawn', async () => {
    const task = makeTask(
      [
        { name: 'out', cmdline: 'echo one; echo two >&2; printf "no newline"' },
        { name: 'code', cmdline: 'exit 3', max_failures: 1 },
        { name: 'missing', cmdline: '/nonexistent/bin/server --flag', max_failures: 1 },
        { name: 'args', cmdline: '/bin/echo  plain   words' },
      ],
      { max_failures: 3 },
    );
    const outcome = async (launch: Launcher) => {
      const h = harness({ task, env: env(), launch });
      h.runner.start();
      const snap = await h.runner.done;
      return {
        status: snap.status,
        processes: snap.processes.map(({ pid: _pid, ...p }) => p),
        lines: h.logs.filter((l) => l.stream !== 'system').map((l) => `${l.process} ${l.stream} ${l.line}`),
        missing: h.system('missing').find((l) => l.startsWith('run 1 could not start')),
      };
    };
    // A bare spawn (no namespace at all) is the reference: bubblewrap's own exit code 1 for a
    // missing file (per process) is the one difference the supervisor does not copy.
    const perProcess = await outcome(plainLaunch);
    const perTask = await outcome(hostLaunch({ supervisor }));
    expect(perTask.missing).toMatch(/^run 1 could not start: cannot start \/nonexistent\/bin\/server: /);
    expect({ ...perTask, missing: undefined, lines: perTask.lines.sort() }).toEqual({
      ...perProcess,
      missing: undefined,
      lines: perProcess.lines.sort(),
    });
    expect(perTask.lines).toContain('out stdout no newline');
  });

  test('stop: the grace period for TERM, then nothing of the task is left, setsid children included', async () => {
    const e = env();
    const h = harness({
      task: makeTask([
        {
          name: 'svc',
          cmdline: `setsid sleep 300 & sh -c 'trap "" TERM; echo child ignores TERM; sleep 300' & trap 'echo got TERM; exit 4' TERM; echo ready; while true; do sleep 0.05; done`,
        },
      ]),
      env: e,
      gracePeriodMs: 400,
      launch: hostLaunch({ supervisor }),
    });
    h.runner.start();
    // Both traps in place before the stop: a TERM before the child's trap (a busy machine) ended it at
    // once, and the stop with it, with no grace period to measure.
    while (!(h.stdout('svc').includes('ready') && h.stdout('svc').includes('child ignores TERM')))
      await sleep(5);
    expect(markedPids(e.MXC_TEST_MARK).length).toBeGreaterThanOrEqual(5); // bwrap ×2, supervisor, script, children
    const t0 = Date.now();
    const snap = await h.runner.stop();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(390); // the TERM-ignoring child had its grace period
    expect(snap.processes[0]).toMatchObject({ state: 'killed', exit_code: 4 });
    expect(h.stdout('svc')).toContain('got TERM');
    expect(markedPids(e.MXC_TEST_MARK)).toEqual([]);
  });

  test('what a finished run left in its group is stopped; the task goes on', async () => {
    const e = env();
    const h = harness({
      task: makeTask([
        { name: 'leaky', cmdline: 'sleep 300 & echo child; exit 0' },
        { name: 'after', cmdline: 'sleep 0.5; echo after' },
      ]),
      env: e,
      gracePeriodMs: 200,
      launch: hostLaunch({ supervisor }),
    });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('success');
    expect(h.system('leaky')).toContainEqual(expect.stringMatching(/stopping processes left behind/));
    expect(h.stdout('after')).toEqual(['after']);
    expect(markedPids(e.MXC_TEST_MARK)).toEqual([]);
  });

  test('a sandboxed task: one sandbox, the same view of closure, work dir and network for every process', async () => {
    const probe = await buildScript(
      'supervised-probe',
      'echo "store: $(ls /nix/store | tr "\\n" " ")"\necho "cwd: $PWD"\nwhile read -r l; do echo "net $l"; done < /proc/net/dev\n',
    );
    const workDir = tempDir('sandbox');
    const launch = sandboxLaunch({ closure: probe.closure, workDir, network: 'none', supervisor });
    const h = harness({
      task: makeTask(
        [
          { name: 'probe', cmdline: probe.path },
          { name: 'shell', cmdline: 'echo "hello $WHO"' },
          // The supervisor's event pipe (it is pid 2, after bubblewrap's init) is out of the task's reach.
          {
            name: 'peek',
            cmdline: 'if (: > /proc/2/fd/1) 2>/dev/null; then echo open; else echo closed; fi',
          },
          { name: 'outside', cmdline: '/usr/bin/env', max_failures: 1 },
        ],
        { max_failures: 2 },
      ),
      workDir,
      launch,
      env: { WHO: 'sandbox' },
    });
    h.runner.start();
    const snap = await h.runner.done;
    const out = h.stdout('probe');
    expect(snap.processes.find((p) => p.name === 'probe')!.state, JSON.stringify(h.logs)).toBe('success');
    const names = probe.closure.map((p) => p.slice('/nix/store/'.length)).sort();
    expect(out[0]!.slice('store: '.length).trim().split(' ').sort()).toEqual(names);
    expect(out).toContain(`cwd: ${workDir}`);
    expect(
      out.filter((l) => l.startsWith('net ') && l.includes(':')).map((l) => l.slice(4).split(':')[0]!.trim()),
    ).toEqual(['lo']);
    expect(h.stdout('shell')).toEqual(['hello sandbox']);
    expect(h.stdout('peek')).toEqual(['closed']);
    expect(snap.processes.find((p) => p.name === 'outside')!.state).toBe('failed');
    expect(h.system('outside')).toContainEqual(
      expect.stringMatching(/\/usr\/bin\/env is not inside the workload's closure/),
    );
  }, 60_000);
});
