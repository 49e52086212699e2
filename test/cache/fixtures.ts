/**
 * Shared pieces of the cache tests: a small real closure built with nix (busybox + two script
 * derivations), a fastify app carrying only the cache plugin, and a raw upload helper.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import { run } from '../../lib/exec.js';
import { type NarInfo, parseNarInfo } from '../../lib/nar-info.js';
import { closureOf, nixBuild } from '../../lib/nix.js';
import { parseSha256 } from '../../lib/nix-base32.js';
import { type CacheOptions, type CacheStorageOptions, cachePlugin } from '../../scheduler/cache/index.js';
import { DirectoryStorage, readPackIndex } from '../../scheduler/cache/storage-dir.js';

export const NIX_COMMAND = ['--extra-experimental-features', 'nix-command'] as const;

/**
 * Builds `<script>` → `<lib>` and `<script>` → busybox. `salt` makes distinct paths so tests can
 * have closures no other test pushed.
 */
export async function buildClosure(salt: string): Promise<{ root: string; lib: string; busybox: string }> {
  const expr = `
    let
      bb = builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; };
      lib = derivation { name = "mxc-cache-lib-${salt}"; system = builtins.currentSystem; builder = "\${bb}/busybox";
        args = [ "sh" "-c" "\${bb}/busybox mkdir -p $out; echo hello-${salt} > $out/data" ]; };
      script = derivation { name = "mxc-cache-script-${salt}"; system = builtins.currentSystem; builder = "\${bb}/busybox";
        args = [ "sh" "-c" "\${bb}/busybox mkdir -p $out/bin; echo '#!\${bb}/busybox sh' > $out/bin/hi; echo 'cat \${lib}/data' >> $out/bin/hi; \${bb}/busybox chmod +x $out/bin/hi" ]; };
    in { inherit bb lib script; }`;
  const [lib, root] = await nixBuild(['-E', expr, '-A', 'lib', '-A', 'script']);
  const busybox = (await closureOf([root])).find((p) => p.endsWith('-busybox'));
  if (!lib || !root || !busybox) throw new Error('the test closure did not build as expected');
  return { root, lib, busybox };
}

/** A store path (a file) of `bytes` random bytes, named `name`, with no references. */
export async function buildRandomPath(name: string, bytes: number): Promise<string> {
  const expr = `
    let bb = builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; };
    in derivation { name = "${name}"; system = builtins.currentSystem; builder = "\${bb}/busybox";
      args = [ "sh" "-c" "\${bb}/busybox head -c ${bytes} /dev/urandom > $out" ]; }`;
  const [path] = await nixBuild(['-E', expr]);
  if (!path) throw new Error(`${name} did not build`);
  return path;
}

/**
 * A closure of `count` leaves of ~60 KiB, each referencing earlier ones, under one root: several publish
 * groups (GROUP_NARS each) of random bytes. Returns the root.
 */
export async function buildLayeredClosure(count: number): Promise<string> {
  const expr = `
    let
      bb = builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; };
      mk = i: deps: derivation {
        name = "mxc-push-crash-\${toString i}"; system = builtins.currentSystem; builder = "\${bb}/busybox";
        args = [ "sh" "-c" ''
          \${bb}/busybox mkdir -p $out
          \${bb}/busybox head -c \${toString (60000 + i)} /dev/urandom > $out/random
          echo \${builtins.concatStringsSep " " (map toString deps)} > $out/deps
        '' ];
      };
      build = i: mk i (if i < 2 then [ ] else map (d: paths.\${toString d}) [ (i / 2) (i / 3) ]);
      paths = builtins.listToAttrs (map (i: { name = toString i; value = build i; }) (builtins.genList (x: x) ${count}));
    in derivation {
      name = "mxc-push-crash-root"; system = builtins.currentSystem; builder = "\${bb}/busybox";
      args = [ "sh" "-c" "echo \${builtins.concatStringsSep " " (builtins.attrValues paths)} > $out" ];
    }`;
  const [root] = await nixBuild(['-E', expr], { timeoutMs: 10 * 60_000 });
  if (!root) throw new Error('the layered closure did not build');
  return root;
}

export interface TestCache {
  app: FastifyInstance;
  url: string;
  dataDir: string;
  close(): Promise<void>;
}

/** A listening app with just the cache plugin, on 127.0.0.1 and a free port. */
export async function startCache(opts: Partial<CacheOptions> & CacheStorageOptions = {}): Promise<TestCache> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'mxc-cache-')));
  const app = Fastify({ logger: false });
  await app.register(cachePlugin, { ...opts, dataDir });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  if (!addr || typeof addr === 'string') throw new Error('no port');
  return {
    app,
    url: `http://127.0.0.1:${addr.port}`,
    dataDir,
    close: async () => {
      await app.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The narinfo a cache serves for a store path, parsed. */
export async function servedInfo(url: string, path: string): Promise<NarInfo> {
  const r = await fetch(`${url}/cache/${path.slice(11, 43)}.narinfo`);
  if (r.status !== 200) throw new Error(`${url} answered ${r.status} for the narinfo of ${path}`);
  return parseNarInfo(await r.text());
}

/** Where in a cache directory's packs a narinfo (by hash part) or a NAR (by its name under nar/) lies. */
export async function packedAt(
  cacheDir: string,
  kind: 'narinfo' | 'nar',
  key: string,
): Promise<{ file: string; at: number; size: number }> {
  for (const name of await readdir(join(cacheDir, 'pack'))) {
    const file = join(cacheDir, 'pack', name);
    const index = await readPackIndex(file);
    const hit = (kind === 'nar' ? index?.nars : index?.narinfos)?.find(([k]) => k === key);
    if (hit) return { file, at: hit[1], size: hit[2] };
  }
  throw new Error(`no pack in ${cacheDir} holds the ${kind} ${key}`);
}

/**
 * Every published path read back through a fresh handle on the directory, checked whole: each NAR
 * there with its narinfo's FileHash and FileSize, each reference published too, each pack in `pack/`
 * whole. Returns the published paths.
 */
export async function publishedWhole(cacheDir: string): Promise<Set<string>> {
  const storage = new DirectoryStorage(cacheDir);
  try {
    return await checkPublishedWhole(storage, cacheDir);
  } finally {
    await storage.close(); // its open packs
  }
}

async function checkPublishedWhole(storage: DirectoryStorage, cacheDir: string): Promise<Set<string>> {
  const infos = await Promise.all(
    (await storage.listNarinfos()).map(async (hash) => parseNarInfo((await storage.getNarinfo(hash))!.text)),
  );
  const paths = new Set(infos.map((i) => i.storePath));
  for (const info of infos) {
    const nar = await storage.getNar(info.url.slice('nar/'.length));
    expect(nar, info.storePath).not.toBeNull();
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of nar!.stream as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    expect([info.storePath, bytes]).toEqual([info.storePath, info.fileSize]);
    expect(hash.digest().equals(parseSha256(info.fileHash)!), info.storePath).toBe(true);
    for (const ref of info.references) expect(paths.has(ref), `${info.storePath} → ${ref}`).toBe(true);
  }
  // Every pack in pack/ is whole (a pack appears only once synced, by rename).
  for (const name of await readdir(join(cacheDir, 'pack')))
    expect(await readPackIndex(join(cacheDir, 'pack', name)), name).not.toBeNull();
  return paths;
}

/**
 * The signing key coordinators on a PostgreSQL database share (kept there, not in the cache directory),
 * written to a key file, so that a cache-only app on their directory signs and checks with it too.
 */
export async function sharedKeyFile(databaseUrl: string, file: string): Promise<string> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ value: string }>(
      "SELECT value FROM mxc_settings WHERE name = 'cache_signing_key'",
    );
    if (!rows[0]) throw new Error('the database holds no cache signing key');
    await writeFile(file, rows[0].value, { mode: 0o600 });
    return file;
  } finally {
    await client.end();
  }
}

/** `nix-store --dump` of a path, in memory (test paths are small). */
export async function dumpNar(path: string): Promise<Buffer> {
  const { execa } = await import('execa');
  const r = await execa('nix-store', ['--dump', path], { encoding: 'buffer' });
  return Buffer.from(r.stdout);
}

/** Raw PUT of a body with the given headers; resolves with status and parsed JSON. */
export function rawUpload(
  url: string,
  headers: Record<string, string | number>,
  body: Buffer,
): ReturnType<typeof rawRequest> {
  return rawRequest('PUT', url, headers, body);
}

function rawRequest(
  method: string,
  url: string,
  headers: Record<string, string | number>,
  body: Buffer,
): Promise<{
  status: number;
  json: { error?: { code: string; message: string }; data?: Record<string, unknown> };
}> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: { 'content-length': body.length, ...headers } });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) });
        } catch {
          reject(new Error(`non-JSON answer ${res.statusCode}: ${text}`));
        }
      });
    });
    // A refused upload may be closed before the body is sent; the answer still arrives.
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE' && err.code !== 'ECONNRESET') reject(err);
    });
    Readable.from([body]).pipe(req);
  });
}

/**
 * Realises `path` into a fresh chroot store from the cache at `url`. Nix's own narinfo disk cache
 * (keyed by URL) is bypassed so one test's tampered or missing narinfo cannot leak into the next.
 */
export async function realiseFrom(
  url: string,
  publicKey: string,
  path: string,
  store: string,
): Promise<void> {
  await run('nix-store', [
    '--store',
    store,
    '--realise',
    path,
    '--option',
    'substituters',
    `${url}/cache`,
    '--option',
    'trusted-public-keys',
    publicKey,
    '--option',
    'require-sigs',
    'true',
    '--option',
    'narinfo-cache-positive-ttl',
    '0',
    '--option',
    'narinfo-cache-negative-ttl',
    '0',
  ]);
}

/** One NAR of a hand-made batch: its header (as spec/cache.ts NarBatchHeader) and its bytes. */
export interface BatchEntry {
  header: Record<string, unknown>;
  nar: Buffer;
}

/** A batch upload body: per entry a u32 big-endian header length, the JSON header, the NAR; then the end mark. */
export function batchBody(entries: BatchEntry[], end = true): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const json = Buffer.from(JSON.stringify(e.header));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(json.length);
    parts.push(len, json, e.nar);
  }
  if (end) parts.push(Buffer.alloc(4));
  return Buffer.concat(parts);
}

/** The header of a real path's NAR in a batch, from the local store's path info. */
export async function batchEntry(path: string): Promise<BatchEntry> {
  const { queryPathInfos } = await import('../../lib/path-info.js');
  const [info] = await queryPathInfos([path]);
  return {
    header: {
      path: info!.path.slice(11),
      nar_hash: info!.narHash,
      nar_size: info!.narSize,
      references: info!.references,
    },
    nar: await dumpNar(path),
  };
}

/**
 * batchEntry of many paths: their infos from one `nix path-info`, their NARs dumped a few at a time (a
 * process pair per path, all at once, took most of a 60 s test timeout on the loaded 2-core machine).
 */
export async function batchEntries(paths: readonly string[]): Promise<BatchEntry[]> {
  const { queryPathInfos } = await import('../../lib/path-info.js');
  const infos = new Map((await queryPathInfos([...paths])).map((i) => [i.path, i]));
  const out: BatchEntry[] = new Array(paths.length);
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < paths.length; i = next++) {
      const info = infos.get(paths[i]!);
      if (!info) throw new Error(`nix path-info did not describe ${paths[i]}`);
      out[i] = {
        header: {
          path: info.path.slice(11),
          nar_hash: info.narHash,
          nar_size: info.narSize,
          references: info.references,
        },
        nar: await dumpNar(info.path),
      };
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, paths.length) }, lane));
  return out;
}

/** Raw POST of a batch body; resolves with status and parsed JSON (like rawUpload). */
export function rawBatch(
  url: string,
  body: Buffer,
  headers: Record<string, string | number> = {},
): ReturnType<typeof rawUpload> {
  return rawRequest(
    'POST',
    `${url}/api/cache/nars`,
    { 'content-type': 'application/x-mxc-nar-batch', ...headers },
    body,
  );
}
