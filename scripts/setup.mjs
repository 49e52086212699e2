#!/usr/bin/env node
// Set-up for `npm start` and `npm test` on a fresh machine, with no dependencies of its own:
// installs missing system packages (apt-get, as root), runs `npm ci` when node_modules is missing or
// stale, and compiles the TypeScript when sources changed. Prints what to install where it cannot.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const say = (s) => process.stderr.write(`[setup] ${s}\n`);

/** Runs a set-up step; on failure says which and stops, without a stack trace (the step printed why). */
function step(what, file, args) {
  try {
    execFileSync(file, args, { cwd: root, stdio: 'inherit' });
  } catch {
    say(`${what} failed (its output is above)`);
    process.exit(1);
  }
}

/** command (or file) → Debian package that provides it. */
const SYSTEM = [
  { need: 'nix-build', pkg: 'nix-bin', why: 'builds jobs and realises closures' },
  { need: 'bwrap', pkg: 'bubblewrap', why: 'sandboxed workloads' },
  { file: '/usr/bin/busybox', pkg: 'busybox-static', why: 'the store interpreter of job scripts' },
  { need: 'qemu-system-x86_64', pkg: 'qemu-system-x86', why: 'microVM workloads' },
  { need: 'xz', pkg: 'xz-utils', why: 'unpacking the microVM kernel' },
  { need: 'cpio', pkg: 'cpio', why: 'building the microVM initramfs' },
  { need: 'chromium', pkg: 'chromium', why: 'dashboard tests' },
];

const onPath = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const canApt = process.getuid?.() === 0 && onPath('apt-get');
const aptEnv = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };

/** Package lists that are missing or older than a day make installs and the kernel download fail. */
function aptListsStale() {
  const dir = '/var/lib/apt/lists';
  try {
    const lists = readdirSync(dir).filter((f) => f.endsWith('_Packages') || f.endsWith('_Packages.lz4'));
    if (lists.length === 0) return true;
    return Date.now() - Math.max(...lists.map((f) => statSync(join(dir, f)).mtimeMs)) > 86_400_000;
  } catch {
    return true;
  }
}

/** microVM tests download Debian's kernel package: its name must resolve from the package lists. */
function kernelResolvable() {
  const r = spawnSync('apt-cache', ['depends', 'linux-image-amd64'], { encoding: 'utf8' });
  return r.status === 0 && /Depends:\s*linux-image-\d/.test(r.stdout);
}
const missing = SYSTEM.filter((s) => (s.file ? !existsSync(s.file) : !onPath(s.need)));

if (missing.length > 0) {
  const pkgs = [...new Set(missing.map((m) => m.pkg))];
  if (canApt) {
    if (aptListsStale()) {
      say('refreshing the package lists (apt-get update)');
      spawnSync('apt-get', ['update'], { stdio: 'inherit', env: aptEnv });
    }
    say(`installing ${pkgs.join(' ')} with apt-get`);
    const env = aptEnv;
    const install = () =>
      spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { stdio: 'inherit', env })
        .status === 0;
    if (!install()) {
      spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
      if (!install()) {
        say(`apt-get could not install ${pkgs.join(' ')}; install them and run again`);
        process.exit(1);
      }
    }
  } else {
    say('missing system packages:');
    for (const m of missing) say(`  ${m.pkg.padEnd(16)} (${m.file ?? m.need}: ${m.why})`);
    say(`install them with: sudo apt-get install -y ${pkgs.join(' ')}`);
    process.exit(1);
  }
}

if (canApt && !kernelResolvable()) {
  say('refreshing the package lists so the microVM kernel package resolves (apt-get update)');
  spawnSync('apt-get', ['update'], { stdio: 'inherit', env: aptEnv });
}

// npm ci when node_modules is missing or was installed from another lock file.
const lock = join(root, 'package-lock.json');
const stamp = join(root, 'node_modules', '.mxc-lock-hash');
const lockHash = createHash('sha256').update(readFileSync(lock)).digest('hex');
if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== lockHash) {
  say('installing npm dependencies (npm ci)');
  step('npm ci', 'npm', ['ci', '--no-audit', '--no-fund']);
  writeFileSync(stamp, lockHash);
}

// Compile when any source is newer than the last build.
const SOURCES = ['spec', 'compiler', 'scheduler', 'agent', 'cli'];
const newest = (dir) => {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p));
    else if (e.name.endsWith('.ts') || e.name.endsWith('.sql') || e.name.endsWith('.json'))
      t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
};
const built = join(root, 'dist', '.built');
const srcTime = Math.max(
  ...SOURCES.map((d) => newest(join(root, d))),
  statSync(join(root, 'tsconfig.json')).mtimeMs,
);
if (!existsSync(built) || statSync(built).mtimeMs < srcTime) {
  say('compiling TypeScript');
  step('compiling TypeScript', process.execPath, [
    join(root, 'node_modules', 'typescript', 'bin', 'tsc'),
    '-p',
    'tsconfig.build.json',
  ]);
  writeFileSync(built, new Date().toISOString());
}
