/**
 * Starts the test S3 server (s3rver, from npm, runs offline) as a child process on a free port, with
 * the given buckets, and the credentials it accepts.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export interface TestS3Server {
  endpoint: string;
  port: number;
  /** s3rver's fixed credentials. */
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** `s3://<bucket>/<prefix>?endpoint=…&force_path_style=true` */
  url(bucket: string, prefix?: string): string;
  close(): Promise<void>;
}

const MAIN = fileURLToPath(new URL('./s3-server-main.mjs', import.meta.url));

export async function startS3Server(buckets: string[]): Promise<TestS3Server> {
  const dir = await mkdtemp(join(tmpdir(), 'mxc-s3-'));
  const child = spawn(process.execPath, ['--openssl-legacy-provider', MAIN, dir, ...buckets], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the test S3 server exited (${code}) before listening`)));
    createInterface({ input: child.stdout! }).once('line', (line) => resolve(JSON.parse(line).port));
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    port,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    url: (bucket, prefix = '') =>
      `s3://${bucket}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&region=us-east-1&force_path_style=true`,
    async close() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
      await rm(`${dir}.spool`, { recursive: true, force: true }); // s3-server-main.mjs's PUTs in progress
    },
  };
}
