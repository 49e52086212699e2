/** The daemons' structured logger (pino): JSON lines, or pretty on a TTY unless MXC_LOG_FORMAT=json. */
import pino, { type Logger } from 'pino';

/** `level` / `format` come from the validated settings (MXC_LOG_LEVEL, MXC_LOG_FORMAT). */
export function createLogger(
  name: string,
  opts: { level?: string; format?: 'json' | 'pretty' } = {},
): Logger {
  const level = opts.level ?? process.env.MXC_LOG_LEVEL ?? 'info';
  const format = opts.format ?? process.env.MXC_LOG_FORMAT;
  const pretty = format === 'pretty' || (process.stderr.isTTY && format !== 'json');
  if (pretty) {
    return pino({
      name,
      level,
      transport: {
        target: 'pino-pretty',
        options: { destination: 2, ignore: 'pid,hostname', translateTime: 'HH:MM:ss' },
      },
    });
  }
  return pino({ name, level }, pino.destination(2));
}
