/**
 * cgroup v2 limits. The launcher wrapper is tested everywhere (its pid lands in the cgroup's procs
 * file and the command is exec'd with its arguments untouched); enforcement (memory.max OOM-kills a
 * process past it) only where this machine offers cgroup v2 memory and cpu controllers.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  cgroupLaunch,
  createWorkloadCgroup,
  prepareCgroupRoot,
  removeWorkloadCgroup,
} from '../../agent/cgroups.js';
import { plainLaunch } from '../../agent/thermos/cmdline.js';
import { TaskRunner } from '../../agent/thermos/process-executor.js';
import type { LogLine } from '../../spec/messages.js';
import { makeTask, tempDir } from './helpers.js';

const cgroupRoot = await prepareCgroupRoot();

function runTask(cmdline: string, launchDir: string, workDir: string) {
  const lines: LogLine[] = [];
  const runner = new TaskRunner({
    workloadId: 'cg',
    task: makeTask([{ name: 'p', cmdline, max_failures: 1 }]),
    workDir,
    env: { PATH: '/usr/bin:/bin' },
    launch: cgroupLaunch(plainLaunch, launchDir),
    gracePeriodMs: 200,
    onLog: (l) => lines.push(l),
  });
  runner.start();
  return { runner, lines };
}

describe('cgroup launcher', () => {
  it('enters the cgroup by pid, then execs the command with its arguments as given', async () => {
    const dir = tempDir('cg-wrap');
    writeFileSync(join(dir, 'cgroup.procs'), '');
    const script = join(dir, 'show.sh');
    writeFileSync(script, '#!/bin/sh\necho "pid $$"\nfor a in "$@"; do echo "arg [$a]"; done\n', {
      mode: 0o755,
    });
    const { runner, lines } = runTask(`${script} a=x,y@z b`, dir, dir);
    const snap = await runner.done;
    expect(snap.status).toBe('success');
    const out = lines.filter((l) => l.stream === 'stdout').map((l) => l.line);
    // exec: the command runs as the very pid that entered the cgroup, and the leader of its group.
    expect(out[0]).toBe(`pid ${readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim()}`);
    expect(out.slice(1)).toEqual(['arg [a=x,y@z]', 'arg [b]']);
  });
});

describe.skipIf(cgroupRoot === null)('cgroup v2 enforcement', () => {
  it('sets memory.max and cpu.max, and a process allocating past memory.max is killed', async () => {
    const dir = await createWorkloadCgroup(cgroupRoot!, `test-${process.pid}`, {
      ramBytes: 32 * 1024 * 1024,
      cpu: 0.5,
    });
    try {
      expect(readFileSync(join(dir, 'memory.max'), 'utf8').trim()).toBe(String(32 * 1024 * 1024));
      expect(readFileSync(join(dir, 'cpu.max'), 'utf8').trim()).toBe('50000 100000');
      const alloc = `${process.execPath} -e "const b=[];for(;;)b.push(Buffer.alloc(8<<20,1))"`;
      const { runner } = runTask(alloc, dir, tempDir('cg-oom'));
      const snap = await runner.done;
      expect(snap.status).toBe('failed');
      expect(snap.processes[0]!.exit_code).toBe(137);
    } finally {
      await removeWorkloadCgroup(dir);
    }
  });
});

describe.skipIf(cgroupRoot !== null)('without cgroup v2 controllers', () => {
  it('reports limits as not enforced', () => {
    // This machine: the memory and cpu controllers are not on a writable unified hierarchy.
    expect(cgroupRoot).toBeNull();
  });
});
