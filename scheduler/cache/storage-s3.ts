/**
 * Cache storage in an S3-compatible bucket (`@aws-sdk/client-s3`), laid out as Nix lays out its own
 * binary caches: `<prefix><hash>.narinfo`, `<prefix>nar/<file>`, `<prefix>nix-cache-info`. Uploads are
 * spooled in a local folder while they are checked, then put; a narinfo is put only when none is
 * there, with `If-None-Match: *` so that on servers with conditional writes (AWS, MinIO, R2) not even
 * two simultaneous uploads let a second coordinator replace the first's.
 *
 * What is read back is checked: a NAR must hash to its name (a small one read whole before it is served,
 * a large one hashed as it streams, its last chunk held back), and CacheStore checks each narinfo. A
 * damaged object is not served, is said through `onProblem`, and is remembered with its ETag; the next
 * upload of its path replaces exactly that object (a narinfo with `If-Match: <its ETag>`, so a copy
 * another coordinator repaired meanwhile is kept), and never a whole one.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rm, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { describeS3Location, type S3Location } from '../../spec/s3-location.js';
import { CacheError } from './errors.js';
import { NarFindings, nameOfBytes, narNameCheck } from './nar-check.js';
import {
  BufferedNar,
  type CacheStorage,
  type NarinfoObject,
  type NarObject,
  type NarPut,
  type ReadyNarinfos,
  type StorageProblem,
  storeSideBySide,
} from './storage.js';
import { removeStaleSpools } from './storage-dir.js';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3StorageOptions {
  location: S3Location;
  /** Unset: the SDK's own chain (environment, shared profile, instance role). */
  credentials?: S3Credentials;
  /** Local folder under which this process spools uploads (a folder of its own is made inside). */
  spoolRoot: string;
  /** Milliseconds to connect and to wait for an answer; default 5 s and 60 s. */
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Keys per listing page; default (and S3's maximum) 1000. */
  listPageSize?: number;
}

const NIX_CACHE_INFO = 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n';
/** NARs above this go up in parts of this size, four at a time (at most 64 MiB in memory). */
const PART_BYTES = 16 * 1024 * 1024;
/** NARs up to this size are read whole and checked before their first byte is served (a 500 when damaged). */
const WHOLE_CHECK_BYTES = 4 * 1024 * 1024;

export class S3Storage implements CacheStorage {
  readonly location: string;
  readonly spoolDir: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  /** Where what is found broken in the bucket is said (CacheStore sets its log here). */
  onProblem: (problem: StorageProblem) => void = (p) => process.emitWarning(p.message, { code: p.code });
  /**
   * Narinfo objects found damaged (CacheStore's check), by hash part, with their ETag then: not served,
   * and the next upload of the path replaces that very object. In memory only, like the directory's.
   */
  private readonly condemnedNarinfos = new Map<string, string>();
  /** NAR objects found whole (a NAR many agents fetch is hashed once), and found damaged, by ETag. */
  private readonly findings = new NarFindings();

  constructor(private readonly opts: S3StorageOptions) {
    const l = opts.location;
    this.location = describeS3Location(l);
    this.bucket = l.bucket;
    this.prefix = l.prefix;
    this.spoolDir = join(opts.spoolRoot, `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`);
    // The SDK's first client prints a ten-line warning on Node 20 (mxc's runtime) that SDK versions
    // published from 2027 will need Node 22: the version package-lock.json pins runs here, and the
    // warning broke the coordinator's structured log on every start. Set it yourself to see it.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new S3Client({
      endpoint: l.endpoint,
      region: l.region ?? process.env.AWS_REGION ?? 'us-east-1',
      forcePathStyle: l.forcePathStyle,
      credentials: opts.credentials,
      maxAttempts: 3,
      requestHandler: {
        connectionTimeout: opts.connectTimeoutMs ?? 5000,
        requestTimeout: opts.requestTimeoutMs ?? 60_000,
      },
    });
  }

  /** Checks the bucket answers (and exists), then writes `nix-cache-info` once, as Nix's own caches have. */
  async init(): Promise<void> {
    await mkdir(this.spoolDir, { recursive: true });
    await removeStaleSpools(this.opts.spoolRoot, this.spoolDir);
    await this.call('reach it', () => this.client.send(new HeadBucketCommand({ Bucket: this.bucket })));
    if ((await this.head('nix-cache-info')) === null) {
      await this.call('write nix-cache-info', () =>
        this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: `${this.prefix}nix-cache-info`,
            Body: NIX_CACHE_INFO,
            ContentType: 'text/x-nix-cache-info',
          }),
        ),
      );
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
    await rm(this.spoolDir, { recursive: true, force: true });
  }

  async getNarinfo(hash: string): Promise<NarinfoObject | null> {
    const got = await this.get(`${hash}.narinfo`);
    if (!got) return null;
    const text = await got.Body!.transformToString('utf8');
    const version = got.ETag ?? '';
    return version === this.condemnedNarinfos.get(hash) ? null : { text, version };
  }

  async narinfoVersion(hash: string): Promise<string | null> {
    const version = (await this.head(`${hash}.narinfo`))?.etag ?? null;
    return version === this.condemnedNarinfos.get(hash) ? null : version;
  }

  async condemnNarinfo(hash: string, version: string): Promise<void> {
    this.condemnedNarinfos.set(hash, version);
  }

  /**
   * Publishes a narinfo where none is, or where the one there is the object found damaged (condemned at
   * this ETag): that one is replaced with `If-Match`, so a whole copy another coordinator put there
   * meanwhile stays (412: the caller reads it back). Any other object there is kept: false.
   */
  async putNarinfo(hash: string, text: string): Promise<boolean> {
    // Checked first too: some servers (s3rver, older MinIO) ignore If-None-Match and would overwrite.
    const there = await this.head(`${hash}.narinfo`);
    // Without an ETag (a server that sends none) the object cannot be told from a repaired one: it is
    // then only not served, never replaced.
    const damaged = there?.etag && there.etag === this.condemnedNarinfos.get(hash) ? there.etag : undefined;
    if (there !== null && damaged === undefined) return false;
    const put = () =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: `${this.prefix}${hash}.narinfo`,
          Body: text,
          ContentType: 'text/x-nix-narinfo',
          ...(damaged === undefined ? { IfNoneMatch: '*' } : { IfMatch: damaged }),
        }),
      );
    for (let attempt = 1; ; attempt++) {
      try {
        await put();
        if (damaged !== undefined) this.condemnedNarinfos.delete(hash);
        return true;
      } catch (err) {
        const status = statusOf(err);
        // 412: another writer's narinfo is there. 409: another conditional write of it is under way.
        if (status === 412) return false;
        if (status === 409 && attempt < 5) continue;
        throw this.unavailable('publish a narinfo', err);
      }
    }
  }

  async deleteNarinfo(hash: string): Promise<void> {
    await this.delete(`${hash}.narinfo`);
  }

  async listNarinfos(): Promise<string[]> {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.call('list narinfos', () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.prefix,
            // nar/ is a "folder" and stays out of the listing.
            Delimiter: '/',
            ContinuationToken: token,
            MaxKeys: this.opts.listPageSize,
          }),
        ),
      );
      for (const o of page.Contents ?? []) {
        const name = o.Key?.slice(this.prefix.length) ?? '';
        if (name.endsWith('.narinfo')) out.push(name.slice(0, -'.narinfo'.length));
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async listNars(): Promise<{ file: string; modifiedMs: number }[]> {
    const out: { file: string; modifiedMs: number }[] = [];
    const prefix = `${this.prefix}nar/`;
    let token: string | undefined;
    do {
      const page = await this.call('list NARs', () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            ContinuationToken: token,
            MaxKeys: this.opts.listPageSize,
          }),
        ),
      );
      for (const o of page.Contents ?? []) {
        const file = o.Key?.slice(prefix.length) ?? '';
        if (file && !file.includes('/')) out.push({ file, modifiedMs: o.LastModified?.getTime() ?? 0 });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /**
   * A NAR object checked against its name until found whole once (at its ETag): a small one read whole
   * first (damaged: 500 CACHE_STORAGE_CORRUPT), a large one hashed as it streams, its last chunk held back
   * (damaged: the transfer breaks off short). Either way it is logged, and its narinfos are not served
   * until a push replaces it.
   */
  async getNar(file: string): Promise<NarObject | null> {
    const got = await this.get(`nar/${file}`);
    if (!got) return null;
    const size = got.ContentLength ?? 0;
    const etag = got.ETag ?? '';
    const body = got.Body as Readable;
    if (this.findings.isWhole(file, etag)) return { size, stream: body };
    if (etag && this.findings.damagedAt(file) === etag) {
      body.destroy();
      throw this.corruptNar(file);
    }
    if (size <= WHOLE_CHECK_BYTES) {
      const bytes = Buffer.from(await got.Body!.transformToByteArray());
      if (nameOfBytes(bytes, file) !== file) throw this.foundDamaged(file, etag, 'read');
      this.findings.foundWhole(file, etag);
      return new BufferedNar(bytes);
    }
    const check = narNameCheck(file, (whole) => {
      if (whole) this.findings.foundWhole(file, etag);
      else return this.foundDamaged(file, etag, 'streamed (its transfer was broken off)');
      return undefined;
    });
    return { size, stream: pipeline(body, check, () => {}) };
  }

  private foundDamaged(file: string, etag: string, how: string): CacheError {
    this.findings.foundDamaged(file, etag);
    const object = `s3://${this.bucket}/${this.prefix}nar/${file}`;
    this.onProblem({
      code: 'CACHE_STORAGE_CORRUPT',
      message: `the NAR object ${object} is not the bytes its name hashes (found as it was ${how}); it is not served, nor are the narinfos naming it, and the next push of their paths uploads it again`,
      location: object,
      nar: file,
    });
    return this.corruptNar(file);
  }

  private corruptNar(file: string): CacheError {
    return new CacheError(
      'CACHE_STORAGE_CORRUPT',
      500,
      `the NAR ${file} is corrupt in the cache's bucket ${this.location}; push the paths that name it again`,
    );
  }

  /** Whether a NAR object was found damaged and is still that object (same ETag): its narinfos are not served. */
  async narFoundCorrupt(file: string): Promise<boolean> {
    const seen = this.findings.damagedAt(file);
    if (seen === undefined) return false;
    if ((await this.head(`nar/${file}`))?.etag === seen) return true;
    // Replaced since (another coordinator's push) or gone: whole until found otherwise.
    this.findings.forgetDamage(file);
    return false;
  }

  async hasNar(file: string): Promise<boolean> {
    const there = await this.head(`nar/${file}`);
    return there !== null && there.etag !== this.findings.damagedAt(file);
  }

  async putNar(file: string, spooled: string): Promise<void> {
    await this.putNarBody(file, () => createReadStream(spooled));
    await unlink(spooled);
  }

  private async putNarBody(file: string, body: () => Readable | Buffer): Promise<void> {
    // NAR names are content hashes: one already there (another coordinator's) holds these bytes, unless
    // it was found damaged; then it is overwritten (the upload was checked, so only these bytes can go there).
    if (!(await this.hasNar(file))) {
      await this.call('store a NAR', () =>
        new Upload({
          client: this.client,
          partSize: PART_BYTES,
          queueSize: 4,
          params: {
            Bucket: this.bucket,
            Key: `${this.prefix}nar/${file}`,
            Body: body(),
            ContentType: 'application/x-nix-nar',
          },
        }).done(),
      );
      this.findings.forget(file);
    }
  }

  async putNars(items: readonly NarPut[]): Promise<void> {
    // A few at a time: each is its own request (or multipart upload).
    for (let i = 0; i < items.length; i += 4) {
      await Promise.all(
        items
          .slice(i, i + 4)
          .map((it) =>
            'data' in it ? this.putNarBody(it.file, () => it.data) : this.putNar(it.file, it.spooled),
          ),
      );
    }
  }

  async readyNarinfos(items: readonly { hash: string; text: string }[]): Promise<ReadyNarinfos> {
    // Nothing to prepare: a bucket publishes each narinfo in one request.
    return {
      publish: async (keep) => {
        // One after another: a referrer's narinfo never appears before its references'.
        const out: boolean[] = [];
        for (const [i, { hash, text }] of items.entries())
          if (keep[i]) out.push(await this.putNarinfo(hash, text));
        return out;
      },
      drop: async () => {},
    };
  }

  storeGroup(
    nars: readonly NarPut[],
    narinfos: readonly { hash: string; text: string }[],
  ): Promise<ReadyNarinfos> {
    return storeSideBySide(this, nars, narinfos);
  }

  async syncPublished(): Promise<void> {
    // Each narinfo's PUT was answered, so it is stored: nothing to wait for.
  }

  async deleteNar(file: string): Promise<void> {
    await this.delete(`nar/${file}`);
  }

  private async get(name: string) {
    try {
      return await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: `${this.prefix}${name}` }),
      );
    } catch (err) {
      if (statusOf(err) === 404 && errorName(err) !== 'NoSuchBucket') return null;
      throw this.unavailable(`read ${name}`, err);
    }
  }

  private async head(name: string): Promise<{ etag: string } | null> {
    try {
      const h = await this.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: `${this.prefix}${name}` }),
      );
      return { etag: h.ETag ?? '' };
    } catch (err) {
      // A HEAD answer has no body, so a missing bucket looks like a missing object here; init checks the bucket.
      if (statusOf(err) === 404) return null;
      throw this.unavailable(`look up ${name}`, err);
    }
  }

  private async delete(name: string): Promise<void> {
    await this.call(`delete ${name}`, () =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: `${this.prefix}${name}` })),
    );
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.unavailable(what, err);
    }
  }

  /** A coded 503 naming the bucket and what went wrong; never a credential. */
  private unavailable(what: string, err: unknown): CacheError {
    const status = statusOf(err);
    const name = errorName(err);
    const hint =
      status === 404 || name === 'NoSuchBucket'
        ? 'the bucket does not exist: create it, or fix MXC_CACHE_S3_URL'
        : status === 403 || status === 401
          ? 'access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or their _FILE twins) and the bucket policy'
          : status === undefined
            ? 'the server cannot be reached: check the endpoint in MXC_CACHE_S3_URL and the network'
            : 'the server refused the request';
    const detail = status === undefined ? ((err as NodeJS.ErrnoException).code ?? name) : `${status} ${name}`;
    return new CacheError(
      'CACHE_STORAGE_UNAVAILABLE',
      503,
      `cache bucket ${this.location}: cannot ${what} (${detail}): ${hint}`,
      { cause: err },
    );
  }
}

function statusOf(err: unknown): number | undefined {
  return (err as Partial<S3ServiceException> | null)?.$metadata?.httpStatusCode;
}

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : String(err);
}
