/**
 * Gets a bootable kernel for microVMs from Debian's generic kernel package: resolves the current
 * version, downloads the .deb with apt, unpacks it, and extracts the uncompressed vmlinux (booting
 * a bzImage under TCG spends ~5 s decompressing) and the virtio/9p modules the guest needs.
 */
import { copyFile, mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../lib/exec.js';

/** xz stream magic: the bzImage carries its payload as one xz stream after the setup code. */
const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/** The versioned package that the `linux-image-amd64` metapackage currently points at. */
export async function resolveKernelPackage(): Promise<string> {
  let stdout: string;
  try {
    ({ stdout } = await run('apt-cache', ['depends', 'linux-image-amd64'], { timeoutMs: 60_000 }));
  } catch (e) {
    throw new Error(
      'cannot find the Debian kernel package (apt-cache depends linux-image-amd64 failed); run `apt-get update`, or pass kernelDeb with a downloaded linux-image-*-amd64 .deb',
      { cause: e },
    );
  }
  const m = /Depends:\s*(linux-image-[0-9][^\s]*-amd64)\b/.exec(stdout);
  if (!m) {
    throw new Error(
      `apt-cache depends linux-image-amd64 named no versioned kernel package:\n${stdout.trim()}`,
    );
  }
  return m[1]!;
}

/** `apt-get download PKG` into dir; returns the .deb's path. */
export async function downloadPackage(pkg: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  try {
    await run('apt-get', ['download', pkg], { cwd: dir, timeoutMs: 15 * 60_000 });
  } catch (e) {
    throw new Error(`could not download ${pkg} with apt-get; check the Debian mirror is reachable`, {
      cause: e,
    });
  }
  const deb = (await readdir(dir)).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${dir}`);
  return join(dir, deb);
}

export interface UnpackedKernel {
  release: string;
  /** Root of the unpacked package (holds lib/modules/<release>/kernel/...). */
  root: string;
  vmlinuz: string;
}

/** `dpkg-deb -x` the package and find its kernel release and image. */
export async function unpackKernelDeb(deb: string, dir: string): Promise<UnpackedKernel> {
  await run('dpkg-deb', ['-x', deb, dir], { timeoutMs: 10 * 60_000 });
  const images = (await readdir(join(dir, 'boot'))).filter((f) => f.startsWith('vmlinuz-'));
  if (images.length !== 1) {
    throw new Error(
      `${deb} should hold exactly one boot/vmlinuz-*, found ${images.length}; is it a linux-image package?`,
    );
  }
  const release = images[0]!.slice('vmlinuz-'.length);
  return { release, root: dir, vmlinuz: join(dir, 'boot', images[0]!) };
}

/** Decompresses the xz payload of a bzImage into an ELF vmlinux that QEMU boots directly. */
export async function extractVmlinux(vmlinuz: string, out: string): Promise<void> {
  const image = await readFile(vmlinuz);
  const at = image.indexOf(XZ_MAGIC);
  if (at < 0) {
    throw new Error(`${vmlinuz} has no xz payload; only xz-compressed kernels (Debian's) are supported`);
  }
  // Trailing bytes after the stream are not xz: --single-stream stops there instead of failing.
  await writeFile(`${out}.xz`, image.subarray(at));
  await run('xz', ['-d', '-f', '--single-stream', `${out}.xz`], { timeoutMs: 5 * 60_000 });
  const head = Buffer.alloc(4);
  const fh = await open(out, 'r');
  try {
    await fh.read(head, 0, 4, 0);
  } finally {
    await fh.close();
  }
  if (head.toString('latin1') !== '\x7fELF') {
    throw new Error(`the xz payload of ${vmlinuz} is not an ELF vmlinux`);
  }
}

/** Copies one module (decompressing .ko.xz) to dest, which must end in .ko. */
export async function copyModule(src: string, dest: string): Promise<void> {
  if (src.endsWith('.ko.xz')) {
    await copyFile(src, `${dest}.xz`);
    await run('xz', ['-d', '-f', `${dest}.xz`], { timeoutMs: 60_000 });
  } else {
    await copyFile(src, dest);
  }
}
