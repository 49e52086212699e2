/** The evaluation queue and the manual clock: coalescing, errors, close, wake-ups and periodic work, without sleeps. */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { ManualClock, systemClock } from '../../scheduler/engine/clock.js';
import { EvaluationQueue, type QueueLog } from '../../scheduler/engine/evaluation-queue.js';
import { PG_ADMIN_URL } from '../helpers/db.js';

/** A run that stays open until the test lets it finish. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { opened, open };
}

function recordingLog() {
  const lines: { level: string; msg: string; err?: unknown; work?: string }[] = [];
  const log: QueueLog = {
    error: (obj, msg) => lines.push({ level: 'error', msg, ...(obj as object) }),
    warn: (obj, msg) => lines.push({ level: 'warn', msg, ...(obj as object) }),
    info: (obj, msg) => lines.push({ level: 'info', msg, ...(obj as object) }),
  };
  return { lines, log };
}

describe('evaluation queue', () => {
  it('runs at once when idle and coalesces every request during a run into exactly one re-run', async () => {
    let runs = 0;
    let current = gate();
    const started: number[] = [];
    const q = new EvaluationQueue(
      {
        pass: {
          failure: 'pass failed',
          run: async () => {
            started.push(++runs);
            await current.opened;
          },
        },
      },
      new ManualClock(),
      recordingLog().log,
    );
    const first = q.request('pass');
    await Promise.resolve();
    await Promise.resolve();
    expect(started).toEqual([1]);
    expect(q.isRunning('pass')).toBe(true);
    // Ten requests while the first run is open: one more run, shared by all of them.
    const during = Array.from({ length: 10 }, () => q.request('pass'));
    const blocked = current;
    current = gate();
    blocked.open();
    await new Promise<void>((r) => setImmediate(r));
    expect(started).toEqual([1, 2]);
    current.open();
    await Promise.all([first, ...during]);
    expect(runs).toBe(2);
    expect(q.runs('pass')).toBe(2);
    expect(q.isRunning('pass')).toBe(false);
    // Idle again: the next request is a fresh run.
    await q.request('pass');
    expect(runs).toBe(3);
  });

  it('resolves a request only after a run that began after it', async () => {
    const seen: number[] = [];
    let value = 0;
    let hold = gate();
    const q = new EvaluationQueue(
      {
        read: {
          failure: 'read failed',
          run: async () => {
            const v = value;
            await hold.opened;
            seen.push(v);
          },
        },
      },
      new ManualClock(),
      recordingLog().log,
    );
    const early = q.request('read');
    await new Promise<void>((r) => setImmediate(r));
    value = 1; // changed while the first run is under way: the late request must see it
    const late = q.request('read');
    hold.open();
    hold = gate();
    hold.open();
    await late;
    await early;
    expect(seen).toEqual([0, 1]);
  });

  it('keeps kinds apart: one kind running does not hold up another', async () => {
    const slow = gate();
    const order: string[] = [];
    const q = new EvaluationQueue(
      {
        slow: { failure: 'slow failed', run: () => slow.opened.then(() => void order.push('slow')) },
        fast: { failure: 'fast failed', run: async () => void order.push('fast') },
      },
      new ManualClock(),
      recordingLog().log,
    );
    const s = q.request('slow');
    await q.request('fast');
    expect(order).toEqual(['fast']);
    slow.open();
    await s;
    expect(order).toEqual(['fast', 'slow']);
  });

  it('logs a failed run at its level, never rejects, and still makes the re-run that was asked for', async () => {
    const { lines, log } = recordingLog();
    let calls = 0;
    const hold = gate();
    const q = new EvaluationQueue(
      {
        flaky: {
          failure: 'flaky work failed',
          level: 'warn',
          run: async () => {
            calls++;
            if (calls === 1) {
              await hold.opened;
              throw new Error('boom');
            }
          },
        },
      },
      new ManualClock(),
      log,
    );
    const a = q.request('flaky');
    await new Promise<void>((r) => setImmediate(r));
    const b = q.request('flaky');
    hold.open();
    await expect(a).resolves.toBeUndefined();
    await expect(b).resolves.toBeUndefined();
    expect(calls).toBe(2);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'warn', msg: 'flaky work failed', work: 'flaky' });
    expect((lines[0]!.err as Error).message).toBe('boom');
  });

  it('logs a failure to reach the database as a warning, whatever the work’s level', async () => {
    const { lines, log } = recordingLog();
    // A real pg client used after its connection ended, as one is after this process was frozen.
    const client = new pg.Client({ connectionString: PG_ADMIN_URL });
    await client.connect();
    await client.end();
    const q = new EvaluationQueue(
      {
        lostConnection: {
          failure: 'needs the database',
          run: async () => void (await client.query('SELECT 1')),
        },
        bug: {
          failure: 'has a bug',
          run: async () => {
            throw new TypeError('x is undefined');
          },
        },
      },
      new ManualClock(),
      log,
    );
    await q.request('lostConnection');
    await q.request('bug');
    expect(lines.map((l) => [l.work, l.level])).toEqual([
      ['lostConnection', 'warn'],
      ['bug', 'error'],
    ]);
    expect((lines[0]!.err as Error).message).toMatch(/not queryable/);
  });

  it('close waits for the run in progress, drops the owed re-run and refuses new requests', async () => {
    let runs = 0;
    const hold = gate();
    const clock = new ManualClock();
    const q = new EvaluationQueue(
      {
        pass: {
          failure: 'pass failed',
          run: async () => {
            runs++;
            await hold.opened;
          },
        },
      },
      clock,
      recordingLog().log,
    );
    q.every('pass', 1000);
    q.requestAt('pass', clock.now() + 5000);
    void q.request('pass');
    await new Promise<void>((r) => setImmediate(r));
    void q.request('pass'); // owed a re-run
    let closed = false;
    const closing = q.close().then(() => {
      closed = true;
    });
    await new Promise<void>((r) => setImmediate(r));
    expect(closed).toBe(false);
    hold.open();
    await closing;
    expect(runs).toBe(1);
    expect(clock.pendingTimers).toBe(0);
    await q.request('pass');
    await clock.advance(10_000);
    expect(runs).toBe(1);
  });

  it('wakes at the earliest requested time only, on the injected clock', async () => {
    const clock = new ManualClock();
    const at: number[] = [];
    const q = new EvaluationQueue(
      { pass: { failure: 'pass failed', run: async () => void at.push(clock.now()) } },
      clock,
      recordingLog().log,
    );
    const t0 = clock.now();
    q.requestAt('pass', t0 + 500);
    q.requestAt('pass', t0 + 200); // earlier: replaces
    q.requestAt('pass', t0 + 900); // later: the earlier wake reconsiders everything anyway
    expect(clock.pendingTimers).toBe(1);
    await clock.advance(199);
    expect(at).toEqual([]);
    await clock.advance(1);
    expect(at).toEqual([t0 + 200]);
    await clock.advance(1000);
    expect(at).toEqual([t0 + 200]);
    // After it fired, a later wake is taken again; one in the past runs at once.
    q.requestAt('pass', clock.now() + 100);
    await clock.advance(100);
    q.requestAt('pass', clock.now() - 5);
    await clock.advance(0);
    expect(at).toHaveLength(3);
    await q.close();
  });

  it('retries a failed run by itself after a delay that doubles with each failure in a row, up to its maximum', async () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const at: number[] = [];
    let failing = 3;
    const { lines, log } = recordingLog();
    const q = new EvaluationQueue(
      {
        pass: {
          failure: 'pass failed',
          retry: { firstMs: 100, maxMs: 300 },
          run: async () => {
            at.push(clock.now() - t0);
            if (failing-- > 0) throw new Error('database away');
          },
        },
        plain: {
          failure: 'plain failed',
          run: async () => {
            throw new Error('always');
          },
        },
      },
      clock,
      log,
    );
    await q.request('pass');
    expect(at).toEqual([0]);
    await clock.advance(99);
    expect(at).toEqual([0]);
    await clock.advance(1);
    expect(at).toEqual([0, 100]);
    await clock.advance(200); // the second failure waits twice as long
    expect(at).toEqual([0, 100, 300]);
    await clock.advance(300); // 400 would exceed the maximum
    expect(at).toEqual([0, 100, 300, 600]);
    // It succeeded: no retry is owed, and the next failure starts from the first delay again.
    await clock.advance(10_000);
    expect(at).toHaveLength(4);
    failing = 1;
    await q.request('pass');
    await clock.advance(100);
    expect(at.slice(4)).toEqual([10_600, 10_700]);
    // Logged at the first failure of each streak (the rest of it within a minute is not), and once
    // when the streak ends.
    expect(lines.map((l) => [l.msg, (l as { retryMs?: number }).retryMs])).toEqual([
      ['pass failed', 100],
      ['runs again after failing', undefined],
      ['pass failed', 100],
    ]);
    expect(lines[1]).toMatchObject({ level: 'info', work: 'pass', failedRuns: 3 });
    lines.length = 0;
    // Work without a retry waits for the next request.
    await q.request('plain');
    await clock.advance(60_000);
    expect(q.runs('plain')).toBe(1);
    expect(clock.pendingTimers).toBe(0);
    await q.close();
  });

  it('logs work that keeps failing once a minute with the count, not at every run', async () => {
    const clock = new ManualClock();
    const { lines, log } = recordingLog();
    let failing = true;
    const q = new EvaluationQueue(
      {
        tick: {
          failure: 'tick failed',
          run: async () => {
            if (failing) throw new Error('connect ECONNREFUSED');
          },
        },
      },
      clock,
      log,
    );
    q.every('tick', 1000);
    await q.request('tick');
    for (let i = 0; i < 150; i++) await clock.advance(1000);
    // 151 failed runs over 150 s: the first, then at 60 s and 120 s, each with its run count.
    expect(lines.map((l) => [l.level, l.msg, (l as { failedRuns?: number }).failedRuns])).toEqual([
      ['error', 'tick failed', undefined],
      ['error', 'tick failed', 61],
      ['error', 'tick failed', 121],
    ]);
    failing = false;
    await clock.advance(1000);
    expect(lines.at(-1)).toMatchObject({ level: 'info', msg: 'runs again after failing', failedRuns: 151 });
    await clock.advance(5000);
    expect(lines).toHaveLength(4);
    await q.close();
  });

  it('runs periodic work at its interval and coalesces a slow run with the ticks it overlaps', async () => {
    const clock = new ManualClock();
    let runs = 0;
    let hold: ReturnType<typeof gate> | null = null;
    const q = new EvaluationQueue(
      {
        tick: {
          failure: 'tick failed',
          run: async () => {
            runs++;
            if (hold) await hold.opened;
          },
        },
      },
      clock,
      recordingLog().log,
    );
    q.every('tick', 100);
    await clock.advance(99);
    expect(runs).toBe(0);
    await clock.advance(1);
    expect(runs).toBe(1);
    await clock.advance(400);
    expect(runs).toBe(5);
    // A run that outlasts five intervals: the ticks during it make one re-run, not five.
    hold = gate();
    await clock.advance(100);
    expect(runs).toBe(6);
    await clock.advance(500);
    const h = hold;
    hold = null;
    h.open();
    await new Promise<void>((r) => setImmediate(r));
    await new Promise<void>((r) => setImmediate(r));
    expect(runs).toBe(7);
    await q.close();
    await clock.advance(1000);
    expect(runs).toBe(7);
  });

  it('refuses a kind it does not know', () => {
    const q = new EvaluationQueue(
      { pass: { failure: 'x', run: async () => {} } },
      new ManualClock(),
      recordingLog().log,
    );
    expect(() => q.request('other' as 'pass')).toThrow(/unknown kind of work: other/);
  });
});

describe('clocks', () => {
  it('a manual clock moves wall and monotonic time together and fires timers in order', async () => {
    const clock = new ManualClock(new Date('2030-06-01T12:00:00Z'));
    const fired: string[] = [];
    clock.setTimer(300, () => fired.push(`c@${clock.monotonic()}`));
    clock.setTimer(100, () => {
      fired.push(`a@${clock.monotonic()}`);
      clock.setTimer(50, () => fired.push(`nested@${clock.monotonic()}`));
    });
    const cancelled = clock.setTimer(200, () => fired.push('cancelled'));
    clock.setTimer(100, () => fired.push(`b@${clock.monotonic()}`));
    cancelled.cancel();
    expect(clock.nextTimerIn()).toBe(100);
    await clock.advance(250);
    expect(fired).toEqual(['a@100', 'b@100', 'nested@150']);
    expect(clock.monotonic()).toBe(250);
    expect(new Date(clock.now()).toISOString()).toBe('2030-06-01T12:00:00.250Z');
    await clock.advance(50);
    expect(fired.at(-1)).toBe('c@300');
    expect(clock.pendingTimers).toBe(0);
    // A stall: time passes, nothing fires until the loop runs again, then the overdue timer fires late.
    const late: number[] = [];
    clock.setTimer(10, () => late.push(clock.monotonic()));
    clock.jump(1000);
    expect(late).toEqual([]);
    await clock.advance(0);
    expect(late).toEqual([1300]);
    await expect(clock.advance(-1)).rejects.toThrow(/does not go back/);
    clock.setWall(0);
    expect(clock.now()).toBe(0);
    expect(clock.monotonic()).toBe(1300);
  });

  it('the system clock is the real one', async () => {
    expect(Math.abs(systemClock.now() - Date.now())).toBeLessThan(1000);
    const m = systemClock.monotonic();
    await new Promise<void>((r) => systemClock.setTimer(1, r));
    expect(systemClock.monotonic()).toBeGreaterThanOrEqual(m);
    let fired = false;
    systemClock
      .setTimer(0, () => {
        fired = true;
      })
      .cancel();
    // Timers of equal delay fire in the order they were set: this one comes after the cancelled one.
    await new Promise<void>((r) => systemClock.setTimer(0, r));
    expect(fired).toBe(false);
  });
});
