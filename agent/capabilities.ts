/** Detects what this machine offers: resources, os/arch, nix, bubblewrap, QEMU/KVM, cgroup v2. */
import { statfs } from 'node:fs/promises';
import os from 'node:os';
import { hasCommand } from '../lib/exec.js';
import { nixVersion } from '../lib/nix.js';
import type { Capabilities, NodeResources } from '../spec/messages.js';

export async function detectResources(
  dir: string,
  override: Partial<NodeResources> = {},
): Promise<NodeResources> {
  let disk = 0;
  try {
    const s = await statfs(dir);
    disk = Math.floor((s.bavail * s.bsize) / 1048576);
  } catch {
    disk = 0;
  }
  // 0 means "detect" (the seed's MXC_AGENT_CPU=0): a node offering nothing could never join.
  return {
    cpu: override.cpu || os.cpus().length,
    memory_mb: override.memory_mb || Math.floor(os.totalmem() / 1048576),
    disk_mb: override.disk_mb || disk,
  };
}

export async function detectCapabilities(opts: {
  attributes?: Record<string, string>;
  bubblewrap?: () => Promise<boolean>;
  hypervisor?: () => Promise<{ qemu: boolean; kvm: boolean }>;
  /** Whether task resource limits are enforced (cgroup v2 prepared by the daemon); default false. */
  cgroups?: boolean;
}): Promise<Capabilities> {
  const cgroups = opts.cgroups ?? false;
  const [nix, bwrap, hv] = await Promise.all([
    nixVersion(),
    opts.bubblewrap ? opts.bubblewrap() : hasCommand('bwrap', ['--version']),
    opts.hypervisor ? opts.hypervisor() : Promise.resolve({ qemu: false, kvm: false }),
  ]);
  const isolation: Capabilities['isolation'] = ['process'];
  if (bwrap) isolation.push('sandbox');
  if (hv.qemu) isolation.push('microvm');
  return {
    os: os.platform(),
    arch: os.arch(),
    nix,
    bubblewrap: bwrap,
    qemu: hv.qemu,
    kvm: hv.kvm,
    cgroups,
    isolation,
    attributes: opts.attributes ?? {},
  };
}
