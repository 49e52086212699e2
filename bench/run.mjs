#!/usr/bin/env node
// The benchmark runner (`npm run bench [-- NAME…]`): compiles bench/ and the sources with
// bench/tsconfig.json into dist/bench, then runs each bench/NAME.bench.ts's `main()` in its own Node
// process (a fresh heap, and a bench that leaks a handle cannot hang the run) and prints a summary.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'bench');
const say = (s) => process.stdout.write(`${s}\n`);

const available = readdirSync(join(root, 'bench'))
  .filter((f) => f.endsWith('.bench.ts'))
  .map((f) => f.slice(0, -'.bench.ts'.length))
  .sort();

const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  say(`usage: npm run bench [-- NAME…]   (NAME: ${available.join(', ')}; default: all)`);
  say('scale and options come from MXC_BENCH_* variables: see bench/README.md');
  process.exit(0);
}
const unknown = args.filter((a) => !available.includes(a));
if (unknown.length) {
  process.stderr.write(`unknown benchmark ${unknown.join(', ')}: choose from ${available.join(', ')}\n`);
  process.exit(2);
}
const chosen = args.length ? args : available;

// Compile. Type errors elsewhere in the tree should not stop a benchmark whose files were emitted.
const t0 = Date.now();
const tsc = spawnSync(
  process.execPath,
  [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'bench', 'tsconfig.json')],
  { cwd: root, encoding: 'utf8' },
);
if (tsc.status !== 0) {
  process.stderr.write(tsc.stdout + tsc.stderr);
  process.stderr.write('[bench] tsc reported errors (above); running what was emitted\n');
}
say(`[bench] compiled into dist/bench in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

const nofile = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).stdout.trim();
say(`[bench] open-file limit (ulimit -n): ${nofile}; node ${process.version}`);

/** The machine's busy and total CPU ticks so far, over all cores (/proc/stat's first line). */
function cpuTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3] + (f[4] ?? 0); // idle + iowait
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/**
 * Waits until the machine is quiet before a benchmark: what the one before left running (PostgreSQL
 * dropping its database and vacuuming, the kernel writing back its files, a coordinator shutting down)
 * took up to a second core in the first seconds of the next one, whose figures then came out as the
 * machine's, not the code's. Quiet: under SETTLE_BUSY of all cores over a second; at most SETTLE_MAX_MS.
 */
const SETTLE_BUSY = 0.1;
const SETTLE_MAX_MS = 30_000;
function settle() {
  const started = Date.now();
  let busy = 1;
  while (Date.now() - started < SETTLE_MAX_MS) {
    const a = cpuTicks();
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000); // a second's CPU ticks
    const b = cpuTicks();
    busy = (b.busy - a.busy) / Math.max(1, b.total - a.total);
    if (busy < SETTLE_BUSY) break;
  }
  const waited = ((Date.now() - started) / 1000).toFixed(1);
  const pct = (busy * 100).toFixed(0);
  say(
    busy < SETTLE_BUSY
      ? `[bench] machine quiet (${pct}% busy over the last second) after ${waited} s`
      : `[bench] the machine stayed busy (${pct}% over the last second) for ${waited} s: figures below are pessimistic`,
  );
}

const results = [];
for (const name of chosen) {
  const file = join(out, 'bench', `${name}.bench.js`);
  if (!existsSync(file)) {
    results.push({ name, ok: false, seconds: 0, why: `${file} was not emitted (see the tsc errors above)` });
    continue;
  }
  rmSync(join(out, 'results', `${name}.json`), { force: true });
  settle();
  const started = Date.now();
  const r = spawnSync(process.execPath, [join(root, 'bench', 'lib', 'launch.mjs'), file], {
    cwd: root,
    stdio: 'inherit',
    env: process.env,
  });
  const seconds = (Date.now() - started) / 1000;
  results.push({
    name,
    ok: r.status === 0,
    seconds,
    why: r.status === 0 ? '' : `exit ${r.status ?? r.signal}`,
  });
}

say('\n=== summary ===');
for (const r of results) {
  say(`${r.ok ? 'ok  ' : 'FAIL'} ${r.name.padEnd(10)} ${r.seconds.toFixed(0).padStart(5)} s  ${r.why}`);
  const json = join(out, 'results', `${r.name}.json`);
  if (!r.ok || !existsSync(json)) continue;
  for (const f of JSON.parse(readFileSync(json, 'utf8')).figures ?? []) {
    if (!f.anchor) continue;
    const ratio = f.value / f.anchor.value;
    say(`       ${f.name.trim()}: ${ratio.toFixed(2)}× ${f.anchor.label}`);
  }
}
process.exit(results.every((r) => r.ok) ? 0 : 1);
