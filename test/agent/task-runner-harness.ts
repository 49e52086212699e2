/** Runs a TaskRunner under test and records its log lines and snapshots. */

import {
  TaskRunner,
  type TaskRunnerOptions,
  type TaskSnapshot,
} from '../../agent/thermos/process-executor.js';
import type { LogLine } from '../../spec/messages.js';
import { tempDir } from './helpers.js';

export interface Harness {
  runner: TaskRunner;
  logs: LogLine[];
  snapshots: TaskSnapshot[];
  workDir: string;
  /** System lines of one process, text only. */
  system: (proc: string) => string[];
  /** Stdout lines of one process. */
  stdout: (proc: string) => string[];
  /** ts of the first system line of `proc` matching `re`. */
  when: (proc: string, re: RegExp, nth?: number) => number;
}

export function harness(opts: Pick<TaskRunnerOptions, 'task'> & Partial<TaskRunnerOptions>): Harness {
  const logs: LogLine[] = [];
  const snapshots: TaskSnapshot[] = [];
  const workDir = opts.workDir ?? tempDir('task');
  const runner = new TaskRunner({
    workloadId: 'w-test',
    workDir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    gracePeriodMs: 300,
    ...opts,
    onLog: (l) => logs.push(l),
    onChange: (s) => snapshots.push(s),
  });
  const matching = (proc: string, stream: LogLine['stream']) =>
    logs.filter((l) => l.process === proc && l.stream === stream).map((l) => l.line);
  return {
    runner,
    logs,
    snapshots,
    workDir,
    system: (proc) => matching(proc, 'system'),
    stdout: (proc) => matching(proc, 'stdout'),
    when: (proc, re, nth = 0) => {
      const hits = logs.filter((l) => l.process === proc && l.stream === 'system' && re.test(l.line));
      if (!hits[nth])
        throw new Error(`no system line of ${proc} matching ${re} (#${nth}): ${JSON.stringify(logs)}`);
      return hits[nth].ts;
    },
  };
}
