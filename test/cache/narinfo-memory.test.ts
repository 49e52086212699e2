/**
 * Narinfos are served from memory, revalidated with a stat at most every narinfoRevalidateMs: a
 * path published by another coordinator sharing the directory is found at once, a file changed or
 * removed on disk shows once the window has passed.
 */
import { readFile, unlink, writeFile } from 'node:fs/promises';
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

beforeAll(async () => {
  closure = await buildClosure('narinfo-memory');
  cache = await startCache({ narinfoRevalidateMs: 200 });
  await pushClosure({ coordinator: cache.url, paths: [closure.root] });
});
afterAll(async () => {
  await cache?.close();
});

describe('narinfo in memory', () => {
  test('a changed file is served once revalidated; a removed one is then not found', async () => {
    const hash = closure.lib.slice(11, 43);
    const file = join(cache.dataDir, 'cache', 'narinfo', `${hash}.narinfo`);
    const original = await readFile(file, 'utf8');
    expect(await get(hash)).toEqual({ status: 200, text: original });
    await writeFile(file, `${original}X-Edited: 1\n`);
    await eventually(async () => ((await get(hash)).text.includes('X-Edited') ? true : null), 5000);
    await unlink(file);
    await eventually(async () => ((await get(hash)).status === 404 ? true : null), 5000);
    await writeFile(file, original);
    expect(await get(hash)).toEqual({ status: 200, text: original });
  });

  test('a narinfo another coordinator wrote into the shared directory is found at once', async () => {
    const hash = closure.busybox.slice(11, 43);
    const name = `${hash}.narinfo`;
    const text = await readFile(join(cache.dataDir, 'cache', 'narinfo', name), 'utf8');
    const other = await startCache({});
    try {
      const otherFile = join(other.dataDir, 'cache', 'narinfo', name);
      const r = await fetch(`${other.url}/cache/${name}`);
      expect(r.status).toBe(404);
      await writeFile(otherFile, text);
      const again = await fetch(`${other.url}/cache/${name}`);
      expect([again.status, await again.text()]).toEqual([200, text]);
    } finally {
      await other.close();
    }
  });
});
