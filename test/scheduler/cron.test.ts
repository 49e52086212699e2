/** The pure cron step: what a due cron job does now, missed runs included (tables and properties). */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cronStep } from '../../scheduler/core/cron.js';

const at = (s: string) => new Date(`${s}Z`);

describe('cronStep', () => {
  it.each([
    [false, 'KILL_EXISTING', 'launch'],
    [true, 'KILL_EXISTING', 'kill_and_launch'],
    [true, 'CANCEL_NEW', 'skip'],
    [false, 'CANCEL_NEW', 'launch'],
    [true, 'RUN_OVERLAP', 'launch'],
  ] as const)('previous run alive %s, %s → %s', (previousAlive, policy, action) => {
    const s = cronStep(
      { schedule: '0 * * * *', policy, nextRunAt: at('2026-11-21T10:00:00'), previousAlive },
      at('2026-11-21T10:00:30'),
    );
    expect(s).toMatchObject({ due: true, action, missed: [] });
    expect(s.runAt).toEqual(at('2026-11-21T10:00:00'));
    expect(s.next).toEqual(at('2026-11-21T11:00:00'));
  });

  it('is not due before its next run', () => {
    const s = cronStep(
      {
        schedule: '0 * * * *',
        policy: 'RUN_OVERLAP',
        nextRunAt: at('2026-11-21T10:00:00'),
        previousAlive: false,
      },
      at('2026-11-21T09:59:59'),
    );
    expect(s).toMatchObject({ due: false, action: 'none', runAt: null });
  });

  it('after a coordinator was down: one run for the latest due, the earlier ones reported missed', () => {
    const s = cronStep(
      {
        schedule: '*/15 * * * *',
        policy: 'CANCEL_NEW',
        nextRunAt: at('2026-11-21T10:00:00'),
        previousAlive: true,
      },
      at('2026-11-21T11:05:00'),
    );
    expect(s.runAt).toEqual(at('2026-11-21T11:00:00'));
    expect(s.missed.map((d) => d.toISOString().slice(11, 16))).toEqual(['10:00', '10:15', '10:30', '10:45']);
    // The collision policy applies to that one run.
    expect(s.action).toBe('skip');
    expect(s.next).toEqual(at('2026-11-21T11:15:00'));
  });

  it('never launches more than one run per step, and the next run is always in the future', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('*/5 * * * *', '0 */2 * * *', '30 9 * * 1-5', '0 0 */2 * 1'),
        fc.date({ min: new Date('2024-01-01'), max: new Date('2030-01-01'), noInvalidDate: true }),
        fc.integer({ min: 0, max: 3 * 86_400_000 }),
        fc.boolean(),
        (schedule, next, later, alive) => {
          const nextRunAt = new Date(Math.floor(next.getTime() / 60_000) * 60_000);
          const now = new Date(nextRunAt.getTime() + later);
          const s = cronStep({ schedule, policy: 'RUN_OVERLAP', nextRunAt, previousAlive: alive }, now);
          expect(s.due).toBe(true);
          expect(s.action).toBe('launch');
          expect(s.runAt!.getTime()).toBeLessThanOrEqual(now.getTime());
          expect(s.next.getTime()).toBeGreaterThan(now.getTime());
          for (const m of s.missed) expect(m.getTime()).toBeLessThan(s.runAt!.getTime());
        },
      ),
      { numRuns: 200 },
    );
  });
});
