/**
 * PGlite's data folder is one process's: a second coordinator on it (another `mxc up`, a `mxc
 * coordinator` pointed at the same data dir) is refused, naming the holder; the lock of a holder that
 * was killed is taken over; a closed database gives it back.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, it } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';
import { openPglite } from '../../scheduler/store/db.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

it('refuses a second opener while the first holds it, and takes over from a killed one', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-pglite-lock-'));
  dirs.push(dir);
  const first = await openPglite(dir);
  await expect(openPglite(dir)).rejects.toMatchObject({
    code: 'DATA_DIR_IN_USE',
    details: { pid: process.pid },
  });
  await first.close();
  const again = await openPglite(dir);
  await again.query('SELECT 1');
  await again.close();

  // A holder killed with SIGKILL leaves its lock behind: a dead pid's lock is taken over.
  const child = spawn('sleep', ['1000']);
  const start = Number((await readFile(`/proc/${child.pid}/stat`, 'utf8')).split(') ')[1]!.split(' ')[19]);
  await writeFile(join(dir, 'mxc.lock'), `${child.pid} ${start}\n`);
  await expect(openPglite(dir)).rejects.toMatchObject({
    code: 'DATA_DIR_IN_USE',
    details: { pid: child.pid },
  });
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const after = await openPglite(dir);
  await after.close();
}, 60_000);

it("a second mxc coordinator on a running one's data dir exits with the reason", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-pglite-lock-cli-'));
  dirs.push(dir);
  const db = await openPglite(join(dir, 'db'));
  try {
    const r = await execa(
      'node',
      [repoPath('bin', 'mxc.js'), 'coordinator', '--port', '0', '--data-dir', dir],
      {
        reject: false,
        timeout: 60_000,
      },
    );
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/is in use by another process \(pid \d+\)/);
    expect(r.stderr).not.toMatch(/internal error/);
  } finally {
    await db.close();
  }
}, 90_000);
