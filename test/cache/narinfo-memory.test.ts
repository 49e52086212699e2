/**
 * Narinfos are served from memory, revalidated with a stat at most every narinfoRevalidateMs: a
 * path published by another coordinator sharing the directory (in a pack, or as a narinfo file of the
 * layout before packs) is found at once, a narinfo file changed or removed on disk shows once the
 * window has passed.
 */
import { mkdir, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { eventually } from '../helpers/protocol-agent.js';
import { buildClosure, startCache, type TestCache } from './fixtures.js';

let cache: TestCache;
let closure: Awaited<ReturnType<typeof buildClosure>>;
const get = async (hash: string) => {
  const r = await fetch(`${cache.url}/cache/${hash}.narinfo`);
  return { status: r.status, text: await r.text() };
};

const keyOf = (c: TestCache) => join(c.dataDir, 'cache', 'secret.key');

beforeAll(async () => {
  closure = await buildClosure('narinfo-memory');
  cache = await startCache({ narinfoRevalidateMs: 200 });
  await pushClosure({ coordinator: cache.url, paths: [closure.root] });
});
afterAll(async () => {
  await cache?.close();
});

describe('narinfo in memory', () => {
  test('a narinfo file (the layout before packs) changed is served once revalidated; removed, it is then not found', async () => {
    const hash = closure.lib.slice(11, 43);
    const original = (await get(hash)).text;
    // The same signing key: a narinfo signed by another key of the cache's name is not served.
    const old = await startCache({ narinfoRevalidateMs: 200, keyFile: keyOf(cache) });
    const getOld = async () => {
      const r = await fetch(`${old.url}/cache/${hash}.narinfo`);
      return { status: r.status, text: await r.text() };
    };
    try {
      const file = join(old.dataDir, 'cache', 'narinfo', `${hash}.narinfo`);
      await mkdir(join(old.dataDir, 'cache', 'narinfo'));
      await writeFile(file, original);
      expect(await getOld()).toEqual({ status: 200, text: original });
      await writeFile(file, `${original}X-Edited: 1\n`);
      await eventually(async () => ((await getOld()).text.includes('X-Edited') ? true : null), 5000);
      await unlink(file);
      await eventually(async () => ((await getOld()).status === 404 ? true : null), 5000);
      await writeFile(file, original);
      expect(await getOld()).toEqual({ status: 200, text: original });
    } finally {
      await old.close();
    }
  });

  test('a narinfo file another coordinator wrote into the shared directory is found at once', async () => {
    const hash = closure.busybox.slice(11, 43);
    const name = `${hash}.narinfo`;
    const text = (await get(hash)).text;
    const other = await startCache({ keyFile: keyOf(cache) });
    try {
      const otherFile = join(other.dataDir, 'cache', 'narinfo', name);
      const r = await fetch(`${other.url}/cache/${name}`);
      expect(r.status).toBe(404);
      await mkdir(join(other.dataDir, 'cache', 'narinfo'));
      await writeFile(otherFile, text);
      const again = await fetch(`${other.url}/cache/${name}`);
      expect([again.status, await again.text()]).toEqual([200, text]);
    } finally {
      await other.close();
    }
  });

  test('a path another coordinator sharing the directory published (in a pack) is found at once, NAR and all', async () => {
    const a = await startCache({});
    const b = await startCache({ dataDir: a.dataDir });
    try {
      const hash = closure.root.slice(11, 43);
      expect((await fetch(`${b.url}/cache/${hash}.narinfo`)).status).toBe(404);
      await pushClosure({ coordinator: a.url, paths: [closure.root] });
      const info = await fetch(`${b.url}/cache/${hash}.narinfo`);
      const text = await info.text();
      expect([info.status, text]).toEqual([
        200,
        await (await fetch(`${a.url}/cache/${hash}.narinfo`)).text(),
      ]);
      const url = /^URL: (.*)$/m.exec(text)![1]!;
      const nar = await fetch(`${b.url}/cache/${url}`);
      expect(nar.status).toBe(200);
      expect((await nar.arrayBuffer()).byteLength).toBe(Number(/^FileSize: (\d+)$/m.exec(text)![1]));
    } finally {
      await b.app.close();
      await a.close();
    }
  });
});
