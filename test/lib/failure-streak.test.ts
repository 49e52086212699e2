/** FailureStreak: the first failure of a streak logged, then one a period, and the count when it ends. */
import { describe, expect, it } from 'vitest';
import { FailureStreak } from '../../lib/failure-streak.js';

describe('FailureStreak', () => {
  it('logs the first failure, then at most one every period, and counts the streak', () => {
    const s = new FailureStreak(60_000);
    const logged = [0, 1000, 59_999, 60_000, 61_000, 125_000].map((t) => s.failed(t));
    expect(logged).toEqual([true, false, false, true, false, true]);
    expect([s.count, s.since]).toEqual([6, 0]);
    expect(s.ended()).toBe(6);
    // A new streak starts over: its first failure is logged at once, and dates it.
    expect([s.failed(126_000), s.since, s.count]).toEqual([true, 126_000, 1]);
    expect(s.ended()).toBe(1);
    expect(s.ended()).toBe(0);
  });
});
