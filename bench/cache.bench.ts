/**
 * Binary cache benchmark: pushes a closure of a few hundred real store paths, then measures
 * narinfo requests/s and NAR MiB/s from the cache next to `python3 -m http.server` serving the same
 * files, plus a full `nix-store --realise` from the cache. Prints figures and ratios.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import Fastify from 'fastify';
import { pushClosure } from '../compiler/push.js';
import { run } from '../lib/exec.js';
import { closureOf, nixBuild } from '../lib/nix.js';
import { cachePlugin, ensureCacheKey } from '../scheduler/cache/index.js';

const PATHS = Number(process.env.MXC_BENCH_CACHE_PATHS ?? 300);
const NARINFO_REQUESTS = Number(process.env.MXC_BENCH_NARINFO_REQUESTS ?? 6000);
const CONCURRENCY = 32;

/** `PATHS` leaves of mixed text and random bytes (~100 KiB each), each referencing 3 earlier ones (a closure about 9 levels deep). */
function closureExpr(n: number): string {
  return `
    let
      bb = builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; };
      mk = i: deps: derivation {
        name = "mxc-bench-cache-\${toString i}"; system = builtins.currentSystem; builder = "\${bb}/busybox";
        args = [ "sh" "-c" ''
          \${bb}/busybox mkdir -p $out
          \${bb}/busybox seq 1 \${toString (2000 + i * 7)} > $out/text
          \${bb}/busybox head -c \${toString (40000 + i * 50)} /dev/urandom > $out/random
          echo \${builtins.concatStringsSep " " (map toString deps)} > $out/deps
        '' ];
      };
      build = i: mk i (if i < 3 then [ ] else map (d: paths.\${toString d}) [ (i / 2) (i / 3) (i / 5) ]);
      paths = builtins.listToAttrs (map (i: { name = toString i; value = build i; }) (builtins.genList (x: x) ${n}));
    in derivation {
      name = "mxc-bench-cache-root"; system = builtins.currentSystem; builder = "\${bb}/busybox";
      args = [ "sh" "-c" "echo \${builtins.concatStringsSep " " (builtins.attrValues paths)} > $out" ];
    }`;
}

/** A load generator in its own thread so client work does not share the server's event loop. */
const LOAD_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
const { urls, concurrency, keepAlive } = workerData;
const agent = new http.Agent({ keepAlive, maxSockets: concurrency });
let next = 0, bytes = 0, errors = 0;
function one(url) {
  return new Promise((resolve) => {
    http.get(url, { agent }, (res) => {
      if (res.statusCode !== 200) errors++;
      res.on('data', (c) => { bytes += c.length; });
      res.on('end', resolve);
      res.on('error', () => { errors++; resolve(); });
    }).on('error', () => { errors++; resolve(); });
  });
}
async function lane() { while (next < urls.length) await one(urls[next++]); }
const t0 = process.hrtime.bigint();
Promise.all(Array.from({ length: concurrency }, lane)).then(() => {
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  agent.destroy();
  parentPort.postMessage({ requests: urls.length, bytes, errors, ms });
});`;

interface Load {
  requests: number;
  bytes: number;
  errors: number;
  ms: number;
}

function load(urls: string[], concurrency: number, keepAlive: boolean): Promise<Load> {
  return new Promise((resolve, reject) => {
    const w = new Worker(LOAD_WORKER, { eval: true, workerData: { urls, concurrency, keepAlive } });
    w.once('message', (m: Load) => {
      resolve(m);
      void w.terminate();
    });
    w.once('error', reject);
  });
}

async function startPython(dir: string): Promise<{ proc: ChildProcess; url: string }> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const proc = spawn(
    'python3',
    ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', dir],
    {
      stdio: 'ignore',
    },
  );
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    if (
      await fetch(`${url}/`).then(
        (r) => r.ok,
        () => false,
      )
    )
      return { proc, url };
    await new Promise((r) => setTimeout(r, 50));
  }
  proc.kill();
  throw new Error('python3 -m http.server did not start');
}

const mib = (b: number) => b / 1024 / 1024;
const fmt = (x: number, d = 1) => x.toFixed(d);

export async function main(): Promise<Record<string, number>> {
  const work = await mkdtemp(join(tmpdir(), 'mxc-bench-cache-'));
  const app = Fastify({ logger: false });
  let python: ChildProcess | undefined;
  try {
    let t = performance.now();
    const [root] = await nixBuild(['-E', closureExpr(PATHS)], { timeoutMs: 30 * 60_000 });
    const closure = await closureOf([root]);
    const buildS = (performance.now() - t) / 1000;

    const dataDir = join(work, 'data');
    await app.register(cachePlugin, { dataDir });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const addr = app.server.address();
    if (!addr || typeof addr === 'string') throw new Error('no port');
    const url = `http://127.0.0.1:${addr.port}`;

    t = performance.now();
    const pushed = await pushClosure({ coordinator: url, paths: [root] });
    const pushS = (performance.now() - t) / 1000;
    // The anchor: nix's own copy of the same closure into a file:// binary cache (zstd, as issue 17 measured).
    t = performance.now();
    await run('nix', [
      '--extra-experimental-features',
      'nix-command',
      'copy',
      '--to',
      `file://${join(work, 'nix-copy')}?compression=zstd`,
      root,
    ]);
    const nixCopyS = (performance.now() - t) / 1000;

    const cacheDir = join(dataDir, 'cache');
    const hashes = (await readdir(join(cacheDir, 'narinfo'))).map((f) => f.slice(0, 32));
    const nars = await readdir(join(cacheDir, 'nar'));
    const py = await startPython(cacheDir);
    python = py.proc;

    const narinfoUrls = (base: string, path: (h: string) => string) =>
      Array.from({ length: NARINFO_REQUESTS }, (_, i) => `${base}${path(hashes[i % hashes.length])}`);
    // Warm both (page cache, JIT) before measuring.
    await load(narinfoUrls(url, (h) => `/cache/${h}.narinfo`).slice(0, 500), 8, true);
    await load(narinfoUrls(py.url, (h) => `/narinfo/${h}.narinfo`).slice(0, 500), 8, false);
    const oursInfo = await load(
      narinfoUrls(url, (h) => `/cache/${h}.narinfo`),
      CONCURRENCY,
      true,
    );
    const pyInfo = await load(
      narinfoUrls(py.url, (h) => `/narinfo/${h}.narinfo`),
      CONCURRENCY,
      false,
    );

    const narUrls = (base: string, prefix: string) =>
      [0, 1, 2].flatMap(() => nars.map((n) => `${base}${prefix}${n}`));
    const oursNar = await load(narUrls(url, '/cache/nar/'), 8, true);
    const pyNar = await load(narUrls(py.url, '/nar/'), 8, false);

    const { publicKey } = await ensureCacheKey(dataDir);
    t = performance.now();
    await run('nix-store', [
      '--store',
      join(work, 'realised'),
      '--realise',
      root,
      '--option',
      'substituters',
      `${url}/cache`,
      '--option',
      'trusted-public-keys',
      publicKey,
      '--option',
      'narinfo-cache-negative-ttl',
      '0',
    ]);
    const realiseS = (performance.now() - t) / 1000;

    for (const l of [oursInfo, pyInfo, oursNar, pyNar])
      if (l.errors > 0) throw new Error(`${l.errors} failed requests`);
    const r = {
      paths: closure.length,
      nar_mib: mib(pushed.bytes),
      push_mib_s: mib(pushed.bytes) / pushS,
      push_s: pushS,
      nix_copy_s: nixCopyS,
      narinfo_rps: oursInfo.requests / (oursInfo.ms / 1000),
      python_narinfo_rps: pyInfo.requests / (pyInfo.ms / 1000),
      nar_mib_s: mib(oursNar.bytes) / (oursNar.ms / 1000),
      python_nar_mib_s: mib(pyNar.bytes) / (pyNar.ms / 1000),
      realise_s: realiseS,
    };
    const lines = [
      `cache bench: ${r.paths} paths, ${fmt(r.nar_mib)} MiB of NARs (stored brotli: ${nars.length} files); built in ${fmt(buildS)} s`,
      `  push (4 in parallel):        mxc ${fmt(pushS, 2)} s (${fmt(r.push_mib_s)} MiB/s uncompressed) | nix copy --to file://…?compression=zstd ${fmt(nixCopyS, 2)} s | ratio ${fmt(pushS / nixCopyS, 2)}x the time`,
      `  narinfo GET, ${CONCURRENCY} concurrent:  mxc ${fmt(r.narinfo_rps, 0)} req/s | python http.server ${fmt(r.python_narinfo_rps, 0)} req/s | ratio ${fmt(r.narinfo_rps / r.python_narinfo_rps, 2)}x`,
      `  NAR GET, 8 concurrent:       mxc ${fmt(r.nar_mib_s)} MiB/s | python http.server ${fmt(r.python_nar_mib_s)} MiB/s | ratio ${fmt(r.nar_mib_s / r.python_nar_mib_s, 2)}x`,
      `  nix-store --realise of the whole closure from the cache: ${fmt(r.realise_s, 2)} s`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    return r;
  } finally {
    python?.kill();
    await app.close();
    await rm(work, { recursive: true, force: true });
  }
}
