/**
 * The pure rolling-update step (core/reconcile/rollout): table-driven cases and fast-check properties,
 * on single snapshots (never more than batch_size in flight, the failure limit always ends the update,
 * stops only touch what the update replaces) and on whole simulated rollouts (a good version converges
 * to every instance on it; a bad one is rolled back and the previous version runs every instance again).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_ROLLOUT_CONFIG,
  failedInstanceSet,
  failedInstances,
  isLive,
  type RolloutConfig,
  type RolloutSnapshot,
  type RolloutStep,
  type RolloutWorkload,
  rolloutStep,
  standing,
} from '../../scheduler/core/reconcile/rollout.js';
import { WORKLOAD_STATUSES, type WorkloadStatus } from '../../spec/messages.js';

const T0 = 1_000_000;
const cfg = (over: Partial<RolloutConfig> = {}): RolloutConfig => ({
  ...DEFAULT_ROLLOUT_CONFIG,
  watch_secs: 10,
  ...over,
});
const wl = (id: string, over: Partial<RolloutWorkload> = {}): RolloutWorkload => ({
  id,
  instance: 0,
  job_version: 1,
  status: 'running',
  created_at: T0 - 100_000,
  started_at: T0 - 100_000,
  health: null,
  ...over,
});
const snap = (
  workloads: RolloutWorkload[],
  over: { config?: Partial<RolloutConfig>; instances?: number; next?: number; rollback?: boolean } = {},
): RolloutSnapshot => ({
  update: {
    from_version: 1,
    to_version: 2,
    rollback: over.rollback ?? false,
    restart: false,
    next_instance: over.next ?? 0,
    created_at: T0,
  },
  target: { instances: over.instances ?? 3, config: cfg(over.config), health_checked: false },
  workloads,
});

describe('rolloutStep: cases', () => {
  it('starts the first batch: stops the old workloads of batch_size instances and creates new ones', () => {
    const s = snap(
      [0, 1, 2].map((i) => wl(`old-${i}`, { instance: i })),
      { config: { batch_size: 2 } },
    );
    const step = rolloutStep(s, T0 + 1000);
    expect(step.creates.map((c) => c.instance)).toEqual([0, 1]);
    expect(step.stops.map((x) => x.workloadId)).toEqual(['old-0', 'old-1']);
    expect(step.stops[0]!.reason).toBe('replaced by version 2 (rolling update)');
    expect(step.end).toBeNull();
    expect(step.progress).toBeNull();
  });

  it('waits out watch_secs, then moves the window on', () => {
    const fresh = wl('new-0', { job_version: 2, created_at: T0, started_at: T0 + 1000 });
    const s = snap([fresh, wl('old-1', { instance: 1 })], { instances: 2 });
    expect(rolloutStep(s, T0 + 5000).creates).toEqual([]); // watching instance 0
    const later = rolloutStep(s, T0 + 11_000);
    expect(later.progress).toEqual({ next_instance: 1, message: '1 of 2 instance(s) updated' });
    expect(later.creates.map((c) => c.instance)).toEqual([1]);
  });

  it('fails an instance that did not reach running within restart_threshold', () => {
    const stuck = wl('new-0', { job_version: 2, status: 'starting', created_at: T0, started_at: null });
    const step = rolloutStep(snap([stuck], { instances: 1, config: { restart_threshold: 5 } }), T0 + 6000);
    expect(step.fails).toEqual([
      { workloadId: 'new-0', reason: 'did not reach running within restart_threshold (5 s)' },
    ]);
  });

  it('ends rolled back past max_total_failures, failed when it is already a rollback', () => {
    const failed = wl('new-0', { job_version: 2, status: 'failed', created_at: T0 + 1 });
    expect(rolloutStep(snap([failed]), T0 + 10).end).toEqual({
      status: 'rolled_back',
      message: '1 instance(s) of version 2 failed (max_total_failures 0); rolled back to version 1',
    });
    expect(rolloutStep(snap([failed], { rollback: true }), T0 + 10).end?.status).toBe('failed');
  });

  it('moves past an instance that failed more than max_per_shard_failures times, never retrying it', () => {
    const config = { max_per_shard_failures: 1, max_total_failures: 1, batch_size: 1 };
    const tries = [1, 2].map((k) =>
      wl(`new-0-${k}`, {
        instance: 0,
        job_version: 2,
        status: 'failed',
        created_at: T0 + k,
        started_at: null,
      }),
    );
    const old = wl('old-1', { instance: 1 });
    // One failure: the instance is retried.
    expect(rolloutStep(snap([tries[0]!, old], { instances: 2, config }), T0 + 10).creates).toEqual([
      { instance: 0, reason: 'rolling update to version 2' },
    ]);
    // Two: it failed the update for good; the window moves on to instance 1.
    const step = rolloutStep(snap([...tries, old], { instances: 2, config }), T0 + 10);
    expect(step.creates).toEqual([{ instance: 1, reason: 'rolling update to version 2' }]);
    expect(step.progress).toEqual({ next_instance: 1, message: '1 of 2 instance(s) updated' });
    expect(step.end).toBeNull();
    // Instance 1 done: the update ends within its failure limit.
    const done = wl('new-1', { instance: 1, job_version: 2, created_at: T0 + 3, started_at: T0 + 3 });
    expect(rolloutStep(snap([...tries, done], { instances: 2, config, next: 1 }), T0 + 60_000).end).toEqual({
      status: 'succeeded',
      message: '1 of 2 instance(s) run version 2; 1 instance(s) failed (max_total_failures 1)',
    });
    // A single always-failing instance within the limit ends the update too (it was retried for ever).
    expect(rolloutStep(snap(tries, { instances: 1, config }), T0 + 10).end).toEqual({
      status: 'succeeded',
      message: '0 of 1 instance(s) run version 2; 1 instance(s) failed (max_total_failures 1)',
    });
  });

  it('succeeds once every instance is done and stops the instances beyond the new count', () => {
    const done = [0, 1].map((i) => wl(`new-${i}`, { instance: i, job_version: 2, created_at: T0 }));
    const step = rolloutStep(snap([...done, wl('old-2', { instance: 2 })], { instances: 2 }), T0 + 60_000);
    expect(step.stops).toEqual([{ workloadId: 'old-2', reason: 'version 2 has 2 instance(s)' }]);
    expect(step.end).toEqual({ status: 'succeeded', message: 'all 2 instance(s) run version 2' });
  });

  it('with wait_for_batch_completion, starts the next batch only once the whole batch is done', () => {
    const s = snap(
      [
        wl('new-0', { instance: 0, job_version: 2, created_at: T0, started_at: T0 }),
        wl('new-1', { instance: 1, job_version: 2, created_at: T0, started_at: T0 + 50_000 }),
        wl('old-2', { instance: 2 }),
        wl('old-3', { instance: 3 }),
      ],
      { instances: 4, config: { batch_size: 2, wait_for_batch_completion: true } },
    );
    expect(rolloutStep(s, T0 + 20_000).creates).toEqual([]); // instance 1 still watched
    const step = rolloutStep(s, T0 + 61_000);
    expect(step.progress?.next_instance).toBe(2);
    expect(step.creates.map((c) => c.instance)).toEqual([2, 3]);
  });

  it('fails an update whose target version is gone', () => {
    expect(rolloutStep({ ...snap([]), target: null }, T0).end).toEqual({
      status: 'failed',
      message: 'version 2 is gone',
    });
  });
});

// ------------------------------------------------------------------ properties on single snapshots

const STATUSES: readonly WorkloadStatus[] = WORKLOAD_STATUSES;

const arbConfig = fc.record({
  batch_size: fc.integer({ min: 1, max: 4 }),
  watch_secs: fc.integer({ min: 0, max: 30 }),
  max_total_failures: fc.integer({ min: 0, max: 3 }),
  max_per_shard_failures: fc.integer({ min: 0, max: 2 }),
  rollback_on_failure: fc.boolean(),
  restart_threshold: fc.integer({ min: 0, max: 60 }),
  wait_for_batch_completion: fc.boolean(),
});

const arbSnapshot: fc.Arbitrary<{ s: RolloutSnapshot; now: number }> = fc
  .record({
    config: arbConfig,
    instances: fc.integer({ min: 1, max: 6 }),
    next: fc.integer({ min: 0, max: 6 }),
    rollback: fc.boolean(),
    restart: fc.boolean(),
    now: fc.integer({ min: 0, max: 120_000 }),
    healthChecked: fc.boolean(),
    workloads: fc.array(
      fc.record({
        instance: fc.integer({ min: 0, max: 7 }),
        version: fc.constantFrom(1, 2),
        status: fc.constantFrom(...STATUSES),
        created: fc.integer({ min: -60_000, max: 120_000 }),
        ranFor: fc.option(fc.integer({ min: 0, max: 120_000 })),
        health: fc.constantFrom('unknown' as const, 'healthy' as const, 'unhealthy' as const, null),
      }),
      { maxLength: 20 },
    ),
  })
  .map((r) => ({
    now: T0 + Math.max(r.now, ...r.workloads.map((w) => w.created)),
    s: {
      update: {
        from_version: r.restart ? 2 : 1,
        to_version: 2,
        rollback: r.rollback,
        restart: r.restart,
        next_instance: Math.min(r.next, r.instances),
        created_at: T0,
      },
      target: { instances: r.instances, config: r.config, health_checked: r.healthChecked },
      workloads: r.workloads.map((w, i) => ({
        id: `w${i}`,
        instance: w.instance,
        job_version: w.version,
        status: w.status,
        created_at: T0 + w.created,
        started_at:
          w.status === 'running' || (w.ranFor !== null && w.status !== 'pending' && w.status !== 'starting')
            ? T0 + w.created + (w.ranFor ?? 0)
            : null,
        health: w.health,
      })),
    },
  }));

/**
 * Instances from next_instance up to `last` (all below the target count by default) whose current
 * workload is not done yet (not running for watch_secs, not healthy when checked).
 */
function inFlight(s: RolloutSnapshot, now: number, last = s.target!.instances - 1): number {
  const cfg = s.target!.config;
  // An instance that failed the update for good is terminal, as in Aurora's updater: whatever still
  // runs there (a restart by the job's own policy) is not the update's and holds no place in its window.
  const failed = failedInstanceSet(s, cfg);
  let n = 0;
  for (let i = s.update.next_instance; i <= Math.min(last, s.target!.instances - 1); i++) {
    if (failed.has(i)) continue;
    const { current } = standing(s, i);
    if (!current) continue;
    const done =
      current.status === 'running' &&
      current.started_at !== null &&
      now - current.started_at >= cfg.watch_secs * 1000 &&
      (s.target!.health_checked ? current.health === 'healthy' : current.health !== 'unhealthy');
    if (!done) n++;
  }
  return n;
}

/** The snapshot after a step, as the apply leaves it (the stop and fail transitions succeed). */
function applied(s: RolloutSnapshot, step: RolloutStep, now: number, tag: string): RolloutSnapshot {
  const stops = new Set(step.stops.map((x) => x.workloadId));
  const fails = new Set(step.fails.map((x) => x.workloadId));
  const workloads = s.workloads.map((w) =>
    fails.has(w.id)
      ? { ...w, status: 'failed' as const }
      : stops.has(w.id) && isLive(w)
        ? { ...w, status: w.status === 'pending' ? ('stopped' as const) : ('stopping' as const) }
        : w,
  );
  step.creates.forEach((c, i) => {
    workloads.push({
      id: `${tag}-${i}`,
      instance: c.instance,
      job_version: s.update.to_version,
      status: 'pending',
      created_at: now,
      started_at: null,
      health: null,
    });
  });
  const next =
    step.end?.status === 'succeeded'
      ? s.target!.instances
      : (step.progress?.next_instance ?? s.update.next_instance);
  return { ...s, update: { ...s.update, next_instance: next }, workloads };
}

describe('rolloutStep: properties', () => {
  it('never creates an instance beyond batch_size in flight, counted from next_instance', () => {
    fc.assert(
      fc.property(arbSnapshot, ({ s, now }) => {
        const step = rolloutStep(s, now);
        const batch = s.target!.config.batch_size;
        expect(step.creates.length).toBeLessThanOrEqual(batch);
        // Arbitrary snapshots may hold in-flight instances past the window (states no rollout leaves
        // behind); up to the last instance it creates, at most batch_size are in flight. The whole-
        // rollout simulations below check the bound over every instance.
        const last = Math.max(-1, ...step.creates.map((c) => c.instance));
        if (last >= 0) expect(inFlight(applied(s, step, now, 'new'), now, last)).toBeLessThanOrEqual(batch);
        if (s.target!.config.wait_for_batch_completion) {
          const from = step.progress?.next_instance ?? s.update.next_instance;
          for (const c of step.creates) expect(c.instance).toBeLessThan(from + batch);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('ends the update whenever failed instances exceed max_total_failures, and only then for failures', () => {
    fc.assert(
      fc.property(arbSnapshot, ({ s, now }) => {
        const cfg = s.target!.config;
        const step = rolloutStep(s, now);
        const over = failedInstances(s, cfg) > cfg.max_total_failures;
        if (over) {
          expect(step.end?.status).toBe(
            cfg.rollback_on_failure && !s.update.rollback ? 'rolled_back' : 'failed',
          );
          expect([step.creates, step.stops, step.fails]).toEqual([[], [], []]);
        } else {
          expect(step.end?.status ?? 'none').not.toMatch(/failed|rolled_back/);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('stops only live workloads, each once, never the current workload of an instance it keeps', () => {
    fc.assert(
      fc.property(arbSnapshot, ({ s, now }) => {
        const step = rolloutStep(s, now);
        const ids = step.stops.map((x) => x.workloadId);
        expect(new Set(ids).size).toBe(ids.length);
        const byId = new Map(s.workloads.map((w) => [w.id, w]));
        for (const id of ids) {
          const w = byId.get(id)!;
          expect(isLive(w)).toBe(true);
          if (w.instance < s.target!.instances) expect(standing(s, w.instance).current).not.toBe(w);
        }
        for (const f of step.fails) expect(['pending', 'starting']).toContain(byId.get(f.workloadId)!.status);
        // An instance gets a new workload only when it has no current one and has not failed the
        // update for good (more than max_per_shard_failures failures).
        const failed = failedInstanceSet(s, s.target!.config);
        for (const c of step.creates) {
          expect(standing(s, c.instance).current).toBeUndefined();
          expect(failed.has(c.instance)).toBe(false);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('is deterministic and never moves next_instance backwards', () => {
    fc.assert(
      fc.property(arbSnapshot, ({ s, now }) => {
        const step = rolloutStep(s, now);
        expect(rolloutStep(s, now)).toEqual(step);
        if (step.progress) expect(step.progress.next_instance).toBeGreaterThan(s.update.next_instance);
      }),
      { numRuns: 1000 },
    );
  });
});

// ------------------------------------------------------------------ whole rollouts, simulated

/**
 * Runs a rollout to its end: every step is followed by the agents' answers (a new workload that is
 * `good` starts running and stays healthy; any other fails) and time passing. Returns the
 * update's end and the workloads. A rolled-back update is followed by its rollback update.
 */
function simulate(
  config: RolloutConfig,
  instances: number,
  oldInstances: number,
  good: (w: RolloutWorkload) => boolean,
  tickMs: number,
) {
  let now = T0;
  const workloads: RolloutWorkload[] = Array.from({ length: oldInstances }, (_, i) =>
    wl(`v1-${i}`, { instance: i, created_at: T0 - 1_000_000, started_at: T0 - 1_000_000 }),
  );
  let s: RolloutSnapshot = {
    update: {
      from_version: 1,
      to_version: 2,
      rollback: false,
      restart: false,
      next_instance: 0,
      created_at: now,
    },
    target: { instances, config, health_checked: false },
    workloads,
  };
  const ends: string[] = [];
  for (let round = 0; round < 2000; round++) {
    const step = rolloutStep(s, now);
    const inFlightNow = inFlight(applied(s, step, now, `r${round}`), now);
    if (step.creates.length > 0) expect(inFlightNow).toBeLessThanOrEqual(config.batch_size);
    s = applied(s, step, now, `r${round}`);
    if (step.end) {
      ends.push(step.end.status);
      if (step.end.status !== 'rolled_back') return { ends, s };
      // The job goes back to the previous version, rolled out by a rollback update.
      s = {
        update: {
          from_version: 2,
          to_version: 1,
          rollback: true,
          restart: false,
          next_instance: 0,
          created_at: now,
        },
        target: { instances: oldInstances, config, health_checked: false },
        workloads: s.workloads,
      };
    }
    now += tickMs;
    // The agents answer: stops end, new workloads start (or fail when their version is bad).
    s = {
      ...s,
      workloads: s.workloads.map((w) =>
        w.status === 'stopping'
          ? { ...w, status: 'stopped' as const }
          : w.status === 'pending'
            ? good(w)
              ? { ...w, status: 'running' as const, started_at: now }
              : { ...w, status: 'failed' as const }
            : w,
      ),
    };
  }
  throw new Error('the rollout did not end within 2000 steps');
}

const liveVersions = (s: RolloutSnapshot) =>
  s.workloads
    .filter(isLive)
    .map((w) => `${w.instance}:v${w.job_version}:${w.status}`)
    .sort();

/**
 * An instance that failed more than max_per_shard_failures times has failed the update for good and
 * the window moves past it (Aurora), so a version that always fails ends the update for failures
 * exactly when it has more instances than max_total_failures; otherwise every instance fails and the
 * update ends (succeeded, within its failure limit) instead of retrying them for ever.
 */
const endsOnFailures = (config: RolloutConfig, n: number) => n > config.max_total_failures;

describe('rolloutStep: whole rollouts', () => {
  it('a good version ends with every instance running it, the old ones stopped', () => {
    fc.assert(
      fc.property(
        arbConfig,
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 6 }),
        (config, n, old) => {
          const { ends, s } = simulate(config, n, old, () => true, 1000);
          expect(ends).toEqual(['succeeded']);
          expect(liveVersions(s)).toEqual(Array.from({ length: n }, (_, i) => `${i}:v2:running`).sort());
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a bad version is rolled back: the previous version runs every instance again', () => {
    fc.assert(
      fc.property(
        arbConfig.map((c) => ({ ...c, rollback_on_failure: true })),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 6 }),
        (config, n, old) => {
          fc.pre(endsOnFailures(config, n));
          const { ends, s } = simulate(config, n, old, (w) => w.job_version === 1, 1000);
          expect(ends).toEqual(['rolled_back', 'succeeded']);
          expect(liveVersions(s)).toEqual(Array.from({ length: old }, (_, i) => `${i}:v1:running`).sort());
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a bad version without rollback_on_failure ends failed just past max_total_failures', () => {
    fc.assert(
      fc.property(
        arbConfig.map((c) => ({ ...c, rollback_on_failure: false })),
        fc.integer({ min: 1, max: 6 }),
        (config, n) => {
          fc.pre(endsOnFailures(config, n));
          const { ends, s } = simulate(config, n, n, (w) => w.job_version === 1, 1000);
          expect(ends).toEqual(['failed']);
          const failed = new Set(s.workloads.filter((w) => w.status === 'failed').map((w) => w.instance));
          expect(failed.size).toBeGreaterThan(config.max_total_failures);
          expect(failed.size).toBeLessThanOrEqual(config.max_total_failures + config.batch_size);
          // Nothing of the bad version is left live; the old version keeps the instances not reached.
          expect(s.workloads.some((w) => w.job_version === 2 && isLive(w))).toBe(false);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a bad version with no more instances than max_total_failures ends: each instance tried max_per_shard_failures + 1 times', () => {
    fc.assert(
      fc.property(arbConfig, fc.integer({ min: 1, max: 6 }), (config, n) => {
        fc.pre(!endsOnFailures(config, n));
        const { ends, s } = simulate(config, n, n, (w) => w.job_version === 1, 1000);
        expect(ends).toEqual(['succeeded']);
        for (let i = 0; i < n; i++) {
          const tries = s.workloads.filter((w) => w.job_version === 2 && w.instance === i);
          expect(tries.map((w) => w.status)).toEqual(
            Array.from({ length: config.max_per_shard_failures + 1 }, () => 'failed'),
          );
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a version that fails on some instances only ends, failed instances within the limit or rolled back', () => {
    fc.assert(
      fc.property(
        arbConfig,
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 6 }),
        fc.uniqueArray(fc.integer({ min: 0, max: 5 })),
        (config, n, old, bad) => {
          const badInstances = new Set(bad.filter((i) => i < n));
          const { ends } = simulate(
            config,
            n,
            old,
            (w) => w.job_version === 1 || !badInstances.has(w.instance),
            1000,
          );
          if (badInstances.size > config.max_total_failures) {
            expect(ends[0]).toBe(config.rollback_on_failure ? 'rolled_back' : 'failed');
          } else {
            expect(ends).toEqual(['succeeded']);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
