/** Aurora's restart rules and flapping back-off, as pure functions: tables and fast-check properties. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { emptyCounts, jobState, outcomeOf } from '../../scheduler/core/lifecycle.js';
import { AURORA_FLAPPING, flappingDelay, restartDecision } from '../../scheduler/core/restart.js';

const at = (s: number) => new Date(1_700_000_000_000 + s * 1000);
const ended = (over: Partial<Parameters<typeof restartDecision>[0]> = {}) => ({
  outcome: 'failed' as const,
  restarts: 0,
  started_at: at(0),
  finished_at: at(1),
  restart_delay_ms: 0,
  ...over,
});

describe('restart decisions', () => {
  it.each([
    [
      'service, finished',
      { outcome: 'finished' as const },
      { service: true, max_task_failures: 1 },
      true,
      false,
    ],
    [
      'service, failed beyond max_task_failures',
      { restarts: 5 },
      { service: true, max_task_failures: 1 },
      true,
      true,
    ],
    [
      'batch, finished',
      { outcome: 'finished' as const },
      { service: false, max_task_failures: 3 },
      false,
      false,
    ],
    ['batch, failure 1 of 3', {}, { service: false, max_task_failures: 3 }, true, true],
    ['batch, failure 3 of 3', { restarts: 2 }, { service: false, max_task_failures: 3 }, false, false],
    ['batch, unlimited failures', { restarts: 99 }, { service: false, max_task_failures: -1 }, true, true],
  ])('%s', (_name, w, job, restart, countAsFailure) => {
    const d = restartDecision(ended(w), job, AURORA_FLAPPING);
    expect(d.restart).toBe(restart);
    expect(d.countAsFailure).toBe(countAsFailure);
  });

  it("uses Aurora's defaults: a task under 5 minutes flaps, waiting 30 s, then 60 s, … at most 5 minutes", () => {
    expect(AURORA_FLAPPING).toEqual({ thresholdMs: 300_000, initialDelayMs: 30_000, maxDelayMs: 300_000 });
    const steps: number[] = [];
    let prev = 0;
    for (let i = 0; i < 6; i++) {
      prev = flappingDelay(ended({ restart_delay_ms: prev }), AURORA_FLAPPING);
      steps.push(prev / 1000);
    }
    expect(steps).toEqual([30, 60, 120, 240, 300, 300]);
    // Ran long enough: no delay, whatever it waited before.
    expect(flappingDelay(ended({ finished_at: at(300), restart_delay_ms: 240_000 }), AURORA_FLAPPING)).toBe(
      0,
    );
    // Never started (failed while starting): flapping.
    expect(flappingDelay(ended({ started_at: null }), AURORA_FLAPPING)).toBe(30_000);
  });

  it('never waits more than the maximum, and never less than the initial delay while flapping', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer({ min: 0, max: 20_000 }),
        fc.integer({ min: 0, max: 1_000_000 }),
        fc.integer({ min: 0, max: 20_000 }),
        (initial, extra, threshold, prev, ranMs) => {
          const policy = { thresholdMs: threshold, initialDelayMs: initial, maxDelayMs: initial + extra };
          const d = flappingDelay(
            ended({
              started_at: at(0),
              finished_at: new Date(at(0).getTime() + ranMs),
              restart_delay_ms: prev,
            }),
            policy,
          );
          if (ranMs >= threshold) expect(d).toBe(0);
          else {
            expect(d).toBeGreaterThanOrEqual(initial);
            expect(d).toBeLessThanOrEqual(policy.maxDelayMs);
          }
        },
      ),
    );
  });
});

describe('outcomes and job states', () => {
  it('records finished only for a workload that ended without being asked to stop', () => {
    expect(outcomeOf('running', 'stopped')).toBe('finished');
    expect(outcomeOf('starting', 'stopped')).toBe('finished');
    expect(outcomeOf('stopping', 'stopped')).toBe('stopped');
    expect(outcomeOf('pending', 'stopped')).toBe('stopped');
    expect(outcomeOf('running', 'failed')).toBe('failed');
    expect(outcomeOf('running', 'lost')).toBe('lost');
    expect(outcomeOf('pending', 'starting')).toBeNull();
  });

  it.each([
    [{ status: 'stopped' as const, cron: false }, { running: 1 }, 'stopped'],
    [{ status: 'active' as const, cron: false }, { running: 1, failed: 1 }, 'running'],
    [{ status: 'active' as const, cron: false }, { pending: 1 }, 'running'],
    [{ status: 'active' as const, cron: false }, { finished: 2 }, 'complete'],
    [{ status: 'active' as const, cron: false }, { finished: 1, lost: 1 }, 'failed'],
    [{ status: 'active' as const, cron: true }, { finished: 1 }, 'running'],
    [{ status: 'active' as const, cron: false }, {}, 'running'],
  ])('%o with latest %o is %s', (job, latest, state) => {
    expect(jobState(job, { ...emptyCounts(), ...latest })).toBe(state);
  });
});
