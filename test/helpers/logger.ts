/** Pino loggers for tests: silent unless MXC_TEST_LOG is set, or capturing every record for assertions. */
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';

export const testLogger = () => pino({ level: process.env.MXC_TEST_LOG ?? 'silent' });

/** A pino record as written: level number, msg, and whatever fields the call bound. */
export type LogRecord = { level: number; msg: string } & Record<string, unknown>;

/** A logger that keeps every record (at `level` and above) for the test to read. */
export function captureLogger(level: pino.Level = 'info'): { logger: Logger; records: LogRecord[] } {
  const records: LogRecord[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) records.push(JSON.parse(line) as LogRecord);
      cb();
    },
  });
  return { logger: pino({ level }, sink), records };
}
