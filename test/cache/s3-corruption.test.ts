// Objects damaged in the cache's S3 bucket (s3rver, running here): a narinfo whose signed fields were
// changed, a NAR whose bytes were changed (a small one, read whole, and a large one, checked as it
// streams). As with a directory (pack-corruption.test.ts), the cache never serves the damaged bytes
// as valid, says so in its log (CACHE_STORAGE_CORRUPT), and the next push of the paths replaces exactly
// the damaged objects, after which stock nix realises the closure from the cache; whole objects are
// never replaced.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { pushClosure } from '../../compiler/push.js';
import { ensureCacheKey } from '../../scheduler/cache/index.js';
import type { StorageProblem } from '../../scheduler/cache/storage.js';
import { parseS3Location, type S3Location } from '../../spec/s3-location.js';
import { eventually } from '../helpers/protocol-agent.js';
import { startS3Server, type TestS3Server } from '../helpers/s3-server.js';
import {
  buildClosure,
  buildRandomPath,
  realiseFrom,
  servedInfo,
  startCache,
  type TestCache,
} from './fixtures.js';

const BUCKET = 'corrupt';
let s3: TestS3Server;
let client: S3Client;
let work: string;
let closure: { root: string; lib: string; busybox: string };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-s3-corruption-'));
  s3 = await startS3Server([BUCKET]);
  client = new S3Client({
    endpoint: s3.endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: s3.credentials,
  });
  closure = await buildClosure('s3-corruption');
}, 120_000);

afterAll(async () => {
  client?.destroy();
  await s3?.close();
  await rm(work, { recursive: true, force: true });
});

const hashOf = (path: string) => path.slice(11, 43);

function location(prefix: string): S3Location {
  const l = parseS3Location(s3.url(BUCKET, prefix));
  if ('problems' in l) throw new Error(l.problems.join('; '));
  return l;
}

/** A cache on its own prefix of the bucket holding `paths`, and a restart of it (another process) that records problems. */
async function pushedThenRestarted(
  name: string,
  paths: string[],
): Promise<{
  dataDir: string;
  reopen: () => Promise<{ cache: TestCache; problems: StorageProblem[] }>;
}> {
  const dataDir = join(work, name);
  const s3Options = { s3: { location: location(`${name}/`), credentials: s3.credentials } };
  const first = await startCache({ dataDir, ...s3Options });
  await pushClosure({ coordinator: first.url, paths });
  await first.app.close();
  return {
    dataDir,
    reopen: async () => {
      const problems: StorageProblem[] = [];
      const cache = await startCache({ dataDir, ...s3Options, onCorrupt: (p) => problems.push(p) });
      return { cache, problems };
    },
  };
}

async function readObject(key: string): Promise<Buffer> {
  const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await got.Body!.transformToByteArray());
}

async function etagOf(key: string): Promise<string | undefined> {
  return (await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }))).ETag;
}

/** Overwrites an object with its bytes, one bit flipped at `at`. */
async function flipBit(key: string, at: (bytes: Buffer) => number): Promise<void> {
  const bytes = await readObject(key);
  const i = at(bytes);
  bytes[i] = bytes[i]! ^ 0x04;
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bytes }));
}

const publicKey = async (dataDir: string) => (await ensureCacheKey(dataDir)).publicKey;

describe('a damaged object in the S3 bucket', () => {
  test("a narinfo's signed fields changed: not served, logged, replaced by the next push; nix realises", async () => {
    const { dataDir, reopen } = await pushedThenRestarted('narinfo-flip', [closure.root]);
    const key = `narinfo-flip/${hashOf(closure.lib)}.narinfo`;
    const whole = [closure.root, closure.busybox].map((p) => `narinfo-flip/${hashOf(p)}.narinfo`);
    const wholeTags = await Promise.all(whole.map(etagOf));
    // A bit of the NarSize digits: still a narinfo that parses, no longer the one that was signed.
    await flipBit(key, (b) => b.indexOf('NarSize: ') + 'NarSize: '.length);
    const damagedTag = await etagOf(key);

    const { cache, problems } = await reopen();
    try {
      expect((await fetch(`${cache.url}/cache/${hashOf(closure.lib)}.narinfo`)).status).toBe(404);
      expect(problems.map((p) => p.code)).toEqual(['CACHE_STORAGE_CORRUPT']);
      expect(problems[0]!.message).toContain(hashOf(closure.lib));
      // The push uploads exactly the damaged path (before, it failed: "exists but cannot be read back").
      const again = await pushClosure({ coordinator: cache.url, paths: [closure.root] });
      expect(again.uploaded).toEqual([closure.lib]);
      expect(await etagOf(key)).not.toBe(damagedTag);
      expect(await Promise.all(whole.map(etagOf))).toEqual(wholeTags);
      await realiseFrom(cache.url, await publicKey(dataDir), closure.root, join(work, 'store-narinfo-flip'));
    } finally {
      await cache.app.close();
    }
    // Another process reads the repaired object as whole; a push changes nothing.
    const { cache: third, problems: none } = await reopen();
    try {
      expect((await servedInfo(third.url, closure.lib)).storePath).toBe(closure.lib);
      expect((await pushClosure({ coordinator: third.url, paths: [closure.root] })).uploaded).toEqual([]);
      expect(none).toEqual([]);
    } finally {
      await third.app.close();
    }
  }, 60_000);

  test('a small NAR changed: a coded 500, logged, its narinfo hidden, replaced by the next push; nix realises', async () => {
    const { dataDir, reopen } = await pushedThenRestarted('nar-flip', [closure.root]);
    const { cache, problems } = await reopen();
    try {
      const narName = (await servedInfo(cache.url, closure.lib)).url.slice('nar/'.length);
      const key = `nar-flip/nar/${narName}`;
      const before = await readObject(key);
      await flipBit(key, (b) => Math.floor(b.length / 2));

      const r = await fetch(`${cache.url}/cache/nar/${narName}`);
      expect(r.status).toBe(500);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('CACHE_STORAGE_CORRUPT');
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatchObject({ code: 'CACHE_STORAGE_CORRUPT', nar: narName });
      // Known damaged: refused again without a second log line, and its narinfo is no longer served.
      expect((await fetch(`${cache.url}/cache/nar/${narName}`)).status).toBe(500);
      expect((await fetch(`${cache.url}/cache/${hashOf(closure.lib)}.narinfo`)).status).toBe(404);
      expect((await fetch(`${cache.url}/cache/${hashOf(closure.busybox)}.narinfo`)).status).toBe(200);

      expect((await pushClosure({ coordinator: cache.url, paths: [closure.root] })).uploaded).toEqual([
        closure.lib,
      ]);
      expect((await readObject(key)).equals(before)).toBe(true);
      const served = await fetch(`${cache.url}/cache/nar/${narName}`);
      expect(Buffer.from(await served.arrayBuffer()).equals(before)).toBe(true);
      await realiseFrom(cache.url, await publicKey(dataDir), closure.root, join(work, 'store-nar-flip'));
    } finally {
      await cache.app.close();
    }
  }, 60_000);

  test('a large NAR changed: its transfer breaks off short, logged, replaced by the next push; nix realises', async () => {
    // Over the size read whole before serving (4 MiB): checked as it streams.
    const large = await buildRandomPath('mxc-s3-corruption-large', 5_000_000);
    const { dataDir, reopen } = await pushedThenRestarted('large', [large]);
    const { cache, problems } = await reopen();
    try {
      const narName = (await servedInfo(cache.url, large)).url.slice('nar/'.length);
      const key = `large/nar/${narName}`;
      const before = await readObject(key);
      await flipBit(key, () => 3_000_000);

      const r = await fetch(`${cache.url}/cache/nar/${narName}`);
      expect(r.status).toBe(200); // the headers go out before the last byte is read
      const got = await r.arrayBuffer().then(
        (b) => b.byteLength,
        () => 'broken off',
      );
      expect(got).not.toBe(before.length);
      await eventually(async () => problems.length > 0, 5000, 'the damaged NAR to be logged');
      expect(problems[0]).toMatchObject({ code: 'CACHE_STORAGE_CORRUPT', nar: narName });
      expect((await fetch(`${cache.url}/cache/${hashOf(large)}.narinfo`)).status).toBe(404);

      expect((await pushClosure({ coordinator: cache.url, paths: [large] })).uploaded).toEqual([large]);
      expect((await readObject(key)).equals(before)).toBe(true);
      await realiseFrom(cache.url, await publicKey(dataDir), large, join(work, 'store-large'));
    } finally {
      await cache.app.close();
    }
  }, 90_000);
});
