/** The agent's bounded buffer of log lines for the coordinator (issue 13.7): never above its bound. */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { LogBuffer } from '../../agent/log-buffer.js';
import type { LogLine } from '../../spec/messages.js';

const line = (n: number): LogLine => ({ process: 'p', stream: 'stdout', run: 1, ts: n, line: `line ${n}` });

describe('LogBuffer', () => {
  test('holds at most its bound; a chatty workload loses its own oldest lines, and the drain says how many', () => {
    const b = new LogBuffer(5);
    b.push('quiet', line(0));
    for (let i = 1; i <= 10; i++) b.push('chatty', line(i));
    expect(b.size).toBe(5);
    const out = new Map(b.drain(99));
    expect(out.get('quiet')!.map((l) => l.line)).toEqual(['line 0']);
    const chatty = out.get('chatty')!;
    expect(chatty[0]).toMatchObject({ process: 'mxc', stream: 'system' });
    expect(chatty[0]!.line).toMatch(/^6 log line\(s\) were not sent while the coordinator was unreachable/);
    expect(chatty.slice(1).map((l) => l.line)).toEqual(['line 7', 'line 8', 'line 9', 'line 10']);
    expect(b.size).toBe(0);
    expect(b.drain()).toEqual([]);
  });

  test('property: bounded, order kept, and kept + dropped = pushed, per workload', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.constantFrom('a', 'b', 'c'), { maxLength: 300 }),
        (max, ids) => {
          const b = new LogBuffer(max);
          const pushed = new Map<string, number[]>();
          ids.forEach((id, n) => {
            b.push(id, line(n));
            pushed.set(id, [...(pushed.get(id) ?? []), n]);
            expect(b.size).toBeLessThanOrEqual(max);
          });
          for (const [id, lines] of b.drain()) {
            const mine = pushed.get(id)!;
            const notice = lines[0]!.stream === 'system' ? lines[0]! : null;
            const kept = (notice ? lines.slice(1) : lines).map((l) => l.ts);
            const dropped = notice ? Number(/^(\d+) /.exec(notice.line)![1]) : 0;
            expect(kept).toEqual(mine.slice(mine.length - kept.length));
            expect(kept.length + dropped).toBe(mine.length);
          }
        },
      ),
    );
  });
});
