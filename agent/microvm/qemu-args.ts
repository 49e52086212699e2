/**
 * The QEMU command line for one microVM: `-M microvm` booting the uncompressed kernel directly,
 * the closure view and the work dir as two 9p shares, the serial console on stdio, and user-mode
 * networking with host port forwards when the workload has ports.
 */

export interface QemuArgsInput {
  accel: 'kvm' | 'tcg';
  kernel: string;
  initramfs: string;
  storeView: string;
  workDir: string;
  cpus: number;
  memoryMb: number;
  pidFile: string;
  network: boolean;
  ports: { hostPort: number; guestPort: number }[];
  /** Address the forwarded host ports listen on. */
  hostAddress: string;
}

/** Rejects characters QEMU's option parser would split on. */
function optValue(what: string, v: string): string {
  if (v.includes(','))
    throw new Error(
      `${what} ${JSON.stringify(v)} contains a comma, which QEMU options cannot carry; use another path`,
    );
  return v;
}

export function kernelCommandLine(accel: 'kvm' | 'tcg'): string {
  // cryptomgr.notests: the crypto self-tests cost ~0.4 s of emulated CPU at every boot under TCG
  // (a sixth of the boot) and test the same kernel build every time.
  const args = ['console=ttyS0', 'quiet', 'panic=-1', 'rdinit=/init', 'cryptomgr.notests'];
  // Under TCG, microvm hangs after "Marking TSC unstable" without a given TSC rate and loops-per-jiffy.
  // The emulated TSC follows the host clock, so the boot-time TSC watchdog and timer check only wait.
  if (accel === 'tcg') args.push('tsc_early_khz=2000000', 'lpj=8000000', 'tsc=reliable', 'no_timer_check');
  return args.join(' ');
}

export function qemuArgs(i: QemuArgsInput): string[] {
  const args = ['-M', 'microvm', '-accel', i.accel, '-cpu', i.accel === 'kvm' ? 'host' : 'max'];
  args.push('-m', String(i.memoryMb), '-smp', String(i.cpus));
  args.push('-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot');
  args.push('-pidfile', i.pidFile);
  args.push('-kernel', i.kernel, '-initrd', i.initramfs, '-append', kernelCommandLine(i.accel));
  args.push(
    '-fsdev',
    `local,id=store,path=${optValue('store view', i.storeView)},security_model=none,readonly=on`,
    '-device',
    'virtio-9p-device,fsdev=store,mount_tag=nixstore',
    '-fsdev',
    `local,id=work,path=${optValue('work dir', i.workDir)},security_model=none`,
    '-device',
    'virtio-9p-device,fsdev=work,mount_tag=work',
  );
  if (i.network) {
    const fwd = i.ports.map((p) => `,hostfwd=tcp:${i.hostAddress}:${p.hostPort}-:${p.guestPort}`).join('');
    args.push('-netdev', `user,id=net0${fwd}`, '-device', 'virtio-net-device,netdev=net0');
  }
  return args;
}
