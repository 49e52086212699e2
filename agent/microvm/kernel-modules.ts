/**
 * Picks the kernel modules a microVM guest needs (virtio-mmio, 9p, virtio-net) out of an unpacked
 * kernel package, following each module's `depends=` so they can be insmod-ed in order without
 * modprobe or a modules.dep.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { copyModule } from './kernel-package.js';

/** Modules for the two 9p shares over virtio-mmio (microvm has no PCI). */
export const BASE_MODULES = ['virtio_mmio', '9pnet_virtio', '9p'] as const;
/** Loaded only when the workload has a network. */
export const NET_MODULES = ['virtio_net'] as const;

/** Module names use `_`; some file names use `-` (virtio-rng.ko). */
function moduleName(file: string): string {
  return file.replace(/\.ko(\.xz)?$/, '').replace(/-/g, '_');
}

async function indexModules(dir: string, into = new Map<string, string>()): Promise<Map<string, string>> {
  for (const ent of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) await indexModules(p, into);
    else if (/\.ko(\.xz)?$/.test(ent.name)) into.set(moduleName(ent.name), p);
  }
  return into;
}

/** The `depends=` list of a module's .modinfo section. */
export function moduleDepends(ko: Buffer): string[] {
  const at = ko.indexOf(Buffer.from('\0depends='));
  if (at < 0) return [];
  const start = at + '\0depends='.length;
  const end = ko.indexOf(0, start);
  const value = ko.subarray(start, end).toString('latin1');
  return value ? value.split(',').map((d) => d.replace(/-/g, '_')) : [];
}

/**
 * Copies the modules needed for `roots` (and their dependencies) into outDir as `<name>.ko`.
 * Returns the load order: each module after everything it depends on.
 */
export async function collectModules(
  kernelRoot: string,
  release: string,
  roots: readonly string[],
  outDir: string,
  copied = new Set<string>(),
): Promise<string[]> {
  const index = await indexModules(join(kernelRoot, 'lib', 'modules', release, 'kernel'));
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = async (name: string, from: string): Promise<void> => {
    if (order.includes(name)) return;
    if (visiting.has(name)) throw new Error(`kernel module dependency cycle through ${name}`);
    const src = index.get(name);
    if (!src) {
      throw new Error(
        `kernel ${release} has no module ${name} (needed by ${from}); is it a Debian generic (not cloud) kernel?`,
      );
    }
    visiting.add(name);
    const dest = join(outDir, `${name}.ko`);
    if (!copied.has(name)) {
      await copyModule(src, dest);
      copied.add(name);
    }
    for (const dep of moduleDepends(await readFile(dest))) await visit(dep, name);
    visiting.delete(name);
    order.push(name);
  };
  for (const r of roots) await visit(r, 'the microVM guest');
  return order;
}
