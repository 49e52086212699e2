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
  // nix-bin's recommended package: the nixbld group and users root's builds run as, and /etc/nix/nix.conf.
  { file: '/etc/nix/nix.conf', pkg: 'nix-setup-systemd', why: "Nix's build users (nixbld) and nix.conf" },
  { need: 'bwrap', pkg: 'bubblewrap', why: 'sandboxed workloads' },
  { file: '/usr/bin/busybox', pkg: 'busybox-static', why: 'the store interpreter of job scripts' },
  { need: 'qemu-system-x86_64', pkg: 'qemu-system-x86', why: 'microVM workloads' },
  { need: 'xz', pkg: 'xz-utils', why: 'unpacking the microVM kernel' },
  { need: 'cpio', pkg: 'cpio', why: 'building the microVM initramfs' },
  { need: 'chromium', pkg: 'chromium', why: 'dashboard tests' },
  { need: 'openssl', pkg: 'openssl', why: 'the TLS test makes a self-signed certificate' },
  // The agent compiles its small task supervisor once (cc -static): gcc, and libc6-dev for the static libc.
  { need: 'cc', pkg: 'gcc', why: "compiles the agent's task supervisor" },
  {
    file: `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/libc.a`,
    pkg: 'libc6-dev',
    why: "the static libc of the agent's task supervisor",
  },
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
// `npm run bench` (setup.mjs --bench) also needs the anchors the benchmarks run side by side.
if (process.argv.includes('--bench')) {
  SYSTEM.push({ need: 'python3', pkg: 'python3', why: "the cache bench's anchor, python3 -m http.server" });
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

// Probe the system's Nix with a real build (sandboxed, as on NixOS): a missing nixbld group, a store
// that is not writable or a broken nix.conf shows here, with what to do, instead of in the first job.
{
  const expr =
    'let bb = builtins.path { path = /usr/bin; name = "busybox"; filter = p: t: baseNameOf p == "busybox"; }; ' +
    'in derivation { name = "mxc-nix-probe"; system = builtins.currentSystem; builder = "${bb}/busybox"; ' +
    'args = [ "sh" "-c" "echo ok > $out" ]; }';
  const r = spawnSync(
    'nix-build',
    ['--no-out-link', '--option', 'substituters', '', '--option', 'sandbox', 'true', '-E', expr],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) {
    const why = (r.stderr || r.error?.message || '').trim().split('\n').slice(-3).join('\n  ');
    say(`nix cannot build here:\n  ${why}`);
    if (/nixbld/.test(why))
      say('the build users are missing: apt-get install -y nix-setup-systemd (it creates the nixbld group)');
    else if (/Permission denied|read-only/i.test(why))
      say('the Nix store is not writable by this user: run as root, or use a Nix daemon (NIX_REMOTE=daemon)');
    else say('check /etc/nix/nix.conf and that `nix-build -E` works for this user');
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
// A user's own `npm ci` (the README's first step for some) leaves npm's hidden lock file, written after
// package-lock.json was last changed: that install is this lock file's, and is not done again (25 s).
const hidden = join(root, 'node_modules', '.package-lock.json');
if (!existsSync(stamp) && existsSync(hidden) && statSync(hidden).mtimeMs > statSync(lock).mtimeMs)
  writeFileSync(stamp, lockHash);
if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== lockHash) {
  say('installing npm dependencies (npm ci)');
  step('npm ci', 'npm', ['ci', '--no-audit', '--no-fund']);
  writeFileSync(stamp, lockHash);
}

// Compile when any source is newer than the last build.
const SOURCES = ['spec', 'lib', 'compiler', 'scheduler', 'agent', 'cli'];
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
  // The CLI runs from the esbuild bundle (one file, commands loaded lazily); dist/ keeps the tsc output.
  step('bundling the CLI', process.execPath, [join(root, 'scripts', 'bundle.mjs')]);
  writeFileSync(built, new Date().toISOString());
}
