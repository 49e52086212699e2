#!/usr/bin/env node
// The `mxc` executable: runs the compiled CLI (npm run build, done by `npm start` / `npm test` set-up).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'cli', 'main.js');
if (!existsSync(entry)) {
  process.stderr.write(`mxc: not built yet; run \`npm run setup\` (or \`npm start\`) in ${root} first\n`);
  process.exit(1);
}
const { main } = await import(entry);
await main();
