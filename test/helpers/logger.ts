/** A pino logger for tests: silent unless MXC_TEST_LOG is set. */
import pino from 'pino';

export const testLogger = () => pino({ level: process.env.MXC_TEST_LOG ?? 'silent' });
