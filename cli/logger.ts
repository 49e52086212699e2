/** The daemons' structured logger (pino): JSON lines, or pretty on a TTY unless MXC_LOG_FORMAT=json. */
import pino, { type Logger } from 'pino';

export function createLogger(name: string): Logger {
  const level = process.env.MXC_LOG_LEVEL ?? 'info';
  const pretty = process.stderr.isTTY && process.env.MXC_LOG_FORMAT !== 'json';
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
