/** Cron schedules: parsing errors that say which field, and next runs checked against hand-worked cases. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nextRun, parseCron, runsDue } from '../../spec/cron.js';

const at = (s: string) => new Date(`${s}Z`);
const next = (expr: string, after: string) => nextRun(parseCron(expr), at(after)).toISOString().slice(0, 16);

describe('cron', () => {
  it.each([
    ['* * * * *', '2026-11-21T23:59:30', '2026-11-22T00:00'],
    ['*/15 * * * *', '2026-11-21T10:07:00', '2026-11-21T10:15'],
    ['0 3 * * *', '2026-11-21T03:00:00', '2026-11-22T03:00'],
    ['30 9 * * mon-fri', '2026-11-21T10:00:00', '2026-11-23T09:30'],
    ['0 0 1 jan *', '2026-11-21T00:00:00', '2027-01-01T00:00'],
    ['0 12 13 * 5', '2026-11-01T00:00:00', '2026-11-06T12:00'],
    ['0 0 29 2 *', '2026-03-01T00:00:00', '2028-02-29T00:00'],
    ['@hourly', '2026-11-21T10:07:00', '2026-11-21T11:00'],
    ['5,35 */2 * * 7', '2026-11-21T23:00:00', '2026-11-22T00:05'],
    // Vixie's rule: a day field starting with * makes the day test an AND…
    ['0 0 */2 * 1', '2026-11-23T00:00:00', '2026-12-07T00:00'],
    ['0 0 * * 1', '2026-11-23T00:00:00', '2026-11-30T00:00'],
    // …both restricted, an OR: the 1st, the 15th and every Monday.
    ['0 0 1,15 * 1', '2026-11-23T00:00:00', '2026-11-30T00:00'],
    ['0 0 1,15 * 1', '2026-11-30T00:00:00', '2026-12-01T00:00'],
  ])('%s after %s → %s', (expr, after, want) => {
    expect(next(expr, after)).toBe(want);
  });

  it('0 0 */2 * 1 fires only on Mondays that are odd days of the month (Vixie cron)', () => {
    const c = parseCron('0 0 */2 * 1');
    const runs: Date[] = [];
    let t = at('2026-01-01T00:00:00');
    while (runs.length < 30) {
      t = nextRun(c, t);
      runs.push(t);
    }
    for (const r of runs) {
      expect(r.getUTCDay(), r.toISOString()).toBe(1);
      expect(r.getUTCDate() % 2, r.toISOString()).toBe(1);
      expect(r.getUTCHours() + r.getUTCMinutes()).toBe(0);
    }
    // None skipped: every odd-dated Monday of the span is there.
    let mondays = 0;
    for (let d = at('2026-01-02T00:00:00').getTime(); d <= runs.at(-1)!.getTime(); d += 86_400_000) {
      const day = new Date(d);
      if (day.getUTCDay() === 1 && day.getUTCDate() % 2 === 1) mondays++;
    }
    expect(mondays).toBe(30);
  });

  it('lists the runs a coordinator missed while down, oldest first, keeping the latest', () => {
    const c = parseCron('0 * * * *');
    expect(
      runsDue(c, at('2026-11-21T10:00:00'), at('2026-11-21T13:30:00')).map((d) =>
        d.toISOString().slice(11, 16),
      ),
    ).toEqual(['10:00', '11:00', '12:00', '13:00']);
    expect(
      runsDue(c, at('2026-11-21T10:00:00'), at('2026-11-21T13:30:00'), 2).map((d) => d.getUTCHours()),
    ).toEqual([12, 13]);
    expect(runsDue(c, at('2026-11-21T10:00:00'), at('2026-11-21T09:59:00'))).toEqual([]);
  });

  it.each([
    ['* * * *', /has 4 field\(s\); a cron schedule has 5/],
    ['61 * * * *', /"61 \* \* \* \*": .*minute: 61/],
    ['* * * foo *', /"\* \* \* foo \*": .*\(foo\) contains illegal characters/],
    ['*/0 * * * *', /illegal stepping: 0/],
    ['5-2 * * * *', /larger than to value: '5-2'/],
    ['0 0 30 2 *', /never matches/],
  ])('refuses %s', (expr, msg) => {
    expect(() => nextRun(parseCron(expr), new Date(0))).toThrow(msg);
  });

  it('returns the first later minute that matches, with nothing matching in between', () => {
    // An oracle per expression, written out by hand.
    const oracle: Record<string, (m: number, h: number) => boolean> = {
      '*/7 * * * *': (m) => m % 7 === 0,
      '0 */3 * * *': (m, h) => m === 0 && h % 3 === 0,
      '15 10 * * *': (m, h) => m === 15 && h === 10,
      '*/5 9-17 * * *': (m, h) => m % 5 === 0 && h >= 9 && h <= 17,
      '59 23 * * *': (m, h) => m === 59 && h === 23,
    };
    const matches = (c: ReturnType<typeof parseCron>, d: Date) =>
      d.getUTCSeconds() === 0 && oracle[c.expr]!(d.getUTCMinutes(), d.getUTCHours());
    fc.assert(
      fc.property(
        fc.constantFrom('*/7 * * * *', '0 */3 * * *', '15 10 * * *', '*/5 9-17 * * *', '59 23 * * *'),
        fc.date({ min: new Date('2020-01-01'), max: new Date('2030-01-01'), noInvalidDate: true }),
        (expr, after) => {
          const c = parseCron(expr);
          const n = nextRun(c, after);
          expect(n.getTime()).toBeGreaterThan(after.getTime());
          expect(matches(c, n)).toBe(true);
          const first = new Date(after.getTime());
          first.setUTCSeconds(0, 0);
          for (let t = first.getTime() + 60_000; t < n.getTime(); t += 60_000)
            expect(matches(c, new Date(t))).toBe(false);
        },
      ),
      { numRuns: 100 },
    );
  });
});
