import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { makeTask } from './helpers.js';
import { harness } from './task-runner-harness.js';

describe('Thermos process rules', () => {
  test('order: a process starts only after all its predecessors succeeded', async () => {
    const h = harness({
      task: makeTask(
        [
          { name: 'a', cmdline: 'sleep 0.2' },
          { name: 'b', cmdline: 'sleep 0.1' },
          { name: 'c', cmdline: 'true' },
          { name: 'free', cmdline: 'true' },
        ],
        { constraints: [{ order: ['a', 'c'] }, { order: ['b', 'c'] }] },
      ),
    });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('success');
    expect(h.when('c', /started/)).toBeGreaterThanOrEqual(h.when('a', /exited with code 0/));
    expect(h.when('c', /started/)).toBeGreaterThanOrEqual(h.when('b', /exited with code 0/));
    // Unconstrained processes start right away, alongside a and b.
    expect(h.when('free', /started/)).toBeLessThan(h.when('a', /exited/));
  });

  test('order: a successor of a failed process never starts and the task fails', async () => {
    const h = harness({
      task: makeTask(
        [
          { name: 'a', cmdline: 'exit 3' },
          { name: 'b', cmdline: 'true' },
        ],
        { constraints: [{ order: ['a', 'b'] }] },
      ),
    });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('failed');
    expect(snap.reason).toMatch(/process a failed/);
    expect(snap.processes.find((p) => p.name === 'b')).toMatchObject({ state: 'waiting', runs: 0 });
    expect(snap.processes.find((p) => p.name === 'a')).toMatchObject({ state: 'failed', exit_code: 3 });
  });

  test('max_concurrency caps how many processes run at once', async () => {
    const names = ['p1', 'p2', 'p3', 'p4', 'p5'];
    const h = harness({
      task: makeTask(
        names.map((name) => ({ name, cmdline: 'sleep 0.15' })),
        { max_concurrency: 2 },
      ),
    });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('success');
    const peak = Math.max(...h.snapshots.map((s) => s.processes.filter((p) => p.state === 'running').length));
    expect(peak).toBe(2);
  });

  test('max_failures: a failing process runs exactly max_failures times, then the task fails', async () => {
    const h = harness({ task: makeTask([{ name: 'flaky', cmdline: 'echo try; exit 1', max_failures: 3 }]) });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('failed');
    expect(snap.processes[0]).toMatchObject({ state: 'failed', runs: 3, failures: 3, exit_code: 1 });
    expect(h.stdout('flaky')).toEqual(['try', 'try', 'try']);
    expect(h.logs.filter((l) => l.process === 'flaky' && l.stream === 'stdout').map((l) => l.run)).toEqual([
      1, 2, 3,
    ]);
    expect(h.system('flaky').filter((l) => l.startsWith('restarting'))).toHaveLength(2);
  });

  test('max_failures 0 retries until the process succeeds', async () => {
    // Fails on its first two runs (counted in a file in the work dir), succeeds on the third.
    const cmd = 'n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]';
    const h = harness({ task: makeTask([{ name: 'retry', cmdline: cmd, max_failures: 0 }]) });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('success');
    expect(snap.processes[0]).toMatchObject({ state: 'success', runs: 3, failures: 2, exit_code: 0 });
    expect(readFileSync(join(h.workDir, 'count'), 'utf8').trim()).toBe('3');
  });

  test('min_duration delays the restart of a short run until min_duration after its start', async () => {
    const h = harness({
      task: makeTask([{ name: 'quick', cmdline: 'exit 1', max_failures: 2, min_duration: 0.5 }]),
    });
    h.runner.start();
    await h.runner.done;
    const gap = h.when('quick', /run 2 started/) - h.when('quick', /run 1 started/);
    expect(gap).toBeGreaterThanOrEqual(490);
    expect(gap).toBeLessThan(1500);
    expect(h.system('quick')).toContainEqual(
      expect.stringMatching(/^restarting in 0\.[45]s \(failure 1 of 2\)/),
    );
  });

  test('a daemon is restarted after a successful exit, and its task runs until stopped', async () => {
    const h = harness({
      task: makeTask([{ name: 'd', cmdline: 'echo tick', daemon: true, min_duration: 0.05 }]),
    });
    h.runner.start();
    while (h.stdout('d').length < 3) await new Promise((r) => setTimeout(r, 20));
    expect(h.runner.snapshot().status).toBe('running');
    const snap = await h.runner.stop('test over');
    expect(snap.status).toBe('stopped');
    expect(snap.reason).toBe('test over');
    expect(snap.processes[0]!.runs).toBeGreaterThanOrEqual(3);
    expect(snap.processes[0]!.failures).toBe(0);
  });

  test('ephemeral processes are not waited for, and are killed when the task succeeds', async () => {
    const h = harness({
      task: makeTask([
        { name: 'main', cmdline: 'sleep 0.1' },
        { name: 'sidecar', cmdline: 'sleep 30', ephemeral: true },
      ]),
    });
    h.runner.start();
    const t0 = Date.now();
    const snap = await h.runner.done;
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(snap.status).toBe('success');
    expect(snap.processes.find((p) => p.name === 'sidecar')).toMatchObject({ state: 'killed', pid: null });
    expect(h.runner.pids()).toEqual([]);
  });

  test('an ephemeral process running out of failures does not fail the task', async () => {
    const h = harness({
      task: makeTask([
        { name: 'main', cmdline: 'sleep 0.2' },
        { name: 'side', cmdline: 'exit 1', ephemeral: true },
      ]),
    });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('success');
    expect(snap.processes.find((p) => p.name === 'side')!.state).toBe('failed');
  });

  test('final processes run at teardown, after the regular ones, in their order', async () => {
    const h = harness({
      task: makeTask(
        [
          { name: 'work', cmdline: 'sleep 0.1' },
          { name: 'f2', cmdline: 'echo second', final: true },
          { name: 'f1', cmdline: 'sleep 0.1; echo first', final: true },
        ],
        { constraints: [{ order: ['f1', 'f2'] }] },
      ),
    });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('success');
    expect(h.when('f1', /started/)).toBeGreaterThanOrEqual(h.when('work', /exited with code 0/));
    expect(h.when('f2', /started/)).toBeGreaterThanOrEqual(h.when('f1', /exited with code 0/));
    expect(snap.processes.map((p) => p.state)).toEqual(['success', 'success', 'success']);
  });

  test('final processes also run when the task is stopped', async () => {
    const h = harness({
      task: makeTask([
        { name: 'server', cmdline: 'sleep 30' },
        { name: 'cleanup', cmdline: 'echo cleaning > cleaned', final: true },
      ]),
    });
    h.runner.start();
    await new Promise((r) => setTimeout(r, 100));
    const snap = await h.runner.stop();
    expect(snap.status).toBe('stopped');
    expect(snap.processes.map((p) => p.state)).toEqual(['killed', 'success']);
    expect(readFileSync(join(h.workDir, 'cleaned'), 'utf8')).toBe('cleaning\n');
  });

  test('final processes still running after finalization_wait are killed', async () => {
    const h = harness({
      task: makeTask(
        [
          { name: 'work', cmdline: 'true' },
          { name: 'slow-final', cmdline: 'sleep 30', final: true },
          { name: 'never', cmdline: 'true', final: true },
        ],
        { finalization_wait: 0.3, constraints: [{ order: ['slow-final', 'never'] }] },
      ),
    });
    h.runner.start();
    const t0 = Date.now();
    const snap = await h.runner.done;
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(snap.status).toBe('success');
    expect(snap.processes.map((p) => p.state)).toEqual(['success', 'killed', 'waiting']);
    expect(h.system(':task')).toContainEqual(expect.stringMatching(/finalization_wait 0.3s elapsed/));
  });

  test('task failure: the other processes are killed, then the finals run', async () => {
    const h = harness({
      task: makeTask([
        { name: 'bad', cmdline: 'sleep 0.1; exit 2' },
        { name: 'long', cmdline: 'sleep 30' },
        { name: 'fin', cmdline: 'echo finalizing', final: true },
      ]),
    });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('failed');
    expect(snap.reason).toMatch(/process bad failed \(1 failures\)/);
    expect(snap.processes.map((p) => p.state)).toEqual(['failed', 'killed', 'success']);
    expect(h.stdout('fin')).toEqual(['finalizing']);
  });

  test('a failing final process fails an otherwise successful task', async () => {
    const h = harness({
      task: makeTask([
        { name: 'ok', cmdline: 'true' },
        { name: 'fin', cmdline: 'exit 4', final: true },
      ]),
    });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap).toMatchObject({ status: 'failed', reason: 'final process fin failed' });
  });
});

describe('TaskRunner input and process handling', () => {
  test('a command that cannot be started is a failed run with a system line saying why', async () => {
    const h = harness({ task: makeTask([{ name: 'missing', cmdline: '/nonexistent/bin/server --port 1' }]) });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.processes[0]).toMatchObject({ state: 'failed', exit_code: 127 });
    expect(h.system('missing')).toContainEqual(
      expect.stringMatching(/could not start: cannot start \/nonexistent\/bin\/server/),
    );
  });

  test('the environment is exactly the one given; stdout and stderr are separate streams', async () => {
    const h = harness({
      task: makeTask([{ name: 'env', cmdline: 'env | sort; echo oops >&2' }]),
      env: { PATH: '/usr/bin:/bin', MXC_WORKLOAD_ID: 'w-1' },
    });
    h.runner.start();
    await h.runner.done;
    const vars = h.stdout('env').map((l) => l.split('=')[0]);
    // sh adds PWD (and maybe SHLVL/_) itself; nothing of the test runner's environment may appear.
    expect(vars.filter((v) => !['PWD', 'SHLVL', '_', 'OLDPWD'].includes(v!))).toEqual([
      'MXC_WORKLOAD_ID',
      'PATH',
    ]);
    expect(h.logs.find((l) => l.process === 'env' && l.stream === 'stderr')?.line).toBe('oops');
  });
});
