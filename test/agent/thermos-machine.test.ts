/**
 * The Thermos task machine alone, on a simulated clock with a simulated executor: property tests
 * (fast-check) over random tasks and random process behaviour, and table cases pinning the rules on
 * which the two former runners disagreed.
 */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import type { z } from 'zod';
import {
  type Clock,
  type MachineView,
  type TaskOutcome,
  ThermosMachine,
} from '../../agent/thermos/machine.js';
import { JobSpec, Task } from '../../spec/job.js';

type TaskInput = z.input<typeof Task>;

/** One run's behaviour: exits with `code` after `ms`; `ignoresTerm` runs only die of SIGKILL. */
interface RunScript {
  code: number;
  ms: number;
}

interface ProcScript {
  runs: RunScript[];
  ignoresTerm: boolean;
}

class SimClock implements Clock {
  t = 0;
  private seq = 0;
  private timers: { at: number; id: number; fn: () => void }[] = [];
  now(): number {
    return this.t;
  }
  setTimer(ms: number, fn: () => void): unknown {
    const id = ++this.seq;
    this.timers.push({ at: this.t + Math.max(0, ms), id, fn });
    return id;
  }
  clearTimer(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  /** Fires the earliest timer (ties in creation order); false when none is left. */
  next(): boolean {
    if (this.timers.length === 0) return false;
    let best = 0;
    for (let i = 1; i < this.timers.length; i++) {
      const a = this.timers[i]!;
      const b = this.timers[best]!;
      if (a.at < b.at || (a.at === b.at && a.id < b.id)) best = i;
    }
    const [tm] = this.timers.splice(best, 1);
    this.t = Math.max(this.t, tm!.at);
    tm!.fn();
    return true;
  }
}

type Event =
  | { t: number; kind: 'start'; name: string; run: number }
  | { t: number; kind: 'exit'; name: string; run: number; code: number }
  | { t: number; kind: 'signal'; name: string; run: number; signal: 'TERM' | 'KILL' };

interface SimResult {
  events: Event[];
  outcome: TaskOutcome | null;
  finishedCalls: number;
  view: MachineView;
  /** Max number of regular / final runs alive at once. */
  peak: number;
  finalsBeforeCleaning: boolean;
  stoppedAt: number | null;
}

/** Runs `task` with per-process scripts on the simulated clock; `stopAt` asks the machine to stop. */
function simulate(task: Task, scripts: Record<string, ProcScript>, grace: number, stopAt: number): SimResult {
  const clock = new SimClock();
  const events: Event[] = [];
  const live = new Map<string, { run: number; exitTimer: unknown }>();
  let outcome: TaskOutcome | null = null;
  let finishedCalls = 0;
  let peak = 0;
  let finalsBeforeCleaning = false;
  let stopped: number | null = null;
  const isFinal = new Map(task.processes.map((p) => [p.name, p.final]));
  const exit = (name: string, run: number, code: number) => {
    const l = live.get(name);
    if (!l || l.run !== run) return;
    clock.clearTimer(l.exitTimer);
    live.delete(name);
    events.push({ t: clock.now(), kind: 'exit', name, run, code });
    m.exited(name, run, code);
  };
  const m: ThermosMachine = new ThermosMachine(
    task,
    {
      start(name, run) {
        expect(live.has(name), `${name} started while a run is alive`).toBe(false);
        const s = scripts[name]!;
        const r = s.runs[Math.min(run - 1, s.runs.length - 1)]!;
        events.push({ t: clock.now(), kind: 'start', name, run });
        const exitTimer = clock.setTimer(r.ms, () => exit(name, run, r.code));
        live.set(name, { run, exitTimer });
        const regularLive = [...live.keys()].filter((n) => !isFinal.get(n)).length;
        const finalLive = [...live.keys()].filter((n) => isFinal.get(n)).length;
        peak = Math.max(peak, regularLive, finalLive);
        if (isFinal.get(name) && regularLive > 0) finalsBeforeCleaning = true;
      },
      signal(name, run, signal) {
        const l = live.get(name);
        expect(l?.run, `signal ${signal} for ${name} run ${run}, which is not alive`).toBe(run);
        events.push({ t: clock.now(), kind: 'signal', name, run, signal });
        if (signal === 'KILL') clock.setTimer(0, () => exit(name, run, 137));
        else if (!scripts[name]!.ignoresTerm) clock.setTimer(1, () => exit(name, run, 143));
      },
      note() {},
      finished(o) {
        finishedCalls++;
        outcome = o;
      },
    },
    { clock, gracePeriodMs: grace },
  );
  clock.setTimer(stopAt, () => {
    stopped = clock.now();
    m.stop('test stop');
  });
  m.begin();
  // Enough steps to reach the latest stop (40 s) when a daemon restarts every simulated millisecond
  // (a run's start and exit are two steps): fewer left such a task unfinished, with no outcome.
  for (let i = 0; i < 200_000 && clock.next(); i++) {
    if (finishedCalls > 0 && live.size === 0) break;
  }
  return { events, outcome, finishedCalls, view: m.view(), peak, finalsBeforeCleaning, stoppedAt: stopped };
}

const procArb = fc.record({
  max_failures: fc.integer({ min: 0, max: 3 }),
  ephemeral: fc.boolean(),
  final: fc.boolean(),
  min_duration: fc.constantFrom(0, 0.5, 2),
  runs: fc.array(fc.record({ code: fc.constantFrom(0, 0, 1, 3), ms: fc.integer({ min: 1, max: 3000 }) }), {
    minLength: 1,
    maxLength: 4,
  }),
  ignoresTerm: fc.boolean(),
});

const taskArb = fc
  .record({
    procs: fc.array(fc.tuple(procArb, fc.boolean(), fc.nat(9)), { minLength: 1, maxLength: 5 }),
    edges: fc.array(fc.tuple(fc.nat(4), fc.nat(4)), { maxLength: 5 }),
    max_failures: fc.integer({ min: 0, max: 3 }),
    max_concurrency: fc.integer({ min: 0, max: 3 }),
    finalization_wait: fc.constantFrom(0, 1, 10),
    grace: fc.constantFrom(0, 500, 3000),
    stopAt: fc.integer({ min: 0, max: 40_000 }),
  })
  .map((g) => {
    const processes = g.procs.map(([p, daemon, d], i) => ({
      name: `p${i}`,
      cmdline: 'x',
      max_failures: p.max_failures,
      // Daemons are rarer: one in ten of the generated processes.
      daemon: daemon && d === 0,
      ephemeral: p.ephemeral,
      final: p.final,
      min_duration: p.min_duration,
    }));
    // Edges only forward (no cycles), and never from a final to a regular process (refused at submit).
    const constraints = g.edges
      .filter(([a, b]) => a < b && b < processes.length)
      .filter(([a, b]) => !(processes[a]!.final && !processes[b]!.final))
      .map(([a, b]) => ({ order: [`p${a}`, `p${b}`] }));
    const task = Task.parse({
      name: 't',
      processes,
      constraints,
      max_failures: g.max_failures,
      max_concurrency: g.max_concurrency,
      finalization_wait: g.finalization_wait,
    } satisfies TaskInput);
    const scripts = Object.fromEntries(
      g.procs.map(([p], i) => [`p${i}`, { runs: p.runs, ignoresTerm: p.ignoresTerm }]),
    );
    return { task, scripts, grace: g.grace, stopAt: g.stopAt };
  });

describe('Thermos machine properties', () => {
  test('ends exactly once, with no run left alive, whatever the processes do', () => {
    fc.assert(
      fc.property(taskArb, ({ task, scripts, grace, stopAt }) => {
        const r = simulate(task, scripts, grace, stopAt);
        expect(r.finishedCalls).toBe(1);
        const starts = r.events.filter((e) => e.kind === 'start').length;
        const exits = r.events.filter((e) => e.kind === 'exit').length;
        expect(exits).toBe(starts);
        expect(r.view.status).toBe(r.outcome!.status);
      }),
      { numRuns: 400 },
    );
  });

  test('order, max_concurrency and phases: nothing starts before it may', () => {
    fc.assert(
      fc.property(taskArb, ({ task, scripts, grace, stopAt }) => {
        const r = simulate(task, scripts, grace, stopAt);
        if (task.max_concurrency > 0) expect(r.peak).toBeLessThanOrEqual(task.max_concurrency);
        expect(r.finalsBeforeCleaning).toBe(false);
        const byName = new Map(task.processes.map((p) => [p.name, p]));
        for (const [i, e] of r.events.entries()) {
          if (e.kind !== 'start') continue;
          for (const c of task.constraints) {
            const at = c.order.indexOf(e.name);
            if (at <= 0) continue;
            const pred = c.order[at - 1]!;
            const before = r.events.slice(0, i);
            // The predecessor finished: a run exited 0 (not a daemon), or it is ephemeral and used up its failures.
            const p = byName.get(pred)!;
            const ok = before.some((x) => x.kind === 'exit' && x.name === pred && x.code === 0 && !p.daemon);
            const usedUp =
              p.ephemeral &&
              p.max_failures > 0 &&
              before.filter((x) => x.kind === 'exit' && x.name === pred && x.code !== 0).length >=
                p.max_failures;
            expect(ok || usedUp, `${e.name} started before ${pred} finished`).toBe(true);
          }
        }
      }),
      { numRuns: 400 },
    );
  });

  test('restarts respect max_failures and min_duration', () => {
    fc.assert(
      fc.property(taskArb, ({ task, scripts, grace, stopAt }) => {
        const r = simulate(task, scripts, grace, stopAt);
        for (const p of task.processes) {
          const mine = r.events.filter((e) => e.name === p.name);
          const failures = mine.filter(
            (e) => e.kind === 'exit' && e.code !== 0 && e.code !== 137 && e.code !== 143,
          );
          if (p.max_failures > 0) expect(failures.length).toBeLessThanOrEqual(p.max_failures);
          for (let run = 2; ; run++) {
            const start = mine.find((e) => e.kind === 'start' && e.run === run);
            if (!start) break;
            const prevExit = mine.find((e) => e.kind === 'exit' && e.run === run - 1)!;
            expect(start.t - prevExit.t).toBeGreaterThanOrEqual(p.min_duration * 1000);
          }
        }
      }),
      { numRuns: 400 },
    );
  });

  test('the outcome follows Thermos: task max_failures counts failed processes; stop wins', () => {
    fc.assert(
      fc.property(taskArb, ({ task, scripts, grace, stopAt }) => {
        const r = simulate(task, scripts, grace, stopAt);
        const o = r.outcome!;
        const regular = task.processes.filter((p) => !p.final);
        const view = new Map(r.view.processes.map((p) => [p.name, p]));
        const failedRegular = regular.filter((p) => !p.ephemeral && view.get(p.name)!.state === 'failed');
        const finalFailed = task.processes.some((p) => p.final && view.get(p.name)!.state === 'failed');
        const overLimit = task.max_failures > 0 && failedRegular.length >= task.max_failures;
        if (o.status === 'success') {
          expect(overLimit).toBe(false);
          expect(finalFailed).toBe(false);
          for (const p of regular.filter((q) => !q.ephemeral))
            expect(['success', 'failed']).toContain(view.get(p.name)!.state);
        }
        if (o.status === 'stopped') expect(r.stoppedAt).not.toBeNull();
        if (o.status === 'failed') {
          const neverRan = regular.some((p) => !p.ephemeral && view.get(p.name)!.state === 'waiting');
          expect(overLimit || finalFailed || neverRan).toBe(true);
        }
      }),
      { numRuns: 400 },
    );
  });
});

/** Tasks whose outcome the two former runners disagreed on, and Thermos's answer. */
describe('Thermos rules, table', () => {
  /** A process whose every run exits with `code` after `ms`. */
  const p = (
    name: string,
    code: number,
    ms: number,
    extra: Partial<TaskInput['processes'][number]> = {},
  ) => ({
    name,
    cmdline: 'x',
    min_duration: 0,
    ...extra,
    code,
    ms,
  });
  const cases: {
    what: string;
    procs: ReturnType<typeof p>[];
    task?: Partial<TaskInput>;
    status: TaskOutcome['status'];
    states: string[];
  }[] = [
    {
      what: 'task max_failures 2: one failed process of three is tolerated',
      procs: [p('a', 0, 10), p('b', 1, 20), p('c', 0, 30)],
      task: { max_failures: 2 },
      status: 'success',
      states: ['success', 'failed', 'success'],
    },
    {
      what: 'task max_failures 2: two failed processes fail the task',
      procs: [p('a', 1, 10), p('b', 1, 20), p('c', 0, 5)],
      task: { max_failures: 2 },
      status: 'failed',
      states: ['failed', 'failed', 'success'],
    },
    {
      what: 'task max_failures 1 (default): the first failed process fails the task',
      procs: [p('a', 1, 10), p('b', 0, 1000)],
      status: 'failed',
      states: ['failed', 'killed'],
    },
    {
      what: 'a successor of a failed process under the limit never runs: deadlock fails the task',
      procs: [p('a', 1, 10), p('b', 0, 10)],
      task: { max_failures: 2, constraints: [{ order: ['a', 'b'] }] },
      status: 'failed',
      states: ['failed', 'waiting'],
    },
    {
      what: 'a final after a failed final never runs',
      procs: [p('a', 0, 10), p('f1', 1, 10, { final: true }), p('f2', 0, 10, { final: true })],
      task: { constraints: [{ order: ['f1', 'f2'] }] },
      status: 'failed',
      states: ['success', 'failed', 'waiting'],
    },
    {
      what: 'an ephemeral process that used up its failures counts as finished',
      procs: [p('main', 0, 50), p('side', 1, 5, { ephemeral: true, max_failures: 2 })],
      status: 'success',
      states: ['success', 'failed'],
    },
  ];

  test.each(cases)('$what', ({ procs, task, status, states }) => {
    const t = Task.parse({
      name: 't',
      ...task,
      processes: procs.map(({ code: _c, ms: _m, ...rest }) => rest),
    });
    const scripts = Object.fromEntries(
      procs.map((q) => [q.name, { runs: [{ code: q.code, ms: q.ms }], ignoresTerm: false }]),
    );
    const r = simulate(t, scripts, 100, 1_000_000);
    expect(r.outcome!.status).toBe(status);
    expect(r.view.processes.map((x) => x.state)).toEqual(states);
  });
});

describe('order rules checked once, at submit', () => {
  test('the spec refuses a regular process ordered after a final one', () => {
    const r = JobSpec.safeParse({
      name: 'j',
      role: 'r',
      cluster: 'c',
      environment: 'e',
      task: {
        name: 't',
        processes: [
          { name: 'a', cmdline: 'true' },
          { name: 'f', cmdline: 'true', final: true },
        ],
        constraints: [{ order: ['f', 'a'] }],
      },
    });
    expect(r.success).toBe(false);
    expect(r.error!.issues[0]).toMatchObject({
      path: ['task', 'constraints', 0, 'order', 1],
      message: expect.stringMatching(/non-final process "a" is ordered after final process "f"/),
    });
  });
});
