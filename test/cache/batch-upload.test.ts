// Batch uploads (many NARs in one body): every NAR gets a single upload's checks; a refusal keeps the
// NARs before it that passed, publishes nothing after it, and leaves no temp files; malformed frames and
// lists past their maximum are coded 4xx.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { run } from '../../lib/exec.js';
import { GROUP_NARS, ingestBatch } from '../../scheduler/cache/batch.js';
import { openCacheStore } from '../../scheduler/cache/index.js';
import { DirectoryStorage } from '../../scheduler/cache/storage-dir.js';
import { MAX_BATCH_NARS } from '../../spec/cache.js';
import {
  type BatchEntry,
  batchBody,
  batchEntries,
  batchEntry,
  buildClosure,
  rawBatch,
  startCache,
  type TestCache,
} from './fixtures.js';

let closure: { root: string; lib: string; busybox: string };
let cache: TestCache;
let entries: { busybox: BatchEntry; lib: BatchEntry; root: BatchEntry };

beforeAll(async () => {
  closure = await buildClosure('batch');
  entries = {
    busybox: await batchEntry(closure.busybox),
    lib: await batchEntry(closure.lib),
    root: await batchEntry(closure.root),
  };
});
beforeEach(async () => {
  cache = await startCache();
});
afterEach(async () => {
  await cache.close();
});

const copy = (e: BatchEntry, header: Record<string, unknown> = {}): BatchEntry => ({
  header: { ...e.header, ...header },
  nar: e.nar,
});

/** What another coordinator sharing the directory sees published (packs and narinfo files), and temp files left. */
async function held(): Promise<{ narinfos: string[]; tmp: string[] }> {
  const dir = join(cache.dataDir, 'cache');
  const tmp = await readdir(join(dir, 'tmp'), { recursive: true, withFileTypes: true });
  const published = await new DirectoryStorage(dir).listNarinfos();
  return {
    narinfos: published.map((h) => `${h}.narinfo`).sort(),
    tmp: tmp.filter((e) => !e.isDirectory()).map((e) => e.name),
  };
}

const narinfo = (path: string) => `${path.slice(11, 43)}.narinfo`;

describe('batch uploads', () => {
  test('stores every path in order, then again is a no-op', async () => {
    const body = batchBody([entries.busybox, entries.lib, entries.root]);
    const first = await rawBatch(cache.url, body);
    expect(first.status).toBe(200);
    const stored = (first.json.data as { stored: { path: string; created: boolean }[] }).stored;
    expect(stored.map((s) => [s.path, s.created])).toEqual([
      [closure.busybox, true],
      [closure.lib, true],
      [closure.root, true],
    ]);
    // A header may name its path in full, as the API says (it was refused: only basenames passed).
    const again = await rawBatch(
      cache.url,
      batchBody([entries.busybox, copy(entries.lib, { path: closure.lib }), entries.root]),
    );
    expect(again.status).toBe(200);
    expect((again.json.data as { stored: { created: boolean }[] }).stored.map((s) => s.created)).toEqual([
      false,
      false,
      false,
    ]);
    expect((await held()).narinfos).toEqual([closure.busybox, closure.lib, closure.root].map(narinfo).sort());
  });

  test('a lie in the middle keeps what came before and nothing after', async () => {
    for (const [lie, code] of [
      [{ nar_hash: entries.busybox.header.nar_hash }, 'CACHE_HASH_MISMATCH'],
      [{ nar_size: (entries.lib.header.nar_size as number) - 8 }, 'CACHE_NOT_A_NAR'],
    ] as const) {
      const r = await rawBatch(cache.url, batchBody([entries.busybox, copy(entries.lib, lie), entries.root]));
      expect([r.status, r.json.error?.code]).toEqual([code === 'CACHE_NOT_A_NAR' ? 400 : 422, code]);
      expect(await held()).toEqual({ narinfos: [narinfo(closure.busybox)], tmp: [] });
    }
  });

  test('a batch of several publish groups: a lie in a later group keeps every path before it', async () => {
    // More than two groups of GROUP_NARS paths (without references), whose NARs are stored while the
    // groups before them publish their narinfos; the lie in the second group.
    const n = 2 * GROUP_NARS + 12;
    const lieAt = GROUP_NARS + 36;
    const { stdout } = await run('nix-instantiate', [
      ...['--option', 'substituters', '', '--eval', '--read-write-mode', '--strict', '--json', '-E'],
      `builtins.genList (i: builtins.toFile "mxc-batch-groups-\${toString i}" "path \${toString i}") ${n}`,
    ]);
    const paths = JSON.parse(stdout) as string[];
    const many = await batchEntries(paths);
    const lie = copy(many[lieAt]!, { nar_hash: many[lieAt - 1]!.header.nar_hash });
    const r = await rawBatch(cache.url, batchBody([...many.slice(0, lieAt), lie, ...many.slice(lieAt + 1)]));
    expect([r.status, r.json.error?.code]).toEqual([422, 'CACHE_HASH_MISMATCH']);
    expect(await held()).toEqual({ narinfos: paths.slice(0, lieAt).map(narinfo).sort(), tmp: [] });
    const all = await rawBatch(cache.url, batchBody(many));
    expect(all.status).toBe(200);
    const stored = (all.json.data as { stored: { path: string; created: boolean }[] }).stored;
    expect(stored.map((s) => [s.path, s.created])).toEqual(paths.map((p, i) => [p, i >= lieAt]));
    expect(await held()).toEqual({ narinfos: paths.map(narinfo).sort(), tmp: [] });
  });

  test('references must be in the cache or earlier in the batch', async () => {
    const r = await rawBatch(cache.url, batchBody([entries.root, entries.busybox, entries.lib]));
    expect([r.status, r.json.error?.code]).toEqual([409, 'CACHE_MISSING_REFERENCES']);
    expect(await held()).toEqual({ narinfos: [], tmp: [] });
  });

  test('the same path twice: another NarHash is a conflict, the same is a no-op', async () => {
    const twice = await rawBatch(cache.url, batchBody([entries.lib, entries.lib]));
    expect((twice.json.data as { stored: { created: boolean }[] }).stored.map((s) => s.created)).toEqual([
      true,
      false,
    ]);
    const forged = copy(entries.busybox, { path: entries.lib.header.path });
    const r = await rawBatch(cache.url, batchBody([forged]));
    expect([r.status, r.json.error?.code]).toEqual([409, 'CACHE_PATH_CONFLICT']);
    const other = await startCache();
    try {
      const inOne = await rawBatch(other.url, batchBody([entries.lib, forged]));
      expect([inOne.status, inOne.json.error?.code]).toEqual([409, 'CACHE_PATH_CONFLICT']);
    } finally {
      await other.close();
    }
  });

  test('a path another coordinator publishes while a batch streams in: the same NAR is a no-op, another a conflict', async () => {
    // The other coordinator publishes between two frames of the body: the path's admission must find
    // it (a cache may not look again for each NAR only once the batch ends), and with another NarHash
    // refuse it with nothing after it published.
    const frames = async function* (...parts: Buffer[]) {
      yield* parts;
    };
    const forged = copy(entries.busybox, { path: entries.lib.header.path });
    for (const [theirs, expected] of [
      [entries.lib, 'no-op'],
      [forged, 'CACHE_PATH_CONFLICT'],
    ] as const) {
      const dataDir = await mkdtemp(join(tmpdir(), 'mxc-cache-'));
      const ours = await openCacheStore(dataDir);
      const other = await openCacheStore(dataDir);
      try {
        const body = async function* () {
          yield batchBody([entries.busybox], false);
          await ingestBatch(other, frames(batchBody([entries.busybox, theirs])));
          yield batchBody([entries.lib, entries.root]);
        };
        const batch = ingestBatch(ours, body());
        if (expected === 'no-op') {
          expect((await batch).map((r) => [r.info.storePath, r.created])).toEqual([
            [closure.busybox, false],
            [closure.lib, false],
            [closure.root, true],
          ]);
          expect((await ours.info(closure.root))?.references).toContain(closure.lib);
        } else {
          await expect(batch).rejects.toMatchObject({ code: expected });
          expect(await ours.info(closure.root)).toBeNull();
        }
      } finally {
        await ours.close();
        await other.close();
        await rm(dataDir, { recursive: true, force: true });
      }
    }
  });

  test(`at most ${MAX_BATCH_NARS} NARs`, async () => {
    const many = Array.from({ length: MAX_BATCH_NARS + 1 }, () => entries.lib);
    const r = await rawBatch(cache.url, batchBody(many));
    expect([r.status, r.json.error?.code]).toEqual([400, 'CACHE_BAD_REQUEST']);
    expect(r.json.error?.message).toMatch(/at most 1000 NARs/);
  });

  test('a batch cut short keeps the NARs that arrived whole', async () => {
    const r = await rawBatch(cache.url, batchBody([entries.busybox, entries.lib], false));
    expect([r.status, r.json.error?.code]).toEqual([400, 'CACHE_UPLOAD_ABORTED']);
    expect(await held()).toEqual({ narinfos: [closure.busybox, closure.lib].map(narinfo).sort(), tmp: [] });
  });

  test('malformed frames and bodies', async () => {
    const len = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(n);
      return b;
    };
    const cases: [Buffer, Record<string, string>, number, string][] = [
      [Buffer.concat([len(10), Buffer.from('{"pa')]), {}, 400, 'CACHE_UPLOAD_ABORTED'],
      [Buffer.alloc(0), {}, 400, 'CACHE_UPLOAD_ABORTED'],
      [Buffer.concat([len(0), Buffer.from('x')]), {}, 400, 'CACHE_BAD_REQUEST'],
      [Buffer.concat([len(2 * 1024 * 1024), Buffer.alloc(16)]), {}, 400, 'CACHE_BAD_REQUEST'],
      [Buffer.concat([len(5), Buffer.from('{oops'), len(0)]), {}, 400, 'CACHE_BAD_REQUEST'],
      [batchBody([copy(entries.lib, { extra: 1 })]), {}, 400, 'CACHE_BAD_REQUEST'],
      [batchBody([copy(entries.lib, { path: '../etc/passwd' })]), {}, 400, 'CACHE_INVALID_PATH'],
      [batchBody([copy(entries.lib, { references: ['/etc/passwd'] })]), {}, 400, 'CACHE_INVALID_PATH'],
      [
        batchBody([copy(entries.lib, { references: Array(10_001).fill(closure.lib) })]),
        {},
        400,
        'CACHE_BAD_REQUEST',
      ],
      [
        batchBody([entries.lib]),
        { 'content-type': 'application/octet-stream' },
        415,
        'CACHE_UNSUPPORTED_MEDIA_TYPE',
      ],
      [
        Buffer.from('{"paths":[]}'),
        { 'content-type': 'application/json' },
        415,
        'CACHE_UNSUPPORTED_MEDIA_TYPE',
      ],
    ];
    for (const [body, headers, status, code] of cases) {
      const r = await rawBatch(cache.url, body, headers);
      expect([r.status, r.json.error?.code], code).toEqual([status, code]);
    }
    expect(await held()).toEqual({ narinfos: [], tmp: [] });
  });
});
