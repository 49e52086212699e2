// A claim (cache_pushes) whose narinfo was never published, because publishing failed after the
// upload claimed its path, must not refuse the path for ever: an identical upload succeeds at once, a
// different one once the claim has expired, and only while nothing is published under the path.
import { createHash } from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { formatSha256 } from '../../lib/nix-base32.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { ENGINES } from '../helpers/db.js';
import { dumpNar, rawUpload } from './fixtures.js';

let work: string;
let one: Buffer;
let two: Buffer;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-stale-claim-'));
  // Two different NARs without references (any file dumps to a NAR; the cache cannot tell its name).
  await writeFile(join(work, 'one'), 'the first build\n');
  await writeFile(join(work, 'two'), 'another build of the same path\n');
  [one, two] = await Promise.all([dumpNar(join(work, 'one')), dumpNar(join(work, 'two'))]);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const narHash = (nar: Buffer) => formatSha256(createHash('sha256').update(nar).digest());

describe.each(ENGINES)('a claim whose narinfo was never published, on %s', (engine) => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator(engine);
  });
  afterAll(async () => {
    await c?.stop();
  });

  const upload = (path: string, nar: Buffer) =>
    rawUpload(
      `${c.url}/api/cache/nar/${path.slice(11)}`,
      {
        'content-type': 'application/octet-stream',
        'x-nix-nar-hash': narHash(nar),
        'x-nix-nar-size': nar.length,
      },
      nar,
    );
  const narinfo = async (path: string) => (await c.api('GET', `/cache/${path.slice(11, 43)}.narinfo`)).status;
  const claimOf = async (path: string) =>
    (await c.db.query<{ nar_hash: string }>('SELECT nar_hash FROM cache_pushes WHERE path = $1', [path]))[0]
      ?.nar_hash;
  /** The upload's narinfo cannot be published: the storage's pack folder is gone meanwhile. */
  const failingPublish = async (path: string, nar: Buffer) => {
    const dir = join(c.dataDir, 'cache', 'pack');
    await rename(dir, `${dir}.away`);
    try {
      return await upload(path, nar);
    } finally {
      await rename(`${dir}.away`, dir);
    }
  };
  /** The claim was made this long ago: past the claim's time to live. */
  const age = (path: string) =>
    c.db.query("UPDATE cache_pushes SET pushed_at = now() - interval '1 hour' WHERE path = $1", [path]);

  test('an identical upload after the failed publish succeeds', async () => {
    const path = `/nix/store/${'c'.repeat(32)}-same-again`;
    const failed = await failingPublish(path, one);
    expect(failed.status).toBe(500);
    expect(await claimOf(path)).toBe(narHash(one));
    expect(await narinfo(path)).toBe(404);
    expect((await upload(path, one)).status).toBe(201);
    expect(await narinfo(path)).toBe(200);
  });

  test('a different upload is refused while the claim is fresh, accepted once it expired, unless published', async () => {
    const path = `/nix/store/${'d'.repeat(32)}-other-build`;
    expect((await failingPublish(path, one)).status).toBe(500);
    expect(await narinfo(path)).toBe(404);

    // Fresh: the first upload may still be publishing (through another coordinator, say).
    const refused = await upload(path, two);
    expect(refused.status).toBe(409);
    expect(refused.json.error?.code).toBe('CACHE_PATH_CONFLICT');
    // Not "the cache holds it": nothing is published; the message says what the claim is and when it lapses.
    expect(refused.json.error?.message).toMatch(/claimed the path first.*10 minutes after that claim/);
    expect(await claimOf(path)).toBe(narHash(one));

    // Expired and never published: the other build takes the path.
    await age(path);
    const taken = await upload(path, two);
    expect(taken.status).toBe(201);
    expect(taken.json.data).toMatchObject({ nar_hash: narHash(two) });
    expect(await claimOf(path)).toBe(narHash(two));
    const served = await c.api('GET', `/cache/${path.slice(11, 43)}.narinfo`);
    expect(served.body).toContain(`NarHash: ${narHash(two)}`);

    // Published: however old its claim, the path is never replaced.
    await age(path);
    const again = await upload(path, one);
    expect(again.status).toBe(409);
    expect(again.json.error?.code).toBe('CACHE_PATH_CONFLICT');
    expect(await claimOf(path)).toBe(narHash(two));
  });
});
