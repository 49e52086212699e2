// A coordinator SIGKILLed at the worst moments of a push's first pack (spec/cache-pack.ts): while the pack
// is being written (before its sync and rename), once it is synced while its claim waits in PostgreSQL
// (cache_pushes), and once claimed but not yet renamed into pack/. After a restart nothing half-written
// is served, the dead process's temp folder is gone, the claims it left do not stand in the way, and the
// push completes uploading only what is missing; stock nix then realises the closure from the cache.
import { type FSWatcher, watch } from 'node:fs';
import { mkdtemp, readdir, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { closureOf } from '../../lib/nix.js';
import { type DaemonProcess, listeningUrl, MXC_BIN, startDaemon } from '../helpers/daemon-process.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { eventually } from '../helpers/protocol-agent.js';
import { buildLayeredClosure, publishedWhole, realiseFrom, sharedKeyFile, startCache } from './fixtures.js';

const TOKEN = 'kill-points-token-0123456789';
/** The closure push-crash.test.ts builds too (built once for both): several publish groups. */
const PATHS = 200;

let work: string;
let root: string;
let closure: string[];
const daemons: DaemonProcess[] = [];
const databases: string[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-push-kill-'));
  root = await buildLayeredClosure(PATHS);
  closure = await closureOf([root]);
}, 15 * 60_000);

afterAll(async () => {
  for (const d of daemons) await d.stop();
  for (const name of databases) await dropPostgresDb(name);
  await rm(work, { recursive: true, force: true });
});

/** A fresh database and a data dir for one test. */
async function setUp(name: string): Promise<{ url: string; dataDir: string; cacheDir: string }> {
  const db = await createPostgresDb();
  databases.push(db.name);
  const dataDir = join(work, name);
  return { url: db.url, dataDir, cacheDir: join(dataDir, 'cache') };
}

function coordinator(databaseUrl: string, dataDir: string): DaemonProcess {
  const d = startDaemon(process.execPath, [MXC_BIN, 'coordinator', '--port', '0', '--data-dir', dataDir], {
    DATABASE_URL: databaseUrl,
    MXC_API_TOKEN: TOKEN,
    MXC_UI_ENABLED: 'false',
  });
  daemons.push(d);
  return d;
}

/** The temp folder a coordinator process spools into (`tmp/<host>-<pid>-<random>`). */
async function spoolOf(cacheDir: string, d: DaemonProcess): Promise<string> {
  const mine = (await readdir(join(cacheDir, 'tmp'))).filter((n) => n.includes(`-${d.proc.pid}-`));
  expect(mine).toHaveLength(1);
  return join(cacheDir, 'tmp', mine[0]!);
}

/** Resolves once a pack's temp file is created in the coordinator's temp folder (it is being written). */
async function packStarted(spool: string): Promise<{ seen: Promise<void>; close: () => void }> {
  const watchers: FSWatcher[] = [];
  const seen = new Promise<void>((resolve) => {
    for (const sub of ['', '0', '1', '2', '3', '4', '5', '6', '7'])
      watchers.push(
        watch(join(spool, sub), (_event, name) => {
          if (name?.endsWith('.pack')) resolve();
        }),
      );
  });
  return {
    seen,
    close: () => {
      for (const w of watchers) w.close();
    },
  };
}

const push = (url: string) =>
  pushClosure({ coordinator: url, token: TOKEN, paths: [root] }).then(
    () => 'finished',
    (err: Error) => err.message,
  );

/** Restarts on the data dir and checks what a user sees: the dead temp folder gone, the push completing. */
async function restartAndRepush(databaseUrl: string, dataDir: string, cacheDir: string, published: number) {
  // The restart comes minutes after the crash (a folder of this host's dead process is removed once
  // untouched for minutes, by the next start or the running coordinators' sweep every minute).
  const minutesAgo = new Date(Date.now() - 10 * 60_000);
  for (const name of await readdir(join(cacheDir, 'tmp')))
    await utimes(join(cacheDir, 'tmp', name), minutesAgo, minutesAgo);
  const second = coordinator(databaseUrl, dataDir);
  const url = await listeningUrl(second);
  // The killed process's temp folder (its half-written or unrenamed pack) was removed at start.
  expect(await readdir(join(cacheDir, 'tmp'))).toEqual([(await spoolOf(cacheDir, second)).split('/').pop()]);
  const again = await pushClosure({ coordinator: url, token: TOKEN, paths: [root] });
  expect([again.uploaded.length, again.skipped]).toEqual([closure.length - published, published]);
  expect((await publishedWhole(cacheDir)).size).toBe(closure.length);
  const pushes = new pg.Client({ connectionString: databaseUrl });
  await pushes.connect();
  try {
    const { rows } = await pushes.query<{ n: number }>('SELECT count(*)::int AS n FROM cache_pushes');
    expect(rows[0]!.n).toBe(closure.length);
  } finally {
    await pushes.end();
  }
  return second;
}

/** Holds cache_pushes locked (a claim then waits) until released. */
async function lockClaims(
  databaseUrl: string,
): Promise<{ waiting: () => Promise<boolean>; release: () => Promise<void>; client: pg.Client }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  await client.query('BEGIN');
  await client.query('LOCK TABLE cache_pushes IN EXCLUSIVE MODE');
  return {
    client,
    waiting: async () => {
      // Within the lock's transaction pg_stat_activity stays the snapshot its first read took.
      await client.query('SELECT pg_stat_clear_snapshot()');
      const { rows } = await client.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO cache_pushes%'`,
      );
      return rows[0]!.n > 0;
    },
    release: async () => {
      await client.query('ROLLBACK');
    },
  };
}

describe('a coordinator killed at the worst moments of a pack', () => {
  test('while its first pack is being written: nothing of it served, the push completes after a restart', async () => {
    const { url: databaseUrl, dataDir, cacheDir } = await setUp('writing');
    const first = coordinator(databaseUrl, dataDir);
    const url = await listeningUrl(first);
    const started = await packStarted(await spoolOf(cacheDir, first));
    const pushed = push(url);
    await started.seen;
    first.proc.kill('SIGKILL');
    started.close();
    expect(await pushed).toMatch(/uploading to .* failed|cannot reach/);
    await first.proc;

    const published = (await publishedWhole(cacheDir)).size;
    expect(published).toBeLessThan(closure.length);
    const second = await restartAndRepush(databaseUrl, dataDir, cacheDir, published);
    await second.stop();
  }, 60_000);

  test('once its pack is synced and its claim waits: nothing published, no claim left, the push completes', async () => {
    const { url: databaseUrl, dataDir, cacheDir } = await setUp('claim-waits');
    const first = coordinator(databaseUrl, dataDir);
    const url = await listeningUrl(first);
    const lock = await lockClaims(databaseUrl);
    try {
      const pushed = push(url);
      await eventually(lock.waiting, 30_000, 'the first claim to wait for the lock');
      first.proc.kill('SIGKILL');
      await first.proc;
      expect(await pushed).toMatch(/uploading to .* failed|cannot reach/);
    } finally {
      await lock.release();
      await lock.client.end();
    }
    expect(await readdir(join(cacheDir, 'pack'))).toEqual([]);
    expect((await publishedWhole(cacheDir)).size).toBe(0);
    const second = await restartAndRepush(databaseUrl, dataDir, cacheDir, 0);
    await second.stop();
  }, 60_000);

  test('once its claim is recorded but before its pack is renamed in: the claim does not block the re-push', async () => {
    const { url: databaseUrl, dataDir, cacheDir } = await setUp('claimed');
    const first = coordinator(databaseUrl, dataDir);
    const url = await listeningUrl(first);
    const lock = await lockClaims(databaseUrl);
    let claimed = 0;
    try {
      const pushed = push(url);
      await eventually(lock.waiting, 30_000, 'the first claim to wait for the lock');
      // Stopped, the process cannot rename anything; the claim it sent commits once the lock goes.
      first.proc.kill('SIGSTOP');
      await lock.release();
      claimed = await eventually(
        async () => {
          const { rows } = await lock.client.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM cache_pushes',
          );
          return rows[0]!.n;
        },
        10_000,
        'the claim to commit',
      );
      first.proc.kill('SIGKILL');
      await first.proc;
      expect(await pushed).toMatch(/uploading to .* failed|cannot reach/);
    } finally {
      await lock.client.end();
    }
    expect(claimed).toBeGreaterThan(0);
    expect(await readdir(join(cacheDir, 'pack'))).toEqual([]);
    const second = await restartAndRepush(databaseUrl, dataDir, cacheDir, 0);
    const key = await fetch(`${await listeningUrl(second)}/api/cache/key`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const { public_key } = ((await key.json()) as { data: { public_key: string } }).data;
    await second.stop();
    // The coordinators' key (kept in PostgreSQL): a narinfo that does not verify with the key is not served.
    const served = await startCache({
      dataDir,
      keyFile: await sharedKeyFile(databaseUrl, join(work, 'key-claimed')),
    });
    try {
      await realiseFrom(served.url, public_key, root, join(work, 'store-claimed'));
    } finally {
      await served.app.close();
    }
  }, 90_000);
});
