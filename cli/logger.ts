/**
 * The daemons' structured logger (pino). `json`: pino's JSON lines, for machines. `pretty`: one readable
 * line per entry (`12:00:01 INFO  job submitted job=… version=2`), on a terminal (coloured) or in a file.
 * The pretty form is a small synchronous formatter here rather than pino-pretty: that runs as a worker
 * transport, breaks records over several lines, and is not shipped in the bundle.
 */
import pino, { type Logger } from 'pino';

const LEVELS: Record<number, [string, number]> = {
  10: ['TRACE', 2],
  20: ['DEBUG', 2],
  30: ['INFO ', 32],
  40: ['WARN ', 33],
  50: ['ERROR', 31],
  60: ['FATAL', 31],
};

const value = (v: unknown): string => {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
};

/** Formats one pino JSON record as one line. Exported for tests. */
export function formatLine(record: string, colour = false): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(record) as Record<string, unknown>;
  } catch {
    return record.endsWith('\n') ? record : `${record}\n`;
  }
  const { time, level, msg, name: _n, pid: _p, hostname: _h, err, ...rest } = o;
  const t = typeof time === 'number' ? new Date(time).toTimeString().slice(0, 8) : '';
  const [label, code] = LEVELS[level as number] ?? [String(level), 0];
  const lvl = colour ? `\u001b[${code}m${label}\u001b[0m` : label;
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${value(v)}`);
  if (err && typeof err === 'object') {
    const e = err as { type?: string; message?: string; stack?: string };
    // A stack stays on the line: its frames joined, so one entry is still one line.
    const stack = e.stack
      ?.split('\n')
      .map((l) => l.trim())
      .join(' | ');
    fields.push(`err=${value(stack ?? `${e.type ?? 'Error'}: ${e.message ?? ''}`)}`);
  }
  const text = `${t} ${lvl} ${String(msg ?? '')}${fields.length ? `  ${fields.join(' ')}` : ''}`;
  return `${text.replace(/\r?\n/g, ' ')}\n`;
}

/** `level` / `format` come from the validated settings (MXC_LOG_LEVEL, MXC_LOG_FORMAT). */
export function createLogger(
  name: string,
  opts: { level?: string; format?: 'json' | 'pretty' } = {},
): Logger {
  const level = opts.level ?? process.env.MXC_LOG_LEVEL ?? 'info';
  const format = opts.format ?? process.env.MXC_LOG_FORMAT;
  const pretty = format === 'pretty' || (process.stderr.isTTY && format !== 'json');
  if (pretty) {
    const colour = process.stderr.isTTY === true && !process.env.NO_COLOR;
    return pino({ name, level }, { write: (s: string) => process.stderr.write(formatLine(s, colour)) });
  }
  return pino({ name, level }, pino.destination(2));
}
