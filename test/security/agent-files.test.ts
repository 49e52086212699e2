// Files the agent writes that hold a secret are the owner's alone, whatever was in their place before
// (a job's processes write its work directory, and a symlink there must not steer the agent): the netrc that gives nix the agent token for the cache was written in place, keeping an old file's
// mode (0644: every user of the host read the token) and following a symlink put where it goes.
import { lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { fetchCacheTrust } from '../../agent/cache-trust.js';
import { provideSecrets, SECRETS_SUBDIR } from '../../agent/secrets.js';
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

test("a workload's secrets go into a folder made afresh: what the job left in its place is not followed", async () => {
  const secrets = join(dir, 'secrets');
  const work = join(dir, 'work');
  // What the agent must never touch: a folder of the host's.
  const host = join(dir, 'host-etc');
  await mkdir(secrets);
  await mkdir(work);
  await mkdir(host);
  await writeFile(join(secrets, 'passwd'), 'the secret\n');
  await writeFile(join(host, 'passwd'), 'root:x:0:0\n', { mode: 0o644 });
  // A start of this workload before left its processes the work directory: they put a symlink in the
  // secrets folder's place.
  await symlink(host, join(work, SECRETS_SUBDIR));
  const env = await provideSecrets(['passwd', 'passwd'], secrets, work);
  expect(await readFile(join(host, 'passwd'), 'utf8')).toBe('root:x:0:0\n');
  expect((await lstat(join(host, 'passwd'))).mode & 0o777).toBe(0o644);
  expect((await lstat(join(work, SECRETS_SUBDIR))).isDirectory()).toBe(true);
  expect(await readFile(env.MXC_SECRET_PASSWD_FILE!, 'utf8')).toBe('the secret\n');
  // Or a symlink in one secret's place.
  await rm(join(work, SECRETS_SUBDIR), { recursive: true });
  await mkdir(join(work, SECRETS_SUBDIR));
  await symlink(join(host, 'passwd'), join(work, SECRETS_SUBDIR, 'passwd'));
  await provideSecrets(['passwd'], secrets, work);
  expect(await readFile(join(host, 'passwd'), 'utf8')).toBe('root:x:0:0\n');
  expect((await lstat(join(work, SECRETS_SUBDIR, 'passwd'))).mode & 0o777).toBe(0o400);
});
