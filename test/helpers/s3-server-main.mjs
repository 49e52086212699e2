// An S3-compatible server for tests (s3rver), run as its own process: `node --openssl-legacy-provider
// s3-server-main.mjs <dir> <bucket>…` prints {"port":…} once it listens. The flag gives s3rver the DES
// cipher its ListObjectsV2 continuation tokens use (OpenSSL 3 keeps DES in the legacy provider).
//
// s3rver writes an object in place (the file truncated, then written) and its metadata after it: two
// PUTs of one key at once could leave a torn object, one's bytes over the other's ('first\n' over
// 'second\n' read back as 'first\n\n'), which S3 never does (a PUT replaces an object whole). Here a
// PUT writes its bytes to a file beside the store, then renames it into place and writes the metadata,
// one PUT of a key after the other: the last one wins whole, as on S3.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import S3rver from 's3rver';

const [dir, ...buckets] = process.argv.slice(2);

const FilesystemStore = createRequire(import.meta.url)('s3rver/lib/stores/filesystem.js');
// Beside the store's folder, not in it: s3rver lists buckets and objects by walking it.
const spool = `${dir.replace(/\/+$/, '')}.spool`;
await mkdir(spool, { recursive: true });
const putting = new Map();
FilesystemStore.prototype.putObject = function putObject(object) {
  const id = `${object.bucket}\0${object.key}`;
  const put = (putting.get(id) ?? Promise.resolve()).then(() => putWhole(this, object));
  const settled = put.then(
    () => {},
    () => {},
  );
  putting.set(id, settled);
  void settled.then(() => {
    if (putting.get(id) === settled) putting.delete(id);
  });
  return put;
};

async function putWhole(store, object) {
  const objectPath = store.getResourcePath(object.bucket, object.key, 'object');
  await mkdir(dirname(objectPath), { recursive: true });
  const tmp = join(spool, randomBytes(8).toString('hex'));
  const md5 = createHash('md5');
  let size = 0;
  if (Buffer.isBuffer(object.content)) {
    md5.update(object.content);
    size = object.content.length;
    await writeFile(tmp, object.content);
  } else {
    const count = new Transform({
      transform(chunk, _encoding, callback) {
        md5.update(chunk);
        size += chunk.length;
        callback(null, chunk);
      },
    });
    await pipeline(object.content, count, createWriteStream(tmp));
  }
  const digest = md5.digest('hex');
  await rename(tmp, objectPath);
  await store.putMetadata(object.bucket, object.key, object.metadata, digest);
  return { size, md5: digest };
}

const server = new S3rver({
  address: '127.0.0.1',
  port: Number(process.env.S3_TEST_PORT ?? 0),
  silent: true,
  directory: dir,
  configureBuckets: buckets.map((name) => ({ name })),
});
const { port } = await server.run();
process.stdout.write(`${JSON.stringify({ port })}\n`);
process.on('SIGTERM', () => server.close().then(() => process.exit(0)));
