/**
 * A folder one process at a time: `<dir>/mxc.lock` names the holder's pid and kernel start time. A lock
 * whose holder is gone (killed, the machine rebooted and the pid reused) is taken over; a live holder's
 * is refused, naming it. Used for PGlite's data folder, which two processes opening at once corrupt.
 */
import { readFileSync } from 'node:fs';
import { link, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Field 22 of /proc/<pid>/stat (clock ticks since boot), or null when `pid` does not exist. */
export function processStartTime(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]);
  } catch {
    return null;
  }
}

/** The folder is held by another live process. */
export class FolderInUseError extends Error {
  readonly code = 'DATA_DIR_IN_USE';
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(`${dir} is in use by another process (pid ${pid}); stop it first, or use another data dir`);
    this.name = 'FolderInUseError';
  }
}

/** Whether the lock text names a process that still runs (same pid, same start time). */
function holderAlive(text: string): number | null {
  const [pid, start] = text.trim().split(' ').map(Number);
  if (!pid || !Number.isInteger(pid)) return null;
  const now = processStartTime(pid);
  return now !== null && now === start ? pid : null;
}

/** Takes `<dir>/mxc.lock` for this process; resolves to the function that gives it back. */
export async function lockFolder(dir: string): Promise<() => Promise<void>> {
  const lock = join(dir, 'mxc.lock');
  const mine = `${process.pid} ${processStartTime(process.pid)}\n`;
  const tmp = `${lock}.${process.pid}`;
  await writeFile(tmp, mine);
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(tmp, lock); // atomic: exactly one process creates it
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
        const holder = holderAlive(await readFile(lock, 'utf8').catch(() => ''));
        if (holder !== null) throw new FolderInUseError(dir, holder);
        await rm(lock, { force: true }); // its holder is gone
      }
    }
  } finally {
    await unlink(tmp).catch(() => {});
  }
  return async () => {
    // Only our own lock: never one another process took over meanwhile.
    if ((await readFile(lock, 'utf8').catch(() => '')) === mine) await rm(lock, { force: true });
  };
}
