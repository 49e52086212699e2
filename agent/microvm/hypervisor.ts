/**
 * Finds out how microVMs can run here: is QEMU installed, and is KVM really usable? Opening
 * /dev/kvm is not enough (a nested hypervisor may accept the open and then fail on MSRs or spin),
 * so KVM must also run a tiny guest: a 64 KiB BIOS whose reset vector writes to isa-debug-exit.
 */
import { constants } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withDir } from 'tmp-promise';
import { CommandError, hasCommand, run } from '../../lib/exec.js';

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
