/**
 * Binary cache benchmark: pushes a closure of a few hundred real store paths to the cache (served by its
 * own process, as in a coordinator) side by side with `nix copy` of the same closure (rounds alternate,
 * the median is printed), then measures narinfo requests/s and NAR MiB/s from the cache next to
 * `python3 -m http.server` serving the same bytes as plain files, plus a full `nix-store --realise` from the cache.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { pushClosure } from '../compiler/push.js';
import { closureOf, nixBuild } from '../lib/nix.js';
import { ensureCacheKey } from '../scheduler/cache/index.js';
import { repoPath } from '../scheduler/paths.js';
import { type CoordinatorProcess, startCoordinatorProcess } from './lib/coordinator-process.js';
import { type BenchDb, createBenchDb } from './lib/pg.js';
import { cpuSeconds } from './lib/proc.js';
import { realiseFromCache } from './lib/realise.js';
import { childrenCpuMs, timeCommandCpu } from './lib/timing.js';

const PATHS = Number(process.env.MXC_BENCH_CACHE_PATHS ?? 300);
const PUSH_ROUNDS = Number(process.env.MXC_BENCH_CACHE_ROUNDS ?? 5);
/**
 * Pushes of other closures a running coordinator has served before its measured rounds. A freshly
 * started one compiles its hot code while it takes its first pushes (V8's optimizing compiler, on the
 * second core the client needs too: 70-90 ms of CPU a push, `--trace-opt` counted 15-30 functions
 * compiled in each of the first five); one in service did that long ago.
 */
const RUNNING_WARM_PUSHES = 2;
/** narinfo GETs measured from mxc and the bare node server: at ~20,000/s and more, a second's worth or so. */
const NARINFO_REQUESTS = Number(process.env.MXC_BENCH_NARINFO_REQUESTS ?? 30_000);
/** python's http.server answers ~1,500/s: fewer of its GETs give as steady a rate in a few seconds. */
const PYTHON_NARINFO_REQUESTS = Math.min(NARINFO_REQUESTS, 6000);
const CONCURRENCY = 32;

/**
 * `PATHS` leaves of mixed text and random bytes (~100 KiB each), each referencing 3 earlier ones (a
 * closure about 9 levels deep). Another `name` gives a closure of the same shape and other paths.
 */
function closureExpr(n: number, name = 'mxc-bench-cache'): string {
  return `
    let
      bb = builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; };
      mk = i: deps: derivation {
        name = "${name}-\${toString i}"; system = builtins.currentSystem; builder = "\${bb}/busybox";
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
      name = "${name}-root"; system = builtins.currentSystem; builder = "\${bb}/busybox";
      args = [ "sh" "-c" "echo \${builtins.concatStringsSep " " (builtins.attrValues paths)} > $out" ];
    }`;
}

/**
 * A load generator in its own thread so client work does not share the server's event loop. It speaks
 * HTTP/1.1 on raw sockets, as wrk does: node's http client costs more CPU per request (~50 µs) than the
 * server it measures (~35 µs), and on two cores it was then the client, not the cache, that set the
 * figure. Each response is still read whole and checked: a status line, a 200, and its Content-Length
 * (or the connection's end for a close-delimited HTTP/1.0 answer, as python's http.server sends).
 */
const LOAD_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
const { urls, concurrency, keepAlive, authorization } = workerData;
const extra = (authorization ? '\\r\\nAuthorization: ' + authorization : '') + (keepAlive ? '' : '\\r\\nConnection: close');
const HEAD_END = Buffer.from('\\r\\n\\r\\n');
let next = 0, bytes = 0, errors = 0;
function connect(host, port) {
  const socket = net.connect({ host, port, noDelay: true });
  const conn = { socket, head: null, body: -1, left: 0, done: null, closed: false };
  socket.on('data', (chunk) => onData(conn, chunk));
  socket.on('error', () => finish(conn, false));
  socket.on('close', () => { conn.closed = true; if (conn.done) finish(conn, conn.head !== null && conn.left < 0 && conn.body >= 0); });
  return conn;
}
function finish(conn, ok) {
  const done = conn.done;
  if (!done) return;
  conn.done = null;
  if (!ok) { errors++; conn.closed = true; conn.socket.destroy(); }
  done();
}
function onData(conn, chunk) {
  if (conn.head === null) {
    const buf = conn.pending ? Buffer.concat([conn.pending, chunk]) : chunk;
    const end = buf.indexOf(HEAD_END);
    if (end < 0) { conn.pending = buf; return; }
    conn.pending = null;
    conn.head = buf.toString('latin1', 0, end);
    if (!/^HTTP\\/1\\.[01] 200 /.test(conn.head)) errors++;
    const m = /\\r\\ncontent-length: *(\\d+)/i.exec(conn.head);
    if (/\\r\\ntransfer-encoding:/i.test(conn.head)) { errors++; return finish(conn, false); }
    conn.left = m ? Number(m[1]) : -1;
    conn.body = 0;
    chunk = buf.subarray(end + 4);
  }
  conn.body += chunk.length;
  bytes += chunk.length;
  if (conn.left >= 0 && conn.body >= conn.left) {
    if (conn.body > conn.left) errors++;
    conn.head = null;
    finish(conn, true);
  }
}
function one(conn, url) {
  return new Promise((resolve) => {
    conn.done = resolve;
    conn.head = null; conn.pending = null; conn.body = -1;
    conn.socket.write('GET ' + url.pathname + ' HTTP/1.1\\r\\nHost: ' + url.host + extra + '\\r\\n\\r\\n');
  });
}
async function lane() {
  let conn = null;
  while (next < urls.length) {
    const url = new URL(urls[next++]);
    if (!conn || conn.closed) conn = connect(url.hostname, Number(url.port));
    await one(conn, url);
    if (!keepAlive) {
      // A graceful end, as a client does: a reset makes python's http.server log a traceback.
      conn.socket.end();
      conn = null;
    }
  }
  conn?.socket.destroy();
}
const t0 = process.hrtime.bigint();
const cpu0 = process.cpuUsage();
Promise.all(Array.from({ length: concurrency }, lane)).then(() => {
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  parentPort.postMessage({ requests: urls.length, bytes, errors, ms, cpuMs: (cpu.user + cpu.system) / 1000 });
});`;

interface Load {
  requests: number;
  bytes: number;
  errors: number;
  ms: number;
  /** The generator's CPU time (the bench process's, whose main thread waits meanwhile). */
  cpuMs: number;
}

function load(
  urls: string[],
  concurrency: number,
  keepAlive: boolean,
  authorization?: string,
): Promise<Load> {
  return new Promise((resolve, reject) => {
    const w = new Worker(LOAD_WORKER, {
      eval: true,
      workerData: { urls, concurrency, keepAlive, authorization },
    });
    w.once('message', (m: Load) => {
      resolve(m);
      void w.terminate();
    });
    w.once('error', reject);
  });
}

async function startPython(dir: string): Promise<{ proc: ChildProcess; url: string }> {
  // Port 0: the kernel picks a free one, which python prints (unbuffered: -u). A random port could be
  // one of this bench's own connections' (the ephemeral range), and python then exits at once.
  const proc = spawn('python3', ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1', '--directory', dir], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('python3 -m http.server did not start in 10 s')), 10_000);
    proc.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = / port (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`python3 -m http.server exited (${code}) before it listened`));
    });
  }).catch((err: unknown) => {
    proc.kill();
    throw err;
  });
  proc.stdout!.resume();
  return { proc, url: `http://127.0.0.1:${port}` };
}

const mib = (b: number) => b / 1024 / 1024;
const fmt = (x: number, d = 1) => x.toFixed(d);

interface CacheServer {
  url: string;
  cpuMs(): Promise<number>;
  stop(): Promise<void>;
}

/** The cache plugin in its own process (bench/lib/cache-server.ts). */
function startCacheServer(dataDir: string): Promise<CacheServer> {
  return startForked('./lib/cache-server.js', dataDir);
}

/** A server of bench/lib in its own process that answers { port } and, when sent 'cpu', { cpuMs }. */
async function startForked(file: string, arg: string): Promise<CacheServer> {
  // The thread pool a coordinator has (bin/mxc.js sets UV_THREADPOOL_SIZE for its daemons).
  const env = { UV_THREADPOOL_SIZE: '16', ...process.env };
  const child = fork(new URL(file, import.meta.url), [arg], { stdio: 'inherit', env });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`${file} exited with code ${code}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    cpuMs: () =>
      new Promise((resolve) => {
        child.once('message', (m: { cpuMs: number }) => resolve(m.cpuMs));
        child.send('cpu');
      }),
    stop: async () => {
      const exited = new Promise((r) => child.once('exit', r));
      child.disconnect();
      await exited;
    },
  };
}

/**
 * Runs a command to its end, spawned by this process (no shell, no wrapper): its wall time, and its CPU
 * time with its children's (from /proc, 10 ms ticks). A python3 wrapper used to report the CPU time;
 * python3 is a pyenv shim on this machine, which added ~80 ms of wall and ~55 ms of CPU (its own
 * helper processes) to every command measured, nix copy's included.
 */
async function timedRun(argv: string[], env?: NodeJS.ProcessEnv): Promise<{ s: number; cpuMs: number }> {
  const [file, ...args] = argv;
  const r = await timeCommandCpu(file!, args, { env: env ?? process.env });
  return { s: r.wallMs / 1000, cpuMs: r.cpuMs };
}

/** `nix copy` of the closure into a fresh file:// cache: wall time and CPU time. */
const nixCopy = (root: string, to: string) =>
  timedRun([
    'nix',
    '--extra-experimental-features',
    'nix-command',
    'copy',
    '--to',
    `file://${to}?compression=zstd`,
    root,
  ]);

/**
 * `mxc push` as a user runs it (npm's bin link: bin/mxc.js through its shebang): a Node process of its
 * own, like nix copy (its start-up included).
 */
const cliPush = (root: string, coordinator: string) =>
  timedRun([repoPath('bin', 'mxc.js'), 'push', root], {
    ...process.env,
    MXC_COORDINATOR: coordinator,
    MXC_API_TOKEN: '',
  });

/**
 * What the cache serves for `closure`, written as plain files (`narinfo/<hash>.narinfo`, `nar/<file>`)
 * for python's http.server and the bare node server to serve.
 */
async function flatCopy(
  url: string,
  closure: readonly string[],
  dir: string,
): Promise<{ dir: string; hashes: string[]; nars: string[] }> {
  await mkdir(join(dir, 'narinfo'), { recursive: true });
  await mkdir(join(dir, 'nar'), { recursive: true });
  const hashes = closure.map((p) => p.slice(11, 43));
  const nars: string[] = [];
  for (const hash of hashes) {
    const text = await (await fetch(`${url}/cache/${hash}.narinfo`)).text();
    await writeFile(join(dir, 'narinfo', `${hash}.narinfo`), text);
    const nar = /^URL: nar\/(.*)$/m.exec(text)?.[1];
    if (!nar) throw new Error(`the cache has no narinfo for ${hash}`);
    nars.push(nar);
    await writeFile(
      join(dir, 'nar', nar),
      Buffer.from(await (await fetch(`${url}/cache/nar/${nar}`)).arrayBuffer()),
    );
  }
  return { dir, hashes, nars };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The fastest and slowest of some rounds' seconds, as `0.16–0.19 s`: nix copy's own swing here is wide. */
const spread = (rounds: { s: number }[]) =>
  `${fmt(Math.min(...rounds.map((r) => r.s)), 2)}–${fmt(Math.max(...rounds.map((r) => r.s)), 2)} s`;

export async function main(): Promise<Record<string, number>> {
  const work = await mkdtemp(join(tmpdir(), 'mxc-bench-cache-'));
  let server: CacheServer | undefined;
  let bare: CacheServer | undefined;
  let python: ChildProcess | undefined;
  let coordinator: CoordinatorProcess | undefined;
  let db: BenchDb | undefined;
  try {
    let t = performance.now();
    // The closure every figure below uses, and the ones a running coordinator is pushed (one a round).
    const others = Array.from({ length: RUNNING_WARM_PUSHES + PUSH_ROUNDS }, (_, i) =>
      closureExpr(PATHS, `mxc-bench-cache-other${i}`),
    );
    const built = await nixBuild(
      ['-E', `[ (${closureExpr(PATHS)}) ${others.map((e) => `(${e})`).join(' ')} ]`],
      { timeoutMs: 30 * 60_000 },
    );
    const rootNamed = (name: string) => {
      const found = built.find((p) => p.endsWith(`-${name}-root`));
      if (!found) throw new Error(`nix-build did not print the closure ${name}`);
      return found;
    };
    const root = rootNamed('mxc-bench-cache');
    const otherRoots = others.map((_, i) => rootNamed(`mxc-bench-cache-other${i}`));
    const closure = await closureOf([root]);
    const buildS = (performance.now() - t) / 1000;

    // Rounds alternate push and nix copy, each into a fresh cache, so both see the same machine load.
    const pushes: { s: number; cpuMs: number; serverCpuMs: number }[] = [];
    const copies: { s: number; cpuMs: number }[] = [];
    const cliPushes: { s: number; cpuMs: number }[] = [];
    let pushed = { bytes: 0 };
    let dataDir = '';
    for (let round = 0; round < PUSH_ROUNDS; round++) {
      await server?.stop();
      dataDir = join(work, `data-${round}`);
      server = await startCacheServer(dataDir);
      const serverCpu0 = await server.cpuMs();
      const clientCpu0 = process.cpuUsage();
      const childCpu0 = childrenCpuMs();
      t = performance.now();
      pushed = await pushClosure({ coordinator: server.url, paths: [root] });
      const s = (performance.now() - t) / 1000;
      const client = process.cpuUsage(clientCpu0);
      // Client (with its nix path-info) + cache server, as nix copy's figure is all of its work.
      const clientMs = (client.user + client.system) / 1000 + childrenCpuMs() - childCpu0;
      const serverCpuMs = (await server.cpuMs()) - serverCpu0;
      pushes.push({ s, cpuMs: clientMs + serverCpuMs, serverCpuMs });
      copies.push(await nixCopy(root, join(work, `nix-copy-${round}`)));
      // The same push through the CLI, into a fresh cache of its own.
      await server.stop();
      server = await startCacheServer(join(work, `data-cli-${round}`));
      const cliServerCpu0 = await server.cpuMs();
      const cli = await cliPush(root, server.url);
      cliPushes.push({ s: cli.s, cpuMs: cli.cpuMs + (await server.cpuMs()) - cliServerCpu0 });
    }
    // What the reads below serve: the in-process push's cache.
    await server?.stop();
    server = await startCacheServer(dataDir);
    const pushS = median(pushes.map((p) => p.s));
    const nixCopyS = median(copies.map((c) => c.s));
    const pushCpuMs = median(pushes.map((p) => p.cpuMs));
    const nixCopyCpuMs = median(copies.map((c) => c.cpuMs));
    const cliPushS = median(cliPushes.map((p) => p.s));
    const cliPushCpuMs = median(cliPushes.map((p) => p.cpuMs));
    const url = server!.url;

    const cacheDir = join(dataDir, 'cache');
    // The anchors serve the same bytes as plain files (the cache keeps most of them in pack files).
    const flat = await flatCopy(url, closure, join(work, 'flat'));
    const { hashes, nars } = flat;
    const stored = nars.every((n) => n.endsWith('.nar')) ? 'uncompressed' : 'brotli';
    const py = await startPython(flat.dir);
    python = py.proc;
    bare = await startForked('./lib/bare-http-server.js', join(flat.dir, 'narinfo'));

    const narinfoUrls = (base: string, path: (h: string) => string) =>
      Array.from({ length: NARINFO_REQUESTS }, (_, i) => `${base}${path(hashes[i % hashes.length])}`);
    // Warm each server (page cache, JIT) before measuring: as many GETs as the JIT needs to settle.
    const warm = Math.min(NARINFO_REQUESTS, 5000);
    await load(narinfoUrls(url, (h) => `/cache/${h}.narinfo`).slice(0, warm), CONCURRENCY, true);
    await load(narinfoUrls(py.url, (h) => `/narinfo/${h}.narinfo`).slice(0, 500), 8, false);
    await load(narinfoUrls(bare.url, (h) => `/cache/${h}.narinfo`).slice(0, warm), CONCURRENCY, true);
    let cpu0 = await server!.cpuMs();
    const oursInfo = await load(
      narinfoUrls(url, (h) => `/cache/${h}.narinfo`),
      CONCURRENCY,
      true,
    );
    const oursInfoCpuMs = (await server!.cpuMs()) - cpu0;
    const pyInfo = await load(
      narinfoUrls(py.url, (h) => `/narinfo/${h}.narinfo`).slice(0, PYTHON_NARINFO_REQUESTS),
      CONCURRENCY,
      false,
    );
    cpu0 = await bare.cpuMs();
    const bareInfo = await load(
      narinfoUrls(bare.url, (h) => `/cache/${h}.narinfo`),
      CONCURRENCY,
      true,
    );
    const bareInfoCpuMs = (await bare.cpuMs()) - cpu0;
    await bare.stop();
    bare = undefined;

    // NARs from a freshly started cache server: each read once (its first read: a packed NAR is
    // hashed against its name), then each read again from the same server (the fleet-rollout case:
    // many agents fetch the same NARs), each beside python serving the same files.
    const narUrls = (base: string, prefix: string, times = 1) =>
      Array.from({ length: times }, () => nars.map((n) => `${base}${prefix}${n}`)).flat();
    await server!.stop();
    server = await startCacheServer(dataDir);
    cpu0 = await server.cpuMs();
    const oursNar = await load(narUrls(server.url, '/cache/nar/'), 8, true);
    const oursNarCpuMs = (await server.cpuMs()) - cpu0;
    const pyNar = await load(narUrls(py.url, '/nar/'), 8, false);
    cpu0 = await server.cpuMs();
    const oursNarAgain = await load(narUrls(server.url, '/cache/nar/', 3), 8, true);
    const oursNarAgainCpuMs = (await server.cpuMs()) - cpu0;
    const pyNarAgain = await load(narUrls(py.url, '/nar/', 3), 8, false);

    // The realise from a freshly started server too: every narinfo and NAR is a first read.
    await server.stop();
    server = await startCacheServer(dataDir);
    const { publicKey } = await ensureCacheKey(dataDir);
    t = performance.now();
    await realiseFromCache(join(work, 'realised'), root, `${server.url}/cache`, publicKey);
    const realiseS = (performance.now() - t) / 1000;

    // The production path: the same cache directory served by a whole coordinator (its access hook
    // and the rest of the API's hooks), each GET with a token.
    const token = `bench-${randomBytes(12).toString('hex')}`;
    db = await createBenchDb();
    coordinator = await startCoordinatorProcess({
      dataDir: join(work, 'coordinator'),
      databaseUrl: db.url,
      token,
      env: { MXC_API_TOKEN: token, MXC_CACHE_DIR: cacheDir },
    });
    const coordUrls = narinfoUrls(coordinator.url, (h) => `/cache/${h}.narinfo`);
    await load(coordUrls.slice(0, warm), CONCURRENCY, true, `Bearer ${token}`);
    const coordCpu0 = cpuSeconds(coordinator.pid);
    const coordInfo = await load(coordUrls, CONCURRENCY, true, `Bearer ${token}`);
    const coordInfoCpuS = cpuSeconds(coordinator.pid) - coordCpu0;
    await coordinator.stop();
    coordinator = undefined;

    // The push through a whole coordinator, as a user's goes: the token's check, every API hook and the
    // PostgreSQL claims (a statement a group), into a cache directory of its own; rounds alternate with
    // a nix copy, as above, and the ratio is to those copies (a coordinator's rounds come minutes after
    // the first ones, and this machine's speed drifts in minutes).
    const coordPushes: { s: number; cpuMs: number }[] = [];
    const coordCopies: { s: number; cpuMs: number }[] = [];
    for (let round = 0; round < PUSH_ROUNDS; round++) {
      coordinator = await startCoordinatorProcess({
        dataDir: join(work, `coordinator-push-${round}`),
        databaseUrl: db.url,
        token,
        env: { MXC_API_TOKEN: token, MXC_CACHE_DIR: join(work, `coordinator-push-cache-${round}`) },
      });
      const coordPushCpu0 = cpuSeconds(coordinator.pid);
      t = performance.now();
      await pushClosure({ coordinator: coordinator.url, token, paths: [root] });
      coordPushes.push({
        s: (performance.now() - t) / 1000,
        cpuMs: (cpuSeconds(coordinator.pid) - coordPushCpu0) * 1000,
      });
      await coordinator.stop();
      coordinator = undefined;
      coordCopies.push(await nixCopy(root, join(work, `nix-copy-coordinator-${round}`)));
    }

    // A running coordinator, as users push to: started once, it served pushes of other closures first;
    // each round pushes a closure it has not seen, between two nix copies of that closure (the ratio is
    // to their mean, so a drift of this machine's speed within the round cancels out).
    coordinator = await startCoordinatorProcess({
      dataDir: join(work, 'coordinator-running'),
      databaseUrl: db.url,
      token,
      env: { MXC_API_TOKEN: token, MXC_CACHE_DIR: join(work, 'coordinator-running-cache') },
    });
    for (const other of otherRoots.slice(0, RUNNING_WARM_PUSHES))
      await pushClosure({ coordinator: coordinator.url, token, paths: [other] });
    const running: { s: number; copyS: number; ratio: number }[] = [];
    for (const [round, other] of otherRoots.slice(RUNNING_WARM_PUSHES).entries()) {
      const before = await nixCopy(other, join(work, `nix-copy-running-${round}-before`));
      t = performance.now();
      await pushClosure({ coordinator: coordinator.url, token, paths: [other] });
      const s = (performance.now() - t) / 1000;
      const after = await nixCopy(other, join(work, `nix-copy-running-${round}-after`));
      const copyS = (before.s + after.s) / 2;
      running.push({ s, copyS, ratio: s / copyS });
    }
    await coordinator.stop();
    coordinator = undefined;

    const coordPushS = median(coordPushes.map((p) => p.s));
    const coordPushCpuMs = median(coordPushes.map((p) => p.cpuMs));
    const coordNixCopyS = median(coordCopies.map((c) => c.s));

    for (const l of [oursInfo, pyInfo, bareInfo, coordInfo, oursNar, pyNar, oursNarAgain, pyNarAgain])
      if (l.errors > 0) throw new Error(`${l.errors} failed requests`);
    const r = {
      paths: closure.length,
      nar_mib: mib(pushed.bytes),
      push_mib_s: mib(pushed.bytes) / pushS,
      push_s: pushS,
      nix_copy_s: nixCopyS,
      push_cpu_ms: pushCpuMs,
      nix_copy_cpu_ms: nixCopyCpuMs,
      cli_push_s: cliPushS,
      cli_push_cpu_ms: cliPushCpuMs,
      coordinator_push_s: coordPushS,
      coordinator_push_server_cpu_ms: coordPushCpuMs,
      coordinator_nix_copy_s: coordNixCopyS,
      running_coordinator_push_s: median(running.map((r) => r.s)),
      running_coordinator_nix_copy_s: median(running.map((r) => r.copyS)),
      running_coordinator_ratio: median(running.map((r) => r.ratio)),
      narinfo_rps: oursInfo.requests / (oursInfo.ms / 1000),
      python_narinfo_rps: pyInfo.requests / (pyInfo.ms / 1000),
      bare_node_narinfo_rps: bareInfo.requests / (bareInfo.ms / 1000),
      narinfo_server_cpu_us: (oursInfoCpuMs * 1000) / oursInfo.requests,
      bare_node_server_cpu_us: (bareInfoCpuMs * 1000) / bareInfo.requests,
      coordinator_narinfo_rps: coordInfo.requests / (coordInfo.ms / 1000),
      coordinator_server_cpu_us: (coordInfoCpuS * 1e6) / coordInfo.requests,
      narinfo_client_cpu_us: (oursInfo.cpuMs * 1000) / oursInfo.requests,
      nar_mib_s: mib(oursNar.bytes) / (oursNar.ms / 1000),
      python_nar_mib_s: mib(pyNar.bytes) / (pyNar.ms / 1000),
      nar_again_mib_s: mib(oursNarAgain.bytes) / (oursNarAgain.ms / 1000),
      python_nar_again_mib_s: mib(pyNarAgain.bytes) / (pyNarAgain.ms / 1000),
      nar_server_cpu_us: (oursNarCpuMs * 1000) / oursNar.requests,
      nar_again_server_cpu_us: (oursNarAgainCpuMs * 1000) / oursNarAgain.requests,
      realise_s: realiseS,
    };
    const lines = [
      `cache bench: ${r.paths} paths, ${fmt(r.nar_mib)} MiB of NARs (stored ${stored}: ${nars.length} files); built in ${fmt(buildS)} s`,
      `  push (batch upload, median of ${PUSH_ROUNDS}): mxc ${fmt(pushS, 2)} s (${fmt(r.push_mib_s)} MiB/s uncompressed) | nix copy --to file://…?compression=zstd ${fmt(nixCopyS, 2)} s | ratio ${fmt(pushS / nixCopyS, 2)}x the time`,
      `    rounds: mxc ${spread(pushes)} | nix copy ${spread(copies)} | through the CLI ${spread(cliPushes)} | a whole coordinator ${spread(coordPushes)} | nix copy beside it ${spread(coordCopies)}`,
      `  push CPU (client + cache):   mxc ${fmt(pushCpuMs, 0)} ms | nix copy ${fmt(nixCopyCpuMs, 0)} ms | ratio ${fmt(pushCpuMs / nixCopyCpuMs, 2)}x`,
      `  the same push through the CLI (\`mxc push ROOT\`, its Node start-up included, as nix copy's own): ${fmt(cliPushS, 2)} s | ratio ${fmt(cliPushS / nixCopyS, 2)}x the time of nix copy; CPU ${fmt(cliPushCpuMs, 0)} ms (${fmt(cliPushCpuMs / nixCopyCpuMs, 2)}x)`,
      `  the same push (in process) through a whole coordinator (a token, PostgreSQL claims), its first push after it started, median of ${PUSH_ROUNDS}: ${fmt(coordPushS, 2)} s | nix copy in the same rounds ${fmt(coordNixCopyS, 2)} s | ratio ${fmt(coordPushS / coordNixCopyS, 2)}x the time; the coordinator's CPU ${fmt(coordPushCpuMs, 0)} ms (the cache server's alone: ${fmt(median(pushes.map((p) => p.serverCpuMs)), 0)} ms)`,
      `  a push to a running coordinator (${RUNNING_WARM_PUSHES} pushes of other closures served before; each round a closure of this shape it has not seen, between two nix copies of it), median of ${running.length}: ${fmt(r.running_coordinator_push_s, 2)} s | nix copy ${fmt(r.running_coordinator_nix_copy_s, 2)} s | ratio ${fmt(r.running_coordinator_ratio, 2)}x the time (rounds ${running.map((x) => fmt(x.ratio, 2)).join(', ')})`,
      `  narinfo GET, ${CONCURRENCY} concurrent:  mxc ${fmt(r.narinfo_rps, 0)} req/s | python http.server ${fmt(r.python_narinfo_rps, 0)} req/s | ratio ${fmt(r.narinfo_rps / r.python_narinfo_rps, 2)}x`,
      `    ceiling: bare node:http, same bytes from memory, same load generator: ${fmt(r.bare_node_narinfo_rps, 0)} req/s (mxc ${fmt(r.narinfo_rps / r.bare_node_narinfo_rps, 2)}x of it)`,
      `    through a whole coordinator (access hook, bearer token): ${fmt(r.coordinator_narinfo_rps, 0)} req/s, ${fmt(r.coordinator_server_cpu_us)} µs of its CPU a request`,
      `    CPU a request: mxc server ${fmt(r.narinfo_server_cpu_us)} µs | bare node:http ${fmt(r.bare_node_server_cpu_us)} µs | load generator ${fmt(r.narinfo_client_cpu_us)} µs (for mxc)`,
      `  NAR GET, 8 concurrent, each NAR once from a fresh server (first reads): mxc ${fmt(r.nar_mib_s)} MiB/s | python http.server ${fmt(r.python_nar_mib_s)} MiB/s | ratio ${fmt(r.nar_mib_s / r.python_nar_mib_s, 2)}x; mxc server CPU ${fmt(r.nar_server_cpu_us, 0)} µs a GET`,
      `    each NAR 3 times again from the same server (repeat reads): mxc ${fmt(r.nar_again_mib_s)} MiB/s | python http.server ${fmt(r.python_nar_again_mib_s)} MiB/s | ratio ${fmt(r.nar_again_mib_s / r.python_nar_again_mib_s, 2)}x; mxc server CPU ${fmt(r.nar_again_server_cpu_us, 0)} µs a GET`,
      `  nix-store --realise of the whole closure from a freshly started cache server: ${fmt(r.realise_s, 2)} s`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    return r;
  } finally {
    python?.kill();
    await coordinator?.stop();
    await db?.drop();
    await bare?.stop();
    await server?.stop();
    await rm(work, { recursive: true, force: true });
  }
}
