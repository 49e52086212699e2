#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS MXC_NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} node
// The `mxc` executable: runs the esbuild bundle (dist/bundle, made by `npm run build` and the set-up of
// `npm start` / `npm test`), or the plain tsc output when only that exists. CommonJS (bin/package.json):
// Node starts a CommonJS entry ~15 ms faster than an ES module one, and only CommonJS can be compiled
// with a V8 code cache on Node 20. The bundle's files are compiled here with their cache, kept in
// $MXC_CODE_CACHE_DIR (default ~/.cache/mxc/v8-<node version>; "off" turns it off): the first run
// of a command writes it on exit, later runs skip most parsing and compiling.
'use strict';

// The shebang starts Node without NODE_EXTRA_CA_CERTS, which Node 20 would read (45 ms here) before
// any command runs: bin/deferred-ca.js puts it back for child processes and reads the file at the
// first TLS context instead. Started without the shebang (`node bin/mxc.js`), nothing here runs.
if (process.env.MXC_NODE_EXTRA_CA_CERTS !== undefined) {
  const deferredCa = require('./deferred-ca.js');
  const file = deferredCa.take();
  if (file) deferredCa.trust(file);
}

// A coordinator's cache writes and syncs a push's files on libuv's thread pool, whose 4 threads wait
// on the disk in turn: with 16, a 301-path push took ~390 ms instead of ~460 (A/B at chrt -f 1). Set
// before anything uses the pool (libuv reads it then); UV_THREADPOOL_SIZE from the environment wins.
// bench/cache.bench.ts forks its cache server with the same.
if (['coordinator', 'up', 'serve'].includes(process.argv[2]) && !process.env.UV_THREADPOOL_SIZE) {
  process.env.UV_THREADPOOL_SIZE = '16';
}

// `mxc build` starts its nix-build first thing (bin/build-early.js says why; its command line, read
// there, spares the CLI commander), `mxc push` its `nix path-info` (bin/push-early.js), `mxc cluster
// status` its GET (bin/client-early.js).
const build = process.argv[2] === 'build' ? require('./build-early.js').start(process.argv) : undefined;
const early = {
  nixBuild: build?.nixBuild,
  build: build?.line,
  pathInfo: process.argv[2] === 'push' ? require('./push-early.js').start(process.argv) : undefined,
  request: process.argv[2] === 'cluster' ? require('./client-early.js').start(process.argv) : undefined,
};

const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const root = path.join(__dirname, '..');
const bundleDir = path.join(root, 'dist', 'bundle');

/** The code-cache folder when it is usable: ours alone (no one else may plant code in it), else null. */
function cacheDir() {
  const env = process.env.MXC_CODE_CACHE_DIR;
  if (env === 'off') return null;
  // $HOME first, as os.homedir() does, without loading node:os.
  const home = process.env.HOME || require('node:os').homedir();
  const base = process.env.XDG_CACHE_HOME || path.join(home, '.cache');
  const dir = env || path.join(base, 'mxc', `v8-${process.version}-${process.arch}`);
  try {
    const st = fs.statSync(dir);
    const mine = typeof process.getuid !== 'function' || st.uid === process.getuid();
    return st.isDirectory() && mine && (st.mode & 0o022) === 0 ? dir : null;
  } catch {
    return dir; // made on the first write
  }
}

/** FNV-1a of a string, hex: names a cache entry after its bundle file's path, then its size and mtime. */
function fnv(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16);
}

const cache = cacheDir();
const modules = new Map();
const toWrite = [];

/** Loads one bundle file (CommonJS) with its code cache; its require loads sibling .cjs files the same way. */
function load(file) {
  const known = modules.get(file);
  if (known) return known.exports;
  const source = fs.readFileSync(file, 'utf8');
  let cacheFile = null;
  let cachedData;
  if (cache) {
    const st = fs.statSync(file);
    cacheFile = path.join(
      cache,
      `${path.basename(file)}-${fnv(file)}-${fnv(`${st.size}\0${st.mtimeMs}`)}.v8`,
    );
    try {
      cachedData = fs.readFileSync(cacheFile);
    } catch {}
  }
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: file,
    cachedData,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  if (cacheFile && (!cachedData || script.cachedDataRejected)) toWrite.push({ script, cacheFile });
  const nodeRequire = createRequire(file);
  const dir = path.dirname(file);
  const localRequire = (id) =>
    id.startsWith('./') && id.endsWith('.cjs') ? load(path.join(dir, id)) : nodeRequire(id);
  localRequire.resolve = nodeRequire.resolve;
  localRequire.cache = nodeRequire.cache;
  const mod = { exports: {}, id: file, filename: file, loaded: false, children: [], paths: [] };
  modules.set(file, mod);
  script.runInThisContext()(mod.exports, localRequire, mod, file, dir);
  mod.loaded = true;
  return mod.exports;
}

/** On exit, the code of what ran (functions compiled by then included) is written for the next run. */
function writeCodeCache() {
  if (toWrite.length === 0) return;
  try {
    fs.mkdirSync(cache, { recursive: true, mode: 0o700 });
    for (const { script, cacheFile } of toWrite) {
      // An earlier build of the same file leaves its entry behind: one entry per file.
      const prefix = path.basename(cacheFile).slice(0, path.basename(cacheFile).lastIndexOf('-') + 1);
      for (const old of fs.readdirSync(cache))
        if (old.startsWith(prefix)) fs.rmSync(path.join(cache, old), { force: true });
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, script.createCachedData(), { mode: 0o600 });
      fs.renameSync(tmp, cacheFile);
    }
  } catch {
    // A read-only home or a full disk: the next run compiles again, nothing else changes.
  }
}

const entry = path.join(bundleDir, 'mxc.cjs');
if (fs.existsSync(entry)) {
  process.on('exit', writeCodeCache);
  const run = () => load(entry).main(process.argv, early);
  // An early request goes out in the event loop: let it (bin/client-early.js), then load.
  if (early.request) early.request.sent.then(run);
  else run();
} else {
  early.nixBuild?.kill();
  early.pathInfo?.kill();
  early.request?.abort();
  const tsc = path.join(root, 'dist', 'cli', 'main.js');
  if (!fs.existsSync(tsc)) {
    process.stderr.write(`mxc: not built yet; run \`npm run setup\` (or \`npm start\`) in ${root} first\n`);
    process.exit(1);
  }
  import(require('node:url').pathToFileURL(tsc).href).then((m) => m.main());
}
