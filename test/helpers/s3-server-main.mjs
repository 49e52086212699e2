// An S3-compatible server for tests (s3rver), run as its own process: `node --openssl-legacy-provider
// s3-server-main.mjs <dir> <bucket>…` prints {"port":…} once it listens. The flag gives s3rver the DES
// cipher its ListObjectsV2 continuation tokens use (OpenSSL 3 keeps DES in the legacy provider).
import S3rver from 's3rver';

const [dir, ...buckets] = process.argv.slice(2);
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
