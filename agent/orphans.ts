/**
 * Process groups left by a previous agent run. The agent records each workload's group leaders in
 * `<workload dir>/pids.json` with their kernel start times; a restarted agent cannot re-attach their
 * output pipes, so it stops them, and the start time keeps it from killing a recycled pid.
 */
import { readFileSync } from 'node:fs';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod';
import { signalGroup, waitGroupEmpty } from './thermos/process-group.js';

/** A recorded group leader; a bare number is an older agent's record (no start time). */
const RecordedPid = z.union([
  z.object({
    pid: z.number().int().positive(),
    /** Field 22 of /proc/<pid>/stat (clock ticks since boot); null when it could not be read. */
    start: z.number().int().nonnegative().nullable(),
  }),
  z
    .number()
    .int()
    .positive()
    .transform((pid) => ({ pid, start: null })),
]);
export type RecordedPid = z.output<typeof RecordedPid>;
const RecordedPids = z.array(RecordedPid).max(4096);

/** The kernel start time of `pid` (field 22 of /proc/<pid>/stat), or null when it does not exist. */
export function processStartTime(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return null;
  }
}

/**
 * Records the groups, replacing the file whole (a temp file renamed over it): written in place, a full
 * disk or a crash left it empty or cut, and an agent that could not read it would not start.
 */
export async function writePids(workloadDir: string, pids: number[]): Promise<void> {
  const rec: RecordedPid[] = pids.map((pid) => ({ pid, start: processStartTime(pid) }));
  const file = join(workloadDir, 'pids.json');
  await writeFile(`${file}.tmp`, JSON.stringify(rec));
  await rename(`${file}.tmp`, file);
}

/** The recorded groups; null when the record is there but unreadable (damaged by hand or by a crash). */
async function readPids(file: string): Promise<RecordedPid[] | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    // No record: nothing ran. Anything else (a folder in its place, no permission) is damage.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    return null;
  }
  try {
    const parsed = RecordedPids.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export interface StoppedOrphan {
  workload: string;
  /** The group stopped; absent when the workload's record could not be read (`damaged`). */
  pid?: number;
  /** The record was unreadable: what it named could not be stopped, and it is removed. */
  damaged?: true;
}

/**
 * SIGKILLs the recorded groups of every workload under `workloadsDir` that still run the same
 * process (same start time), waits until they are gone, and removes the records.
 */
export async function stopOrphans(workloadsDir: string): Promise<StoppedOrphan[]> {
  const stopped: StoppedOrphan[] = [];
  const entries = await readdir(workloadsDir, { withFileTypes: true }).catch(() => []);
  // Only workload folders; a stray file beside them is not one (it stopped every start of the agent).
  for (const entry of entries.filter((e) => e.isDirectory())) {
    const id = entry.name;
    const file = join(workloadsDir, id, 'pids.json');
    const recorded = await readPids(file);
    if (recorded === null) stopped.push({ workload: id, damaged: true });
    for (const { pid, start } of recorded ?? []) {
      const now = processStartTime(pid);
      if (now === null || (start !== null && now !== start)) continue; // gone, or the pid was reused
      signalGroup(pid, 'SIGKILL');
      await waitGroupEmpty(pid, 5000);
      stopped.push({ workload: id, pid });
    }
    // A record that cannot be removed (a folder in its place) is left; the next start reports it again.
    await rm(file, { force: true }).catch(() => {});
    await rm(`${file}.tmp`, { force: true }).catch(() => {});
  }
  return stopped;
}
