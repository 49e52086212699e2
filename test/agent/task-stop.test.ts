import { describe, expect, test } from 'vitest';
import { buildScript, isAlive, makeTask, sleep } from './helpers.js';
import { harness } from './task-runner-harness.js';

/** Pids the processes printed as `child <pid>`. */
const childPids = (lines: string[]): number[] =>
  lines.filter((l) => l.startsWith('child ')).map((l) => Number(l.slice(6)));

describe('stopping a task leaves no process behind', () => {
  test('children that ignore SIGTERM are SIGKILLed after the grace period', async () => {
    const cmd = `trap '' TERM; sh -c 'trap "" TERM; sleep 100' & echo child $!; sleep 100 & echo child $!; wait`;
    const h = harness({ task: makeTask([{ name: 'stubborn', cmdline: cmd }]), gracePeriodMs: 300 });
    h.runner.start();
    while (childPids(h.stdout('stubborn')).length < 2) await sleep(10);
    const leader = h.runner.pids()[0]!;
    const pids = [leader, ...childPids(h.stdout('stubborn'))];
    expect(pids.every(isAlive)).toBe(true);
    const t0 = Date.now();
    const snap = await h.runner.stop('test');
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(290);
    expect(took).toBeLessThan(2000);
    expect(pids.filter(isAlive)).toEqual([]);
    expect(snap.processes[0]).toMatchObject({ state: 'killed', exit_code: 137, pid: null });
    expect(h.system('stubborn')).toContainEqual(expect.stringMatching(/killed by SIGKILL/));
  });

  test('a process that exits on SIGTERM is not made to wait for the grace period', async () => {
    const h = harness({ task: makeTask([{ name: 'polite', cmdline: 'sleep 100' }]), gracePeriodMs: 3000 });
    h.runner.start();
    while (h.runner.pids().length === 0) await sleep(10);
    const t0 = Date.now();
    const snap = await h.runner.stop();
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(snap.processes[0]).toMatchObject({ state: 'killed', exit_code: 143 });
  });

  test('children a finished run left behind are stopped too', async () => {
    const h = harness({ task: makeTask([{ name: 'leaky', cmdline: 'sleep 100 & echo child $!; exit 0' }]) });
    h.runner.start();
    const snap = await h.runner.done;
    expect(snap.status).toBe('success');
    const [orphan] = childPids(h.stdout('leaky'));
    expect(orphan).toBeGreaterThan(0);
    expect(isAlive(orphan!)).toBe(false);
    expect(h.system('leaky')).toContainEqual(expect.stringMatching(/stopping processes left behind/));
  });

  test('a store script cmdline with plain arguments is exec-ed directly, without a shell', async () => {
    const script = await buildScript('print-args', 'echo "args: $*"; echo "pid $$"\n');
    const h = harness({ task: makeTask([{ name: 'direct', cmdline: `${script.path} one two` }]) });
    h.runner.start();
    while (h.runner.pids().length === 0 && h.runner.snapshot().status === 'running') await sleep(5);
    const leader = h.runner.pids()[0];
    const snap = await h.runner.done;
    expect(snap.status).toBe('success');
    expect(h.stdout('direct')).toEqual(['args: one two', `pid ${leader}`]);
  });
});
