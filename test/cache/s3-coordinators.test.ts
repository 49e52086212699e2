// Two coordinators on one PostgreSQL database and one S3 bucket (s3rver, running here): one signing
// key for both (kept in PostgreSQL), a closure pushed through one is realised by stock nix through the
// other, concurrent pushes of the same paths agree, and a missing or vanished bucket is a coded error.
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { run } from '../../lib/exec.js';
import { formatSha256 } from '../../lib/nix-base32.js';
import { generateSecretKey, parseSecretKey } from '../../scheduler/cache/key.js';
import { parseS3Location, type S3Location } from '../../spec/s3-location.js';
import { startTestCoordinator, type TestCoordinator } from '../helpers/coordinator.js';
import { MXC_BIN } from '../helpers/daemon-process.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { startS3Server, type TestS3Server } from '../helpers/s3-server.js';
import { buildClosure, dumpNar, NIX_COMMAND, rawUpload, realiseFrom } from './fixtures.js';

let s3: TestS3Server;
let db: { url: string; name: string };
let a: TestCoordinator;
let b: TestCoordinator;
let work: string;

const location = (url: string): S3Location => {
  const l = parseS3Location(url);
  if ('problems' in l) throw new Error(l.problems.join('; '));
  return l;
};

const onBucket = (url: string) => ({
  cache: { cacheS3: { location: location(url), credentials: s3.credentials } },
});

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-s3-coord-'));
  s3 = await startS3Server(['mxc-cache']);
  db = await createPostgresDb();
  // Started together: both may find no key yet, and must still end up signing with the same one.
  [a, b] = await Promise.all([
    startTestCoordinator('postgres', { databaseUrl: db.url, ...onBucket(s3.url('mxc-cache', 'cluster/')) }),
    startTestCoordinator('postgres', { databaseUrl: db.url, ...onBucket(s3.url('mxc-cache', 'cluster/')) }),
  ]);
});
afterAll(async () => {
  await a?.stop();
  await b?.stop();
  if (db) await dropPostgresDb(db.name);
  await s3?.close();
  await rm(work, { recursive: true, force: true });
});

const keyOf = async (c: TestCoordinator): Promise<string> =>
  (await c.api('GET', '/api/cache/key')).body.data.public_key;

describe('two coordinators on one bucket and one database', () => {
  test('sign with one key, generated once and kept in PostgreSQL', async () => {
    const key = await keyOf(a);
    expect(key).toMatch(/^mxc-1:/);
    expect(await keyOf(b)).toBe(key);
    const rows = await a.db.query<{ value: string }>(
      "SELECT value FROM mxc_settings WHERE name = 'cache_signing_key'",
    );
    expect(rows).toHaveLength(1);
    expect(parseSecretKey(rows[0].value, 'row').publicKey).toBe(key);
  });

  test('a closure pushed through one is realised by nix through the other', async () => {
    const closure = await buildClosure('s3-one');
    const r = await pushClosure({ coordinator: a.url, paths: [closure.root] });
    expect(r.uploaded).toHaveLength(3);
    // The bucket holds it in Nix's own layout.
    const narinfo = await fetch(`${s3.endpoint}/mxc-cache/cluster/${closure.root.slice(11, 43)}.narinfo`);
    expect(await narinfo.text()).toContain(`StorePath: ${closure.root}`);
    await realiseFrom(b.url, await keyOf(b), closure.root, join(work, 'store-realise'));
    // Throws unless the realised path verifies.
    await run('nix-store', ['--store', join(work, 'store-realise'), '--verify-path', closure.root]);
    // nix copy --from reads the same cache and checks the same signatures.
    await run('nix', [
      ...NIX_COMMAND,
      'copy',
      '--from',
      `${b.url}/cache`,
      '--to',
      join(work, 'store-copy'),
      '--option',
      'trusted-public-keys',
      await keyOf(a),
      '--option',
      'substituters',
      '',
      closure.root,
    ]);
    await run('nix-store', ['--store', join(work, 'store-copy'), '--verify-path', closure.lib]);
  });

  test('concurrent pushes of the same paths through both succeed and publish one narinfo each', async () => {
    const closure = await buildClosure('s3-race');
    const [ra, rb] = await Promise.all([
      pushClosure({ coordinator: a.url, paths: [closure.root] }),
      pushClosure({ coordinator: b.url, paths: [closure.root] }),
    ]);
    expect(ra.uploaded.length + ra.skipped).toBe(3);
    expect(rb.uploaded.length + rb.skipped).toBe(3);
    for (const p of [closure.root, closure.lib, closure.busybox]) {
      const hash = p.slice(11, 43);
      const [fromA, fromB] = await Promise.all([
        a.api('GET', `/cache/${hash}.narinfo`),
        b.api('GET', `/cache/${hash}.narinfo`),
      ]);
      expect(fromA.status).toBe(200);
      expect(fromA.body).toBe(fromB.body);
    }
    const list = await fetch(`${s3.endpoint}/mxc-cache?list-type=2&prefix=cluster/`).then((r) => r.text());
    expect(list.match(new RegExp(`${closure.root.slice(11, 43)}\\.narinfo`, 'g'))).toHaveLength(1);
    await realiseFrom(a.url, await keyOf(a), closure.root, join(work, 'store-race'));
  });

  test('two different uploads of one path: the first claim in PostgreSQL wins on both coordinators', async () => {
    // s3rver ignores If-None-Match, so only the database can decide between simultaneous uploads.
    const closure = await buildClosure('s3-conflict');
    const [one, two] = await Promise.all([dumpNar(closure.lib), dumpNar(closure.busybox)]);
    const upload = (c: TestCoordinator, path: string, nar: Buffer) =>
      rawUpload(
        `${c.url}/api/cache/nar/${path.slice(11)}`,
        {
          'content-type': 'application/octet-stream',
          'x-nix-nar-hash': `sha256:${createHash('sha256').update(nar).digest('hex')}`,
          'x-nix-nar-size': nar.length,
        },
        nar,
      );
    const published = async (path: string) =>
      (await fetch(`${s3.endpoint}/mxc-cache/cluster/${path.slice(11, 43)}.narinfo`)).status;

    // Claimed through A a moment ago, not yet published: B refuses another NarHash and publishes nothing.
    const claimed = `/nix/store/${'a'.repeat(32)}-claimed`;
    await a.db.query("INSERT INTO cache_pushes (path, nar_hash, pushed_by) VALUES ($1, $2, 'a')", [
      claimed,
      formatSha256(createHash('sha256').update(one).digest()),
    ]);
    const refused = await upload(b, claimed, two);
    expect(refused.status).toBe(409);
    expect(refused.json.error?.code).toBe('CACHE_PATH_CONFLICT');
    expect(await published(claimed)).toBe(404);
    expect((await upload(b, claimed, one)).status).toBe(201);

    // Simultaneous: exactly one wins, and the narinfo served everywhere is the winner's.
    const raced = `/nix/store/${'b'.repeat(32)}-raced`;
    const answers = await Promise.all([upload(a, raced, one), upload(b, raced, two)]);
    expect(answers.map((r) => r.status).sort()).toEqual([201, 409]);
    const winner = answers[0].status === 201 ? one : two;
    const narinfo = await (await fetch(`${b.url}/cache/${raced.slice(11, 43)}.narinfo`)).text();
    expect(narinfo).toContain(`NarSize: ${winner.length}`);
  });

  test('a claim whose narinfo was never published expires: then another upload takes the path, on either coordinator', async () => {
    const closure = await buildClosure('s3-stale-claim');
    const [one, two] = await Promise.all([dumpNar(closure.lib), dumpNar(closure.busybox)]);
    const hashOf = (nar: Buffer) => formatSha256(createHash('sha256').update(nar).digest());
    const upload = (c: TestCoordinator, path: string, nar: Buffer) =>
      rawUpload(
        `${c.url}/api/cache/nar/${path.slice(11)}`,
        {
          'content-type': 'application/octet-stream',
          'x-nix-nar-hash': hashOf(nar),
          'x-nix-nar-size': nar.length,
        },
        nar,
      );
    // Claimed through A an hour ago, and A died before publishing its narinfo.
    const stale = `/nix/store/${'g'.repeat(32)}-stale`;
    await a.db.query(
      "INSERT INTO cache_pushes (path, nar_hash, pushed_by, pushed_at) VALUES ($1, $2, 'a', now() - interval '1 hour')",
      [stale, hashOf(one)],
    );
    const taken = await upload(b, stale, two);
    expect(taken.status).toBe(201);
    const [row] = await a.db.query<{ nar_hash: string }>(
      'SELECT nar_hash FROM cache_pushes WHERE path = $1',
      [stale],
    );
    expect(row?.nar_hash).toBe(hashOf(two));
    // Published now: an hour later, the first build is still refused, through either coordinator.
    await a.db.query("UPDATE cache_pushes SET pushed_at = now() - interval '1 hour' WHERE path = $1", [
      stale,
    ]);
    for (const c of [a, b]) {
      const refused = await upload(c, stale, one);
      expect(refused.status).toBe(409);
      expect(refused.json.error?.code).toBe('CACHE_PATH_CONFLICT');
    }
    const narinfo = await (await fetch(`${a.url}/cache/${stale.slice(11, 43)}.narinfo`)).text();
    expect(narinfo).toContain(`NarSize: ${two.length}`);
  });

  test('a key file given to a coordinator wins over the shared key', async () => {
    const secret = generateSecretKey('site-1');
    const file = join(work, 'site.key');
    await writeFile(file, secret, { mode: 0o600 });
    const c = await startTestCoordinator('postgres', {
      databaseUrl: db.url,
      cache: { ...onBucket(s3.url('mxc-cache', 'cluster/')).cache, cacheKeyFile: file },
    });
    try {
      expect(await keyOf(c)).toBe(parseSecretKey(secret, 'file').publicKey);
    } finally {
      await c.stop();
    }
  });
});

describe('an unusable bucket', () => {
  test('a missing bucket stops the start with a coded error, also through the real CLI', async () => {
    const err = await startTestCoordinator('postgres', {
      databaseUrl: db.url,
      ...onBucket(s3.url('no-such-bucket')),
    }).catch((e) => e);
    expect(err.code).toBe('CACHE_STORAGE_UNAVAILABLE');

    const cli = await execa(
      process.execPath,
      [
        MXC_BIN,
        'coordinator',
        '--port',
        '0',
        '--data-dir',
        join(work, 'cli'),
        '--cache-s3',
        s3.url('no-such-bucket'),
      ],
      {
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          DATABASE_URL: db.url,
          AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
          AWS_SECRET_ACCESS_KEY_FILE: await writeSecret('S3RVER'),
          MXC_LOG_LEVEL: 'silent',
        },
        extendEnv: false,
        reject: false,
        timeout: 60_000,
      },
    );
    expect(cli.exitCode).toBe(1);
    expect(cli.stderr).toMatch(
      /mxc: cache bucket s3:\/\/no-such-bucket\/ .*: cannot reach it .*does not exist/,
    );
    expect(cli.stderr).not.toMatch(/internal error/);

    const bad = await execa(
      process.execPath,
      [MXC_BIN, 'coordinator', '--cache-s3', 's3://key:secret@bucket'],
      {
        env: { PATH: process.env.PATH, HOME: process.env.HOME },
        extendEnv: false,
        reject: false,
        timeout: 30_000,
      },
    );
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/--cache-s3 \(MXC_CACHE_S3_URL\).*must not carry credentials/);
  });

  test('a bucket gone while serving answers 503 CACHE_STORAGE_UNAVAILABLE, and the coordinator keeps running', async () => {
    const own = await startS3Server(['gone']);
    const c = await startTestCoordinator('postgres', {
      databaseUrl: db.url,
      cache: {
        cacheS3: { location: location(own.url('gone')), credentials: own.credentials },
      },
    });
    try {
      const closure = await buildClosure('s3-gone');
      await pushClosure({ coordinator: c.url, paths: [closure.lib] });
      await own.close();
      const missing = await c.api('GET', `/cache/${closure.root.slice(11, 43)}.narinfo`);
      expect(missing.status).toBe(503);
      expect(missing.body.error.code).toBe('CACHE_STORAGE_UNAVAILABLE');
      const nar = await c.api('GET', `/cache/nar/${'1'.repeat(52)}.nar.br`);
      expect(nar.body.error.code).toBe('CACHE_STORAGE_UNAVAILABLE');
      const push = await pushClosure({ coordinator: c.url, paths: [closure.root] }).catch((e) => e);
      expect(push.code).toBe('CACHE_STORAGE_UNAVAILABLE');
      expect((await c.api('GET', '/healthz')).status).toBe(200);
    } finally {
      await c.stop();
    }
  });
});

async function writeSecret(value: string): Promise<string> {
  const file = join(work, `secret-${Math.random().toString(36).slice(2)}`);
  await writeFile(file, value, { mode: 0o600 });
  return file;
}
