/**
 * Finds out how microVMs can run here: is QEMU installed, and is KVM really usable? Opening
 * /dev/kvm is not enough (a nested hypervisor may accept the open and then fail on MSRs or spin),
 * so KVM must also run a tiny guest: a 64 KiB BIOS whose reset vector writes to isa-debug-exit.
 * Even that is not enough on some nested hypervisors: the real-mode BIOS runs, and a real kernel
 * then spins without printing a byte. So before the first microVM boots with KVM, the kernel it
 * will boot must print its banner under KVM (`kvmBootsKernel`); otherwise microVMs use TCG.
 */
import { constants } from 'node:fs';
import { open, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { CommandError, hasCommand, run, runStreaming } from '../../lib/exec.js';
import { lineSplitter } from '../../lib/line-reader.js';

export const QEMU = 'qemu-system-x86_64';

export interface Hypervisor {
  qemu: boolean;
  kvm: boolean;
  accel: 'kvm' | 'tcg' | null;
}

let cached: Promise<Hypervisor> | null = null;

/** Detects QEMU and usable KVM once per process (the probe costs ~0.1 s). */
export function detectHypervisor(): Promise<Hypervisor> {
  cached ??= detect();
  return cached;
}

async function detect(): Promise<Hypervisor> {
  const qemu = await hasCommand(QEMU);
  if (!qemu) return { qemu: false, kvm: false, accel: null };
  const kvm = (await canOpenKvm()) && (await kvmRunsGuest());
  return { qemu, kvm, accel: kvm ? 'kvm' : 'tcg' };
}

const kernelVerdicts = new Map<string, Promise<boolean>>();

/** Time a kernel gets under KVM to print its banner (it takes ~0.1 s where KVM works). */
const KERNEL_PROBE_MS = 8_000;

/**
 * True when `kernel` (an uncompressed vmlinux) prints "Linux version" on its serial console under
 * KVM. It boots with no initramfs, so a working kernel panics at once and QEMU exits (`-no-reboot`);
 * a spinning one is killed after KERNEL_PROBE_MS. Asked once per kernel per process.
 */
export function kvmBootsKernel(kernel: string): Promise<boolean> {
  let verdict = kernelVerdicts.get(kernel);
  if (!verdict) {
    verdict = rememberedVerdict(kernel);
    kernelVerdicts.set(kernel, verdict);
  }
  return verdict;
}

/**
 * The verdict is kept beside the kernel for the rest of this boot of the host (keyed by its boot
 * id), so every agent process and test on the machine does not pay the probe's timeout again.
 */
async function rememberedVerdict(kernel: string): Promise<boolean> {
  const bootId = await hostBootId();
  const kept = await keptFor(kernel, bootId);
  if (kept !== undefined) return kept;
  const kvm = await probeKernel(kernel);
  if (bootId) {
    const file = verdictFile(kernel);
    const tmp = `${file}.${process.pid}.tmp`;
    // A read-only asset dir only costs the next process another probe.
    await writeFile(tmp, JSON.stringify({ bootId, kvm }))
      .then(() => rename(tmp, file))
      .catch(() => {});
  }
  return kvm;
}

const verdictFile = (kernel: string) => `${kernel}.kvm-verdict.json`;
const hostBootId = async () =>
  (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '')).trim();

/**
 * The verdict some process already reached for `kernel` during this boot of the host, without
 * probing (undefined when none was kept): what the node's capabilities report at start.
 */
export async function keptKvmVerdict(kernel: string): Promise<boolean | undefined> {
  return keptFor(kernel, await hostBootId());
}

/** The verdict kept for `kernel` during the boot `bootId` (none without a boot id). */
async function keptFor(kernel: string, bootId: string): Promise<boolean | undefined> {
  if (!bootId) return undefined;
  try {
    const kept = JSON.parse(await readFile(verdictFile(kernel), 'utf8')) as {
      bootId?: unknown;
      kvm?: unknown;
    };
    return kept.bootId === bootId && typeof kept.kvm === 'boolean' ? kept.kvm : undefined;
  } catch {
    return undefined; // none kept yet (or unreadable)
  }
}

async function probeKernel(kernel: string): Promise<boolean> {
  const args = ['-M', 'microvm', '-accel', 'kvm', '-cpu', 'host', '-m', '64', '-nodefaults'];
  args.push('-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot');
  args.push('-kernel', kernel, '-append', 'console=ttyS0 panic=-1');
  const qemu = await runStreaming(QEMU, args, { timeoutMs: KERNEL_PROBE_MS });
  let printed = false;
  const lines = lineSplitter((line) => {
    if (printed || !line.includes('Linux version')) return;
    printed = true;
    qemu.kill(); // the banner is the answer; no need to wait for the panic
  });
  qemu.stdout.on('data', (chunk: Buffer) => lines.write(chunk));
  await qemu.done.catch(() => {}); // killed, timed out or exited after the panic: all fine here
  return printed;
}

async function canOpenKvm(): Promise<boolean> {
  try {
    const fh = await open('/dev/kvm', constants.O_RDWR);
    await fh.close();
    return true;
  } catch {
    return false;
  }
}

/** A BIOS image whose reset vector (last 16 bytes at 0xFFF0) does `mov al,1; out 0xf4,al; hlt`. */
function probeBios(): Buffer {
  const bios = Buffer.alloc(64 * 1024);
  Buffer.from([0xb0, 0x01, 0xe6, 0xf4, 0xf4]).copy(bios, 0xfff0);
  return bios;
}

/** isa-debug-exit makes QEMU exit with (1 << 1) | 1 = 3 once the guest's first instruction ran. */
async function kvmRunsGuest(): Promise<boolean> {
  return withDir(
    async ({ path: dir }) => {
      const bios = join(dir, 'probe.bin');
      await writeFile(bios, probeBios());
      // The same -cpu as real VMs use: "host" is what fails on nested hypervisors that reject MSRs.
      const args = ['-accel', 'kvm', '-cpu', 'host', '-M', 'microvm', '-bios', bios, '-m', '16'];
      args.push(
        '-device',
        'isa-debug-exit,iobase=0xf4,iosize=4',
        '-nodefaults',
        '-no-user-config',
        '-display',
        'none',
      );
      try {
        await run(QEMU, args, { timeoutMs: 5_000 });
        return false; // exit 0 means the probe never ran
      } catch (e) {
        return e instanceof CommandError && e.exitCode === 3;
      }
    },
    { prefix: 'mxc-kvm-probe-', unsafeCleanup: true },
  );
}
