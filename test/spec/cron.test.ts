/** Cron schedules: parsing errors that say which field, and next runs checked against hand-worked cases. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nextRun, parseCron } from '../../spec/cron.js';

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
  ])('%s after %s → %s', (expr, after, want) => {
    expect(next(expr, after)).toBe(want);
  });

  it.each([
    ['* * * *', /has 4 field\(s\); a cron schedule has 5/],
    ['61 * * * *', /minute "61" is not in 0-59/],
    ['* * * foo *', /month "foo" is not in 1-12/],
    ['*/0 * * * *', /step "0" must be a positive integer/],
    ['5-2 * * * *', /range "5-2" runs backwards/],
    ['0 0 30 2 *', /never matches/],
  ])('refuses %s', (expr, msg) => {
    expect(() => nextRun(parseCron(expr), new Date(0))).toThrow(msg);
  });

  it('returns the first later minute that matches, with nothing matching in between', () => {
    const matches = (c: ReturnType<typeof parseCron>, d: Date) =>
      c.minutes.has(d.getUTCMinutes()) &&
      c.hours.has(d.getUTCHours()) &&
      c.months.has(d.getUTCMonth() + 1) &&
      c.days.has(d.getUTCDate()) &&
      c.weekdays.has(d.getUTCDay());
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
