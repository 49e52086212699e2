/** The readable log format of `mxc up`: one line per record, whatever the record holds. */
import { describe, expect, it } from 'vitest';
import { formatLine } from '../../cli/logger.js';

const rec = (o: Record<string, unknown>) =>
  JSON.stringify({
    level: 30,
    time: Date.UTC(2026, 0, 1, 12, 0, 1),
    pid: 1,
    hostname: 'h',
    name: 'mxc',
    ...o,
  });

describe('formatLine', () => {
  it.each([
    [
      { msg: 'coordinator listening', url: 'http://127.0.0.1:4000' },
      / INFO {2}coordinator listening {2}url=http:\/\/127\.0\.0\.1:4000\n$/,
    ],
    [{ level: 40, msg: 'node down', node: 'a b', lost: 2 }, / WARN {2}node down {2}node="a b" lost=2\n$/],
    [{ msg: 'job submitted', workloads: ['x', 'y'] }, /job submitted {2}workloads=\["x","y"\]\n$/],
    [
      {
        level: 50,
        msg: 'boom',
        err: { type: 'Error', message: 'bad', stack: 'Error: bad\n    at f (x.js:1)\n    at g (y.js:2)' },
      },
      / ERROR boom {2}err="Error: bad \| at f \(x\.js:1\) \| at g \(y\.js:2\)"\n$/,
    ],
    [{ msg: 'two\nlines' }, / INFO {2}two lines\n$/],
  ])('%o', (o, re) => {
    const line = formatLine(rec(o));
    expect(line).toMatch(re);
    expect(line.split('\n')).toHaveLength(2);
    expect(line).not.toMatch(/pid=|hostname=|name=/);
  });

  it('passes a line that is not JSON through', () => {
    expect(formatLine('plain text')).toBe('plain text\n');
  });
});
