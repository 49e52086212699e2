/**
 * A minimal writer for the Linux initramfs format (cpio "newc"). Written here rather than shelling
 * out to cpio so that device nodes (/dev/console) can be created without root.
 */

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Buffer | string; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

function record(
  ino: number,
  name: string,
  mode: number,
  data: Buffer,
  rdev: [number, number] = [0, 0],
): Buffer[] {
  const nameBuf = Buffer.from(`${name}\0`, 'utf8');
  const header = [
    '070701',
    hex8(ino),
    hex8(mode),
    hex8(0), // uid
    hex8(0), // gid
    hex8(1), // nlink
    hex8(0), // mtime: fixed so the archive is reproducible
    hex8(data.length),
    hex8(0), // devmajor
    hex8(0), // devminor
    hex8(rdev[0]),
    hex8(rdev[1]),
    hex8(nameBuf.length),
    hex8(0), // check
  ].join('');
  const head = Buffer.concat([Buffer.from(header, 'ascii'), nameBuf]);
  return [head, pad4(head.length), data, pad4(data.length)];
}

/** Serialises entries (parents before children) into one newc archive ending with TRAILER!!!. */
export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (!name) throw new Error(`cpio entry path "${e.path}" is empty; give a path below the root`);
    switch (e.kind) {
      case 'dir':
        parts.push(...record(ino++, name, S_IFDIR | (e.mode ?? 0o755), Buffer.alloc(0)));
        break;
      case 'file':
        parts.push(...record(ino++, name, S_IFREG | (e.mode ?? 0o644), Buffer.from(e.data)));
        break;
      case 'symlink':
        parts.push(...record(ino++, name, S_IFLNK | 0o777, Buffer.from(e.target, 'utf8')));
        break;
      case 'chardev':
        parts.push(...record(ino++, name, S_IFCHR | (e.mode ?? 0o600), Buffer.alloc(0), [e.major, e.minor]));
        break;
    }
  }
  parts.push(...record(0, 'TRAILER!!!', 0, Buffer.alloc(0)));
  return Buffer.concat(parts);
}
