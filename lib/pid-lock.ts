/**
 * A folder one process at a time. The lock is a listening Unix socket in Linux's abstract namespace,
 * named after the folder's real path: binding a name in use fails, and the kernel frees it the moment
 * its process ends, however it ends, so there is no stale lock to take over (a lock file with a pid,
 * taken over when its holder was dead, let two processes that found it dead at once both take it).
 * `<dir>/mxc.lock` says who holds it, for the message only. Processes in other network namespaces (two
 * containers sharing a volume) do not see each other's locks.
 */
import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';

/** The folder is held by another live process. */
export class FolderInUseError extends Error {
  readonly code = 'DATA_DIR_IN_USE';
  constructor(
    readonly dir: string,
    readonly pid: number | null,
  ) {
    super(
      `${dir} is in use by another process${pid ? ` (pid ${pid})` : ''}; stop it first, or use another folder`,
    );
    this.name = 'FolderInUseError';
  }
}

/** The abstract socket name that locks `dir`. */
function lockName(dir: string): string {
  return `\0mxc-lock-${createHash('sha256').update(realpathSync(dir)).digest('hex').slice(0, 40)}`;
}

/** Takes `dir` for this process; resolves to the function that gives it back. */
export async function lockFolder(dir: string): Promise<() => Promise<void>> {
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(lockName(dir), () => resolve());
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    const holder = Number((await readFile(join(dir, 'mxc.lock'), 'utf8').catch(() => '')).trim());
    throw new FolderInUseError(dir, Number.isInteger(holder) && holder > 0 ? holder : null);
  }
  server.unref(); // a lock never keeps the process alive
  const file = join(dir, 'mxc.lock');
  const mine = `${process.pid}\n`;
  await writeFile(file, mine);
  return async () => {
    if ((await readFile(file, 'utf8').catch(() => '')) === mine) await rm(file, { force: true });
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
}
