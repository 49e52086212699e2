#!/usr/bin/env node
// Bundles the CLI and daemons with esbuild, straight from the TypeScript sources, into dist/bundle:
// the entry mxc.mjs (commander and the command table) and chunks that each command loads when it
// runs, so `mxc --version` loads 70 kB and `mxc build` never loads fastify or the agent. The files
// read at run time stay in the package's own layout (migrations, dashboard assets, job.schema.json,
// nixlib, examples), found from the package root as in development. PGlite (wasm and data files
// beside its module) and pino (transport workers loaded by path) load from node_modules; optional
// native add-ons are skipped.
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { BUNDLE_EXTERNAL } from './bundle-external.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// Chunk names carry content hashes: start empty so old chunks do not pile up.
rmSync(join(root, 'dist', 'bundle'), { recursive: true, force: true });
const result = await build({
  entryPoints: [join(root, 'cli', 'main.ts')],
  outdir: join(root, 'dist', 'bundle'),
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  entryNames: 'mxc',
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  external: BUNDLE_EXTERNAL,
  // Bundled CommonJS dependencies call require() for Node built-ins.
  banner: {
    js: "import { createRequire as __mxcRequire } from 'node:module'; const require = __mxcRequire(import.meta.url);",
  },
  // Less to parse at every start; names kept for error messages and stack traces.
  minify: true,
  keepNames: true,
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
});
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
process.stderr.write(`[bundle] dist/bundle ${(bytes / 1048576).toFixed(2)} MiB\n`);
