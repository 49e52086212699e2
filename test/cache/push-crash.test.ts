import { watch } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { closureOf } from '../../lib/nix.js';
import { GROUP_NARS } from '../../scheduler/cache/batch.js';
import { type DaemonProcess, listeningUrl, MXC_BIN, startDaemon } from '../helpers/daemon-process.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { buildLayeredClosure, publishedWhole, realiseFrom, sharedKeyFile, startCache } from './fixtures.js';

const TOKEN = 'crash-test-token-0123456789';
/** Leaves of ~60 KiB, each referencing earlier ones: several publish groups (GROUP_NARS each). */
const PATHS = 200;

let work: string;
let db: { url: string; name: string };
let root: string;
let closure: string[];
const daemons: DaemonProcess[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-push-crash-'));
  db = await createPostgresDb();
  root = await buildLayeredClosure(PATHS);
  closure = await closureOf([root]);
}, 15 * 60_000);

afterAll(async () => {
  for (const d of daemons) await d.stop();
  if (db) await dropPostgresDb(db.name);
  await rm(work, { recursive: true, force: true });
});

function coordinator(dataDir: string): DaemonProcess {
  const d = startDaemon(process.execPath, [MXC_BIN, 'coordinator', '--port', '0', '--data-dir', dataDir], {
    DATABASE_URL: db.url,
    MXC_API_TOKEN: TOKEN,
    MXC_UI_ENABLED: 'false',
  });
  daemons.push(d);
  return d;
}

describe('a coordinator killed part way through a push', () => {
  test('keeps what it published whole, and the push completes after a restart', async () => {
    const dataDir = join(work, 'coordinator');
    const cacheDir = join(dataDir, 'cache');
    const first = coordinator(dataDir);
    const url = await listeningUrl(first);

    // Killed as soon as the first group's pack is renamed into pack/: the later groups are then being
    // received, checked, written or synced.
    const killed = new Promise<void>((resolve) => {
      const watcher = watch(join(cacheDir, 'pack'), () => {
        watcher.close();
        first.proc.kill('SIGKILL');
        resolve();
      });
    });
    const push = pushClosure({ coordinator: url, token: TOKEN, paths: [root] }).then(
      () => 'finished',
      (err: Error) => err.message,
    );
    await killed;
    expect(await push).toMatch(/uploading to .* failed|cannot reach/);
    await first.proc;

    const published = await publishedWhole(cacheDir);
    expect(published.size).toBeGreaterThanOrEqual(GROUP_NARS);
    expect(published.size).toBeLessThan(closure.length);

    const second = coordinator(dataDir);
    const url2 = await listeningUrl(second);
    const again = await pushClosure({ coordinator: url2, token: TOKEN, paths: [root] });
    expect(again.uploaded.length + again.skipped).toBe(closure.length);
    expect(again.skipped).toBe(published.size);
    expect((await publishedWhole(cacheDir)).size).toBe(closure.length);

    const key = await fetch(`${url2}/api/cache/key`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const { public_key } = ((await key.json()) as { data: { public_key: string } }).data;
    await second.stop();
    // Served without a token (the cache plugin alone, on the same directory) so that nix can read it.
    // The coordinators' key (kept in PostgreSQL): a narinfo that does not verify with the key is not served.
    const served = await startCache({ dataDir, keyFile: await sharedKeyFile(db.url, join(work, 'key')) });
    try {
      await realiseFrom(served.url, public_key, root, join(work, 'store'));
    } finally {
      await served.app.close();
    }
  }, 240_000);
});
