/** The agent's bounded buffer of log lines for the coordinator (issue 13.7): never above its bound. */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { LogBuffer, lineBytes, logFrames } from '../../agent/log-buffer.js';
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
    expect(chatty[0]!.line).toMatch(
      /^6 log line\(s\) were not sent: the coordinator was unreachable or took them slower/,
    );
    expect(chatty.slice(1).map((l) => l.line)).toEqual(['line 7', 'line 8', 'line 9', 'line 10']);
    expect(b.size).toBe(0);
    expect(b.drain()).toEqual([]);
  });

  test('lines sent but never confirmed go back before the newer ones, within the bound', () => {
    const b = new LogBuffer(5);
    b.push('w', line(3));
    b.push('w', line(4));
    b.requeue('w', [line(0), line(1), line(2)]);
    expect(b.size).toBe(5);
    expect(b.drain()[0]![1].map((l) => l.line)).toEqual(['line 0', 'line 1', 'line 2', 'line 3', 'line 4']);
    // Past the bound the oldest go, and the drain says how many.
    b.push('w', line(9));
    b.requeue('w', [line(4), line(5), line(6), line(7), line(8)]);
    expect(b.size).toBe(5);
    const [[, out]] = b.drain() as [[string, LogLine[]]];
    expect(out[0]!.line).toMatch(/^1 log line\(s\) were not sent/);
    expect(out.slice(1).map((l) => l.line)).toEqual(['line 5', 'line 6', 'line 7', 'line 8', 'line 9']);
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

  test("also bounded by bytes: long lines drop the writer's oldest ones, and the drain says so", () => {
    const long = (n: number): LogLine => ({ ...line(n), line: 'x'.repeat(10_000) });
    const b = new LogBuffer(1000, 5 * lineBytes(long(0)));
    b.push('quiet', line(0));
    for (let i = 1; i <= 20; i++) b.push('chatty', long(i));
    expect(b.bytes).toBeLessThanOrEqual(5 * lineBytes(long(0)));
    const out = new Map(b.drain());
    expect(out.get('quiet')!.map((l) => l.ts)).toEqual([0]);
    const chatty = out.get('chatty')!;
    expect(chatty[0]!.line).toMatch(/^16 log line\(s\) were not sent/);
    expect(chatty.slice(1).map((l) => l.ts)).toEqual([17, 18, 19, 20]);
    expect(b.bytes).toBe(0);
  });
});

describe('logFrames', () => {
  // Any UTF-16 text: control characters and lone surrogates are what JSON escapes longest.
  const text = fc
    .array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 3000 })
    .map((units) => String.fromCharCode(...units));
  test('property: every frame within its line and byte limits as the JSON sent, the lines in order', () => {
    fc.assert(
      fc.property(
        fc.array(text, { maxLength: 60 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 100_000 }),
        (texts, maxLines, maxBytes) => {
          const lines = texts.map((t, i): LogLine => ({ ...line(i), line: t }));
          const frames = logFrames(lines, maxLines, maxBytes);
          expect(frames.flat()).toEqual(lines);
          for (const f of frames) {
            expect(f.length).toBeGreaterThan(0);
            expect(f.length).toBeLessThanOrEqual(maxLines);
            // A single line larger than the limit still goes, alone.
            if (f.length > 1) {
              const sent = Buffer.byteLength(JSON.stringify({ type: 'logs', workload_id: 'w', lines: f }));
              expect(sent).toBeLessThanOrEqual(maxBytes + 64);
            }
          }
        },
      ),
    );
  });
});
