/**
 * Cache storage benchmark: pushes one closure of real store paths into a coordinator's cache kept in
 * a directory and, in the same run, into one kept in an S3-compatible bucket (s3rver running here, a
 * stand-in: a real S3 or MinIO has other costs), then realises it from the bucket-backed cache.
 * Prints both push times, their ratio and the realise time.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import Fastify, { type FastifyInstance } from 'fastify';
import { pushClosure } from '../compiler/push.js';
import { closureOf, nixBuild } from '../lib/nix.js';
import { type CacheStore, cachePlugin, openCacheStore } from '../scheduler/cache/index.js';
import { repoPath } from '../scheduler/paths.js';
import { parseS3Location } from '../spec/s3-location.js';
import { realiseFromCache } from './lib/realise.js';

const PATHS = Number(process.env.MXC_BENCH_CACHE_S3_PATHS ?? 100);

function closureExpr(n: number): string {
  return `
    let
      bb = builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; };
      mk = i: derivation {
        name = "mxc-bench-s3-\${toString i}"; system = builtins.currentSystem; builder = "\${bb}/busybox";
        args = [ "sh" "-c" "\${bb}/busybox mkdir -p $out; \${bb}/busybox seq 1 \${toString (2000 + i * 7)} > $out/text; \${bb}/busybox head -c \${toString (40000 + i * 50)} /dev/urandom > $out/random" ];
      };
      paths = builtins.genList mk ${n};
    in derivation {
      name = "mxc-bench-s3-root"; system = builtins.currentSystem; builder = "\${bb}/busybox";
      args = [ "sh" "-c" "echo \${builtins.concatStringsSep " " paths} > $out" ];
    }`;
}

async function startS3rver(dir: string): Promise<{ proc: ChildProcess; endpoint: string }> {
  const proc = spawn(
    process.execPath,
    ['--openssl-legacy-provider', repoPath('test', 'helpers', 's3-server-main.mjs'), dir, 'bench'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`s3rver exited (${code})`)));
    createInterface({ input: proc.stdout! }).once('line', (l) => resolve(JSON.parse(l).port));
  });
  return { proc, endpoint: `http://127.0.0.1:${port}` };
}

async function serve(store: CacheStore, dataDir: string): Promise<{ app: FastifyInstance; url: string }> {
  const app = Fastify({ logger: false });
  await app.register(cachePlugin, { dataDir, store });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  if (!addr || typeof addr === 'string') throw new Error('no port');
  return { app, url: `http://127.0.0.1:${addr.port}` };
}

const seconds = async (f: () => Promise<unknown>) => {
  const t = performance.now();
  await f();
  return (performance.now() - t) / 1000;
};

export async function main(): Promise<Record<string, number>> {
  const work = await mkdtemp(join(tmpdir(), 'mxc-bench-s3-'));
  let s3: ChildProcess | undefined;
  const apps: FastifyInstance[] = [];
  const stores: CacheStore[] = [];
  try {
    const [root] = await nixBuild(['-E', closureExpr(PATHS)], { timeoutMs: 30 * 60_000 });
    const paths = (await closureOf([root])).length;
    const started = await startS3rver(join(work, 's3'));
    s3 = started.proc;
    const location = parseS3Location(`s3://bench/c/?endpoint=${started.endpoint}&force_path_style=true`);
    if ('problems' in location) throw new Error(location.problems.join('; '));

    const dirStore = await openCacheStore(join(work, 'dir'));
    const s3Store = await openCacheStore(join(work, 's3-data'), {
      s3: { location, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } },
    });
    stores.push(dirStore, s3Store);
    const dir = await serve(dirStore, join(work, 'dir'));
    const bucket = await serve(s3Store, join(work, 's3-data'));
    apps.push(dir.app, bucket.app);

    const dirS = await seconds(() => pushClosure({ coordinator: dir.url, paths: [root] }));
    const s3S = await seconds(() => pushClosure({ coordinator: bucket.url, paths: [root] }));
    const realiseS = await seconds(() =>
      realiseFromCache(join(work, 'realised'), root, `${bucket.url}/cache`, s3Store.key.publicKey),
    );
    const r = {
      paths,
      push_dir_s: dirS,
      push_s3_s: s3S,
      s3_over_dir: s3S / dirS,
      realise_from_s3_s: realiseS,
    };
    console.log(
      `cache-s3: ${paths} paths pushed into a directory in ${dirS.toFixed(2)} s, into an s3rver bucket in ` +
        `${s3S.toFixed(2)} s (${r.s3_over_dir.toFixed(2)}× the directory); realised from the bucket-backed cache in ${realiseS.toFixed(2)} s`,
    );
    return r;
  } finally {
    for (const a of apps) await a.close();
    for (const s of stores) await s.close().catch(() => {});
    s3?.kill('SIGTERM');
    await rm(work, { recursive: true, force: true });
  }
}
