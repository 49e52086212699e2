import { randomBytes } from 'node:crypto';
import { defineConfig } from 'vitest/config';

// One id per run, so parallel workers share one freshly migrated template database.
process.env.MXC_TEST_RUN_ID ??= randomBytes(6).toString('hex');

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
