/**
 * A restarted agent stops the process groups its previous run recorded in each workload's pids.json,
 * and a record it cannot read (left empty or cut by a full disk or a crash) no longer stops it from
 * starting: it is reported as damaged and removed.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { stopOrphans, writePids } from '../../agent/orphans.js';
import { isAlive } from './helpers.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

it('stops the recorded groups and survives records that are empty, cut or of the wrong shape', async () => {
  const root = await mkdtemp(join(tmpdir(), 'mxc-orphans-'));
  dirs.push(root);
  const child = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' });
  child.unref();
  const pid = child.pid!;
  await mkdir(join(root, 'alive'));
  await writePids(join(root, 'alive'), [pid]);
  expect(await readdir(join(root, 'alive'))).toEqual(['pids.json']); // no temp file left
  const damaged = { empty: '', cut: '[{"pid":', shape: '[{"pid":"1","start":-4}]', object: '{"pid":1}' };
  for (const [id, text] of Object.entries(damaged)) {
    await mkdir(join(root, id));
    await writeFile(join(root, id, 'pids.json'), text);
  }
  // A stray file beside the workload folders, and a folder where a record belongs.
  await writeFile(join(root, 'notes.txt'), 'not a workload');
  await mkdir(join(root, 'odd', 'pids.json'), { recursive: true });
  const stopped = await stopOrphans(root);
  expect(stopped.filter((s) => !s.damaged)).toEqual([{ workload: 'alive', pid }]);
  expect(
    stopped
      .filter((s) => s.damaged)
      .map((s) => s.workload)
      .sort(),
  ).toEqual([...Object.keys(damaged), 'odd'].sort());
  expect(isAlive(pid)).toBe(false);
  for (const id of ['alive', ...Object.keys(damaged)])
    expect(existsSync(join(root, id, 'pids.json'))).toBe(false);
});
