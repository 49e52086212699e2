// Runs one compiled benchmark: `node bench/lib/launch.mjs dist/bench/bench/NAME.bench.js`. Imports it,
// calls its `main()`, and exits when it returns, so a handle left open cannot hang the run.
import { pathToFileURL } from 'node:url';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node bench/lib/launch.mjs dist/bench/bench/NAME.bench.js\n');
  process.exit(2);
}
const mod = await import(pathToFileURL(file).href);
if (typeof mod.main !== 'function') {
  process.stderr.write(`${file} exports no main(): a benchmark must export async function main()\n`);
  process.exit(2);
}
await mod.main();
process.exit(0);
