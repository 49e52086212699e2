// The directory storage keeps the storage contract, with two handles (two coordinators) on one folder.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { DirectoryStorage } from '../../scheduler/cache/storage-dir.js';
import { storageContract } from './storage-contract.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-storage-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

storageContract('directory storage', async () => {
  const dir = await mkdtemp(join(work, 'dir-'));
  const a = new DirectoryStorage(dir);
  const b = new DirectoryStorage(dir);
  await a.init();
  await b.init();
  expect(a.spoolDir).not.toBe(b.spoolDir);
  return [a, b];
});
