/**
 * Process groups left by a previous agent run. The agent records each workload's group leaders in
 * `<workload dir>/pids.json` with their kernel start times; a restarted agent cannot re-attach their
 * output pipes, so it stops them, and the start time keeps it from killing a recycled pid.
 */
import { readFileSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { signalGroup, waitGroupEmpty } from './thermos/process-group.js';

export interface RecordedPid {
  pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot); null when it could not be read. */
  start: number | null;
}

/** The kernel start time of `pid`, or null when it does not exist. */
export function processStartTime(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return null;
  }
}

export async function writePids(workloadDir: string, pids: number[]): Promise<void> {
  const rec: RecordedPid[] = pids.map((pid) => ({ pid, start: processStartTime(pid) }));
  await writeFile(join(workloadDir, 'pids.json'), JSON.stringify(rec));
}

async function readPids(file: string): Promise<RecordedPid[]> {
  const raw = JSON.parse(await readFile(file, 'utf8').catch(() => '[]')) as unknown;
  if (!Array.isArray(raw)) return [];
  return raw.map((r) => (typeof r === 'number' ? { pid: r, start: null } : (r as RecordedPid)));
}

export interface StoppedOrphan {
  workload: string;
  pid: number;
}

/**
 * SIGKILLs the recorded groups of every workload under `workloadsDir` that still run the same
 * process (same start time), waits until they are gone, and removes the records.
 */
export async function stopOrphans(workloadsDir: string): Promise<StoppedOrphan[]> {
  const stopped: StoppedOrphan[] = [];
  for (const id of await readdir(workloadsDir).catch(() => [] as string[])) {
    const file = join(workloadsDir, id, 'pids.json');
    for (const { pid, start } of await readPids(file)) {
      const now = processStartTime(pid);
      if (now === null || (start !== null && now !== start)) continue; // gone, or the pid was reused
      signalGroup(pid, 'SIGKILL');
      await waitGroupEmpty(pid, 5000);
      stopped.push({ workload: id, pid });
    }
    await rm(file, { force: true });
  }
  return stopped;
}
