#!/usr/bin/env node
// Makes a self-contained release of mxc in a folder (default dist/release/mxc): the package's
// shipped files (package.json "files": bin, the esbuild bundle, migrations, dashboard assets,
// nixlib, examples) plus node_modules holding only what the bundle leaves external (PGlite and pino,
// which load files beside their modules) and their own dependencies, copied from this checkout's
// node_modules. A host then needs Node 20 and nothing else: `node RELEASE/bin/mxc.js up`.
// Usage: node scripts/release.mjs [OUT_DIR]   (run `npm run build` first; `npm run release` does both)
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUNDLE_EXTERNAL } from './bundle-external.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = resolve(process.argv[2] ?? join(root, 'dist', 'release', 'mxc'));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

if (!existsSync(join(root, 'dist', 'bundle', 'mxc.cjs'))) {
  process.stderr.write('[release] dist/bundle is missing: run `npm run build` first\n');
  process.exit(1);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const entry of pkg.files) cpSync(join(root, entry), join(out, entry), { recursive: true });

/** The package directory of `name` as Node would find it from `fromDir` (nested node_modules first). */
function locate(name, fromDir) {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dir === root || dirname(dir) === dir) return null;
  }
}

// Copy the external packages and, transitively, their dependencies (optional ones when installed).
const copied = new Set();
const queue = BUNDLE_EXTERNAL.map((name) => ({ name, from: root, optional: true }));
const runtime = {};
while (queue.length > 0) {
  const { name, from, optional } = queue.shift();
  const dir = locate(name, from);
  if (!dir) {
    if (optional) continue;
    process.stderr.write(`[release] ${name} (needed from ${from}) is not installed: run npm ci\n`);
    process.exit(1);
  }
  if (copied.has(dir)) continue;
  copied.add(dir);
  const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  if (from === root) runtime[name] = meta.version;
  cpSync(dir, join(out, dir.slice(root.length + 1)), { recursive: true });
  for (const dep of Object.keys(meta.dependencies ?? {}))
    queue.push({ name: dep, from: dir, optional: false });
  for (const dep of Object.keys(meta.optionalDependencies ?? {}))
    queue.push({ name: dep, from: dir, optional: true });
}

writeFileSync(
  join(out, 'package.json'),
  `${JSON.stringify(
    {
      name: pkg.name,
      version: pkg.version,
      description: pkg.description,
      type: 'module',
      license: pkg.license,
      engines: pkg.engines,
      bin: pkg.bin,
      dependencies: runtime,
    },
    null,
    2,
  )}\n`,
);
process.stderr.write(`[release] ${out}: ${copied.size} runtime package(s) beside the bundle\n`);
