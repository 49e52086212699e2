// A coordinator killed (SIGKILL) part way through a push: what it published before is whole (every
// narinfo names a NAR that is there, with the narinfo's FileHash and FileSize, and every reference is
// published too), nothing half-written is served, and after a restart the push completes and stock nix
// realises the closure from the cache (packs, spec/cache-pack.ts, are renamed in only once synced).
import { createHash } from 'node:crypto';
import { watch } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { parseNarInfo } from '../../lib/nar-info.js';
import { closureOf, nixBuild } from '../../lib/nix.js';
import { parseSha256 } from '../../lib/nix-base32.js';
import { GROUP_NARS } from '../../scheduler/cache/batch.js';
import { DirectoryStorage, readPackIndex } from '../../scheduler/cache/storage-dir.js';
import { type DaemonProcess, listeningUrl, MXC_BIN, startDaemon } from '../helpers/daemon-process.js';
import { createPostgresDb, dropPostgresDb } from '../helpers/db.js';
import { realiseFrom, startCache } from './fixtures.js';

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
  const expr = `
    let
      bb = builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; };
      mk = i: deps: derivation {
        name = "mxc-push-crash-\${toString i}"; system = builtins.currentSystem; builder = "\${bb}/busybox";
        args = [ "sh" "-c" ''
          \${bb}/busybox mkdir -p $out
          \${bb}/busybox head -c \${toString (60000 + i)} /dev/urandom > $out/random
          echo \${builtins.concatStringsSep " " (map toString deps)} > $out/deps
        '' ];
      };
      build = i: mk i (if i < 2 then [ ] else map (d: paths.\${toString d}) [ (i / 2) (i / 3) ]);
      paths = builtins.listToAttrs (map (i: { name = toString i; value = build i; }) (builtins.genList (x: x) ${PATHS}));
    in derivation {
      name = "mxc-push-crash-root"; system = builtins.currentSystem; builder = "\${bb}/busybox";
      args = [ "sh" "-c" "echo \${builtins.concatStringsSep " " (builtins.attrValues paths)} > $out" ];
    }`;
  [root] = (await nixBuild(['-E', expr], { timeoutMs: 10 * 60_000 })) as [string];
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

/** Every published path read back through a fresh handle on the directory, checked whole. */
async function publishedWhole(cacheDir: string): Promise<Set<string>> {
  const storage = new DirectoryStorage(cacheDir);
  const infos = await Promise.all(
    (await storage.listNarinfos()).map(async (hash) => parseNarInfo((await storage.getNarinfo(hash))!.text)),
  );
  const paths = new Set(infos.map((i) => i.storePath));
  for (const info of infos) {
    const nar = await storage.getNar(info.url.slice('nar/'.length));
    expect(nar, info.storePath).not.toBeNull();
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of nar!.stream as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    expect([info.storePath, bytes]).toEqual([info.storePath, info.fileSize]);
    expect(hash.digest().equals(parseSha256(info.fileHash)!), info.storePath).toBe(true);
    for (const ref of info.references) expect(paths.has(ref), `${info.storePath} → ${ref}`).toBe(true);
  }
  // Every pack in pack/ is whole (a pack appears only once synced, by rename).
  for (const name of await readdir(join(cacheDir, 'pack')))
    expect(await readPackIndex(join(cacheDir, 'pack', name)), name).not.toBeNull();
  return paths;
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
    const served = await startCache({ dataDir });
    try {
      await realiseFrom(served.url, public_key, root, join(work, 'store'));
    } finally {
      await served.app.close();
    }
  }, 240_000);
});
