#!/usr/bin/env node
// The `mxc` executable: runs the esbuild bundle (dist/bundle, made by `npm run build` and the set-up
// of `npm start` / `npm test`), or the plain tsc output when only that exists.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = [join(root, 'dist', 'bundle', 'mxc.mjs'), join(root, 'dist', 'cli', 'main.js')].find((f) =>
  existsSync(f),
);
if (!entry) {
  process.stderr.write(`mxc: not built yet; run \`npm run setup\` (or \`npm start\`) in ${root} first\n`);
  process.exit(1);
}
const { main } = await import(entry);
await main();
