/**
 * PGlite's data folder is one process's: a second coordinator on it (another `mxc up`, a `mxc
 * coordinator` pointed at the same data dir) is refused, naming the holder; a holder that is killed
 * frees it at once, and of many takers at once exactly one wins; a closed database gives it back. A
 * coordinator's data dir (its id) is one process's on PostgreSQL too.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, it } from 'vitest';
import { lockFolder } from '../../lib/pid-lock.js';
import { repoPath } from '../../scheduler/paths.js';
import { openPglite } from '../../scheduler/store/db.js';
import { startTestCoordinator } from '../helpers/coordinator.js';

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

  // A holder killed with SIGKILL frees it at once (the kernel holds the lock, not a file).
  const holder = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const { lockFolder } = await import(${JSON.stringify(repoPath('dist', 'lib', 'pid-lock.js'))});
       await lockFolder(${JSON.stringify(dir)}); console.log('held'); setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise((r) => holder.stdout!.once('data', r));
  await expect(openPglite(dir)).rejects.toMatchObject({
    code: 'DATA_DIR_IN_USE',
    details: { pid: holder.pid },
  });
  holder.kill('SIGKILL');
  await new Promise((r) => holder.once('exit', r));
  const after = await openPglite(dir);
  await after.close();

  // Many takers at once of a folder whose holder was killed: exactly one wins.
  const takers = await Promise.allSettled(Array.from({ length: 5 }, () => lockFolder(dir)));
  expect(takers.filter((t) => t.status === 'fulfilled')).toHaveLength(1);
  expect(
    takers.filter((t) => t.status === 'rejected').map((t) => (t as PromiseRejectedResult).reason.code),
  ).toEqual(['DATA_DIR_IN_USE', 'DATA_DIR_IN_USE', 'DATA_DIR_IN_USE', 'DATA_DIR_IN_USE']);
  await (takers.find((t) => t.status === 'fulfilled') as PromiseFulfilledResult<() => Promise<void>>).value();
}, 60_000);

it('a second coordinator on PostgreSQL with a running one’s data dir (its id) is refused; a stop gives it back', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'mxc-pg-datadir-lock-'));
  dirs.push(dataDir);
  const first = await startTestCoordinator('postgres', { dataDir });
  try {
    await expect(
      startTestCoordinator('postgres', { dataDir, databaseUrl: first.databaseUrl }),
    ).rejects.toMatchObject({ code: 'DATA_DIR_IN_USE', details: { pid: process.pid } });
  } finally {
    await first.stop();
  }
  const again = await startTestCoordinator('postgres', { dataDir });
  expect((await again.api('GET', '/api/cluster/status')).status).toBe(200);
  await again.stop();
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
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/is in use by another process \(pid \d+\).*\[DATA_DIR_IN_USE\]$/m);
    expect(r.stderr).not.toMatch(/internal error/);
  } finally {
    await db.close();
  }
}, 90_000);
