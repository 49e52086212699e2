// Files the agent writes that hold a secret are the owner's alone, whatever was in their place before:
// the netrc that gives nix the agent token for the cache was written in place, keeping an old file's
// mode (0644: every user of the host read the token) and following a symlink put where it goes.
import { lstat, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { fetchCacheTrust } from '../../agent/cache-trust.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { testLogger } from '../helpers/logger.js';

const AGENT = 'files-agent-token';
let c: TestCoordinator;
let dir: string;
beforeAll(async () => {
  c = await startTestCoordinator('pglite', { tokens: { api: 'files-admin', agent: AGENT } });
  dir = await mkdtemp(join(tmpdir(), 'mxc-agent-files-'));
});
afterAll(async () => {
  await c?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('the netrc holding the agent token is 0600 and a file of its own, whatever was there before', async () => {
  const opts = { coordinator: c.url, token: AGENT, stateDir: dir };
  // An old netrc readable by everyone.
  await writeFile(join(dir, 'netrc'), 'old\n', { mode: 0o644 });
  const trust = await fetchCacheTrust(opts, testLogger());
  expect(trust?.netrcFile).toBe(join(dir, 'netrc'));
  const first = await lstat(join(dir, 'netrc'));
  expect(first.mode & 0o777).toBe(0o600);
  expect(await readFile(join(dir, 'netrc'), 'utf8')).toContain(`password ${AGENT}`);
  // A symlink in its place: the file it points at is left as it was.
  const elsewhere = join(dir, 'elsewhere');
  await writeFile(elsewhere, 'not yours\n', { mode: 0o644 });
  await rm(join(dir, 'netrc'));
  await symlink(elsewhere, join(dir, 'netrc'));
  await fetchCacheTrust(opts, testLogger());
  expect(await readFile(elsewhere, 'utf8')).toBe('not yours\n');
  const second = await lstat(join(dir, 'netrc'));
  expect(second.isFile() && (second.mode & 0o777) === 0o600).toBe(true);
});
