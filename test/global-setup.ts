/** Before any test: the compiled CLI in dist/ must match the sources, since end-to-end tests run `bin/mxc.js`. */
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync(process.execPath, ['scripts/setup.mjs'], { stdio: 'inherit' });
}
