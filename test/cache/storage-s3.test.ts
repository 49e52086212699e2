// The S3 storage against a real S3-compatible server running here (s3rver): the storage contract
// with two handles on one bucket, paged listings, `s3://` URL checks, and coded errors for a missing
// bucket, an unreachable server and a server that goes away while the storage is in use.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CacheError } from '../../scheduler/cache/errors.js';
import { S3Storage, type S3StorageOptions } from '../../scheduler/cache/storage-s3.js';
import { repoPath } from '../../scheduler/paths.js';
import { parseS3Location, type S3Location } from '../../spec/s3-location.js';
import { startS3Server, type TestS3Server } from '../helpers/s3-server.js';
import { storageContract } from './storage-contract.js';

let s3: TestS3Server;
let work: string;
let prefixes = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mxc-s3-storage-'));
  s3 = await startS3Server(['cache']);
});
afterAll(async () => {
  await s3?.close();
  await rm(work, { recursive: true, force: true });
});

function location(url: string): S3Location {
  const l = parseS3Location(url);
  if ('problems' in l) throw new Error(l.problems.join('; '));
  return l;
}

function storage(url: string, over: Partial<S3StorageOptions> = {}): S3Storage {
  return new S3Storage({
    location: location(url),
    credentials: s3.credentials,
    spoolRoot: join(work, 'spool'),
    ...over,
  });
}

// s3rver ignores If-None-Match, so two truly simultaneous first publishes are not decided by it.
storageContract(
  'S3 storage',
  async () => {
    const url = s3.url('cache', `t${prefixes++}/`);
    const a = storage(url);
    const b = storage(url);
    await a.init();
    await b.init();
    return [a, b];
  },
  false,
);

describe('S3 storage', () => {
  test("a coordinator's S3 storage prints no SDK warning about Node 20 (its log stays structured)", async () => {
    // A process of its own: the SDK warns once a process, and this file's own clients would have.
    const script = `
      import { S3Storage } from ${JSON.stringify(repoPath('dist', 'scheduler', 'cache', 'storage-s3.js'))};
      import { parseS3Location } from ${JSON.stringify(repoPath('dist', 'spec', 's3-location.js'))};
      const s = new S3Storage({
        location: parseS3Location(process.argv[1]),
        credentials: JSON.parse(process.argv[2]),
        spoolRoot: process.argv[3],
      });
      await s.init();
      await s.close();
      console.log('ok');`;
    const { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: _, ...env } = process.env;
    const r = await execa(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        script,
        s3.url('cache', 'warn/'),
        JSON.stringify(s3.credentials),
        join(work, 'spool'),
      ],
      { env, extendEnv: false, reject: false },
    );
    expect([r.exitCode, r.stdout, r.stderr]).toEqual([0, 'ok', '']);
  });

  test('the stand-in replaces an object whole, as S3 does: two PUTs of one key at once leave one of them', async () => {
    // s3rver itself wrote objects in place, and tore ~2% of such pairs ('first\n' over 'second\n');
    // the contract above reads back what two writers published at once (test/helpers/s3-server-main.mjs).
    const client = new S3Client({
      endpoint: s3.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: s3.credentials,
    });
    try {
      const read: string[] = [];
      for (let i = 0; i < 100; i++) {
        const Key = `whole/${i}`;
        await Promise.all(
          ['first\n', 'second\n'].map((Body) =>
            client.send(new PutObjectCommand({ Bucket: 'cache', Key, Body })),
          ),
        );
        read.push(
          await (await client.send(new GetObjectCommand({ Bucket: 'cache', Key }))).Body!.transformToString(),
        );
      }
      expect(read.filter((text) => text !== 'first\n' && text !== 'second\n')).toEqual([]);
    } finally {
      client.destroy();
    }
  });

  test('lists narinfos page by page under its prefix only, leaving NARs and nix-cache-info out', async () => {
    const a = storage(s3.url('cache', 'paged/'), { listPageSize: 2 });
    const other = storage(s3.url('cache', 'other/'));
    await a.init();
    await other.init();
    const hashes = ['0', '1', '2', '3', '4'].map((c) => c.repeat(32));
    for (const h of hashes) expect(await a.putNarinfo(h, `${h}\n`)).toBe(true);
    await other.putNarinfo('5'.repeat(32), 'x\n');
    expect((await a.listNarinfos()).sort()).toEqual(hashes);
    expect(await other.listNarinfos()).toEqual(['5'.repeat(32)]);
    await Promise.all([a.close(), other.close()]);
  });

  test('a missing bucket is a coded error at start', async () => {
    const s = storage(s3.url('no-such-bucket'));
    const err = await s.init().catch((e) => e);
    expect(err).toBeInstanceOf(CacheError);
    expect(err.code).toBe('CACHE_STORAGE_UNAVAILABLE');
    expect(err.message).toMatch(/s3:\/\/no-such-bucket\/.*does not exist/);
    await s.close();
  });

  test('an unreachable server is a coded error at start', async () => {
    const closed = await startS3Server([]);
    const url = closed.url('cache');
    await closed.close();
    const s = storage(url, { connectTimeoutMs: 1000 });
    const err = await s.init().catch((e) => e);
    expect(err).toBeInstanceOf(CacheError);
    expect(err.code).toBe('CACHE_STORAGE_UNAVAILABLE');
    expect(err.message).toMatch(/cannot be reached/);
    await s.close();
  });

  test('a server gone while in use gives coded errors on every call', async () => {
    const own = await startS3Server(['gone']);
    const s = storage(own.url('gone'), { connectTimeoutMs: 1000 });
    await s.init();
    expect(await s.putNarinfo('7'.repeat(32), 'seven\n')).toBe(true);
    await own.close();
    for (const call of [
      () => s.getNarinfo('7'.repeat(32)),
      () => s.narinfoVersion('7'.repeat(32)),
      () => s.listNarinfos(),
      () => s.getNar(`${'1'.repeat(52)}.nar.br`),
    ]) {
      const err = await call().catch((e) => e);
      expect(err).toBeInstanceOf(CacheError);
      expect(err.code).toBe('CACHE_STORAGE_UNAVAILABLE');
    }
    await s.close();
  });
});

describe('s3:// URLs', () => {
  test('bucket, prefix and parameters are read; credentials, unknown parameters and bad names refused', () => {
    expect(
      parseS3Location(
        's3://my-cache/a/b?endpoint=http://127.0.0.1:9000&region=eu-west-1&force_path_style=true',
      ),
    ).toEqual({
      bucket: 'my-cache',
      prefix: 'a/b/',
      endpoint: 'http://127.0.0.1:9000',
      region: 'eu-west-1',
      forcePathStyle: true,
    });
    expect(parseS3Location('s3://my-cache')).toEqual({
      bucket: 'my-cache',
      prefix: '',
      forcePathStyle: false,
    });
    const refused = (u: string) => {
      const r = parseS3Location(u);
      return 'problems' in r ? r.problems.join('; ') : '';
    };
    expect(refused('s3://AKIA:secret@my-cache')).toMatch(/must not carry credentials/);
    expect(refused('https://my-cache/x')).toMatch(/must start with s3:/);
    expect(refused('s3://my-cache?scheme=http')).toMatch(/unknown parameter "scheme"/);
    expect(refused('s3://My_Bucket')).toMatch(/not a bucket name/);
    expect(refused('s3://my-cache/a%20b')).toMatch(/prefix segment "a b"/);
    expect(refused('s3://my-cache?endpoint=ftp://x')).toMatch(/endpoint must be an http/);
    expect(refused('s3://my-cache?endpoint=http://u:p@x')).toMatch(/endpoint must not carry credentials/);
    expect(refused('s3://my-cache?force_path_style=yes')).toMatch(/force_path_style/);
  });
});
