/**
 * Builds and caches what every microVM boots: the uncompressed kernel and the base initramfs
 * (static busybox, guest init, virtio/9p modules). Built once per cache dir; each step writes into
 * a private temp dir and renames into place, so concurrent preparers never see half a file.
 */
import { access, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { buildCpio, type CpioEntry } from './cpio.js';
import { GUEST_INIT, GUEST_INIT_VERSION } from './guest-init.js';
import { BASE_MODULES, collectModules, NET_MODULES } from './kernel-modules.js';
import { downloadPackage, extractVmlinux, resolveKernelPackage, unpackKernelDeb } from './kernel-package.js';

export interface MicroVmAssets {
  /** Uncompressed ELF vmlinux. */
  kernel: string;
  /** Base initramfs (uncompressed newc cpio); each VM appends its own small archive to it. */
  initramfs: string;
  kernelRelease: string;
}

export interface PrepareOptions {
  onProgress?: (msg: string) => void;
  /** A linux-image-*-amd64 .deb to use instead of downloading the current one with apt. */
  kernelDeb?: string;
  /** A statically linked busybox (Debian's busybox-static). */
  busybox?: string;
}

const ASSETS_FILE = 'assets.json';
const inFlight = new Map<string, Promise<MicroVmAssets>>();

/** Downloads/extracts the kernel and builds the initramfs once, cached under cacheDir. */
export function prepareMicroVmAssets(cacheDir: string, opts: PrepareOptions = {}): Promise<MicroVmAssets> {
  const key = `${cacheDir}\0${opts.kernelDeb ?? ''}`;
  let p = inFlight.get(key);
  if (!p) {
    p = prepare(cacheDir, opts).finally(() => inFlight.delete(key));
    inFlight.set(key, p);
  }
  return p;
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** The assets already prepared in cacheDir (null when they are not), without preparing anything. */
export async function readCached(cacheDir: string): Promise<MicroVmAssets | null> {
  try {
    const a = JSON.parse(await readFile(join(cacheDir, ASSETS_FILE), 'utf8')) as MicroVmAssets & {
      init?: number;
    };
    if (a.init !== GUEST_INIT_VERSION) return null;
    if (!(await exists(a.kernel)) || !(await exists(a.initramfs))) return null;
    return { kernel: a.kernel, initramfs: a.initramfs, kernelRelease: a.kernelRelease };
  } catch {
    return null;
  }
}

/** Writes a file by rename so readers see the old or the new content, never a torn one. */
async function writeAtomic(path: string, data: Buffer | string): Promise<void> {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

/** Renames a finished temp dir into place; when another preparer won the race, keeps theirs. */
async function publishDir(tmp: string, final: string): Promise<void> {
  try {
    await rename(tmp, final);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
    await rm(tmp, { recursive: true, force: true });
  }
}

async function prepare(cacheDir: string, opts: PrepareOptions): Promise<MicroVmAssets> {
  const progress = opts.onProgress ?? (() => {});
  const cached = await readCached(cacheDir);
  if (cached) return cached;
  await mkdir(cacheDir, { recursive: true });

  const kernelDir = await prepareKernel(cacheDir, opts.kernelDeb, progress);
  const release = (await readFile(join(kernelDir, 'release'), 'utf8')).trim();

  const initramfs = join(cacheDir, `initramfs-${release}-v${GUEST_INIT_VERSION}.cpio`);
  if (!(await exists(initramfs))) {
    progress('building the microVM initramfs');
    await writeAtomic(initramfs, await buildBaseInitramfs(kernelDir, opts.busybox ?? '/bin/busybox'));
  }
  const assets: MicroVmAssets = { kernel: join(kernelDir, 'vmlinux'), initramfs, kernelRelease: release };
  await writeAtomic(
    join(cacheDir, ASSETS_FILE),
    JSON.stringify({ ...assets, init: GUEST_INIT_VERSION }, null, 2),
  );
  return assets;
}

/** kernel-<release>/ with vmlinux, modules/*.ko, order.base, order.net and release. */
async function prepareKernel(
  cacheDir: string,
  kernelDeb: string | undefined,
  progress: (m: string) => void,
): Promise<string> {
  let pkg: string | null = null;
  if (!kernelDeb) {
    pkg = await resolveKernelPackage();
    const release = pkg.replace(/^linux-image-/, '');
    const dir = join(cacheDir, `kernel-${release}`);
    if (await exists(join(dir, 'release'))) return dir;
  }
  return withDir(
    async ({ path: tmp }) => {
      let deb = kernelDeb;
      if (!deb) {
        progress(`downloading ${pkg}`);
        deb = await downloadPackage(pkg!, join(tmp, 'deb'));
      }
      progress(`unpacking ${deb}`);
      const unpacked = await unpackKernelDeb(deb, join(tmp, 'unpacked'));
      const out = join(tmp, 'out');
      await mkdir(join(out, 'modules'), { recursive: true });
      progress(`extracting vmlinux ${unpacked.release}`);
      await extractVmlinux(unpacked.vmlinuz, join(out, 'vmlinux'));
      const copied = new Set<string>();
      const base = await collectModules(
        unpacked.root,
        unpacked.release,
        BASE_MODULES,
        join(out, 'modules'),
        copied,
      );
      const net = (
        await collectModules(unpacked.root, unpacked.release, NET_MODULES, join(out, 'modules'), copied)
      ).filter((m) => !base.includes(m));
      await writeFile(join(out, 'order.base'), `${base.join('\n')}\n`);
      await writeFile(join(out, 'order.net'), `${net.join('\n')}\n`);
      await writeFile(join(out, 'release'), `${unpacked.release}\n`);
      const dir = join(cacheDir, `kernel-${unpacked.release}`);
      await publishDir(out, dir);
      return dir;
    },
    { tmpdir: cacheDir, prefix: '.tmp-kernel-', unsafeCleanup: true },
  );
}

/** True when an ELF file has no PT_INTERP, i.e. needs no dynamic loader in the guest. */
export function isStaticElf(elf: Buffer): boolean {
  if (elf.length < 64 || elf.toString('latin1', 0, 4) !== '\x7fELF' || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    if (elf.readUInt32LE(phoff + i * phentsize) === 3) return false;
  }
  return true;
}

async function buildBaseInitramfs(kernelDir: string, busyboxPath: string): Promise<Buffer> {
  let busybox: Buffer;
  try {
    busybox = await readFile(busyboxPath);
  } catch (e) {
    throw new Error(`cannot read ${busyboxPath}; install busybox-static (apt-get install busybox-static)`, {
      cause: e,
    });
  }
  if (!isStaticElf(busybox)) {
    throw new Error(
      `${busyboxPath} is not a static 64-bit ELF; the guest has no libc: install busybox-static`,
    );
  }
  const order = (f: string) =>
    readFile(join(kernelDir, f), 'utf8').then((s) => s.split('\n').filter(Boolean));
  const modules = [...new Set([...(await order('order.base')), ...(await order('order.net'))])];
  const entries: CpioEntry[] = [
    { kind: 'dir', path: 'bin' },
    { kind: 'dir', path: 'dev' },
    { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
    { kind: 'chardev', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { kind: 'dir', path: 'lib' },
    { kind: 'dir', path: 'lib/modules' },
    { kind: 'dir', path: 'mxc' },
    { kind: 'dir', path: 'mxc/proc' },
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { kind: 'symlink', path: 'bin/sh', target: 'busybox' },
    { kind: 'file', path: 'init', data: GUEST_INIT, mode: 0o755 },
    { kind: 'file', path: 'lib/modules/order.base', data: await readFile(join(kernelDir, 'order.base')) },
    { kind: 'file', path: 'lib/modules/order.net', data: await readFile(join(kernelDir, 'order.net')) },
  ];
  for (const m of modules) {
    entries.push({
      kind: 'file',
      path: `lib/modules/${m}.ko`,
      data: await readFile(join(kernelDir, 'modules', `${m}.ko`)),
    });
  }
  return buildCpio(entries);
}
