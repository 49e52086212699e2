/** Detects what this machine offers: resources, os/arch, nix, bubblewrap, QEMU/KVM, cgroup v2. */
import { statfs } from 'node:fs/promises';
import os from 'node:os';
import { hasCommand } from '../lib/exec.js';
import { nixVersion } from '../lib/nix.js';
import { MAX_CPU_CORES, MAX_RESOURCE_MB } from '../spec/job.js';
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
  // 0 means "detect" (the seed's MXC_AGENT_CPU=0): a node offering nothing could never join. What is
  // detected is offered up to what a hello may say (a network file system may report exabytes free).
  return {
    cpu: override.cpu || Math.min(os.cpus().length, MAX_CPU_CORES),
    memory_mb: override.memory_mb || Math.min(Math.floor(os.totalmem() / 1048576), MAX_RESOURCE_MB),
    disk_mb: override.disk_mb || Math.min(disk, MAX_RESOURCE_MB),
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
