/**
 * Serialises a store path as a NAR (what `nix-store --dump` prints) inside this process: spawning
 * nix-store for each of hundreds of small paths costs far more than reading them.
 */
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { Readable } from 'node:stream';

const CHUNK = 1024 * 1024;
const SLASH = Buffer.from('/');

/** A NAR string: little-endian u64 length, the bytes, zero padding to a multiple of 8. */
function str(s: string | Buffer): Buffer {
  const bytes = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  const pad = (8 - (bytes.length % 8)) % 8;
  const out = Buffer.alloc(8 + bytes.length + pad);
  out.writeBigUInt64LE(BigInt(bytes.length), 0);
  bytes.copy(out, 8);
  return out;
}

const strs = (...items: (string | Buffer)[]) => Buffer.concat(items.map(str));

/** Paths are Buffers so names that are not UTF-8 survive. */
async function* node(path: Buffer): AsyncGenerator<Buffer> {
  const st = await lstat(path);
  if (st.isSymbolicLink()) {
    yield strs('(', 'type', 'symlink', 'target', await readlink(path, { encoding: 'buffer' }), ')');
  } else if (st.isFile()) {
    // Nix records only the owner-executable bit.
    yield (st.mode & 0o100) !== 0
      ? strs('(', 'type', 'regular', 'executable', '', 'contents')
      : strs('(', 'type', 'regular', 'contents');
    const size = st.size;
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(size));
    yield len;
    const fh = await open(path, 'r');
    try {
      let done = 0;
      while (done < size) {
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, size - done));
        const { bytesRead } = await fh.read(buf, 0, buf.length, done);
        if (bytesRead === 0) throw new Error(`${path.toString()} shrank while it was being read`);
        done += bytesRead;
        yield buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
    yield Buffer.concat([Buffer.alloc((8 - (size % 8)) % 8), str(')')]);
  } else if (st.isDirectory()) {
    yield strs('(', 'type', 'directory');
    // Nix orders entries by their bytes, not by JavaScript string order.
    const names = (await readdir(path, { encoding: 'buffer' })).sort(Buffer.compare);
    for (const name of names) {
      yield strs('entry', '(', 'name', name, 'node');
      yield* node(Buffer.concat([path, SLASH, name]));
      yield str(')');
    }
    yield str(')');
  } else {
    throw new Error(`${path.toString()} is neither a file, a directory nor a symlink; nix cannot archive it`);
  }
}

/** The NAR of `path` as a stream, byte for byte what `nix-store --dump path` writes. */
export function narStream(path: string): Readable {
  async function* all(): AsyncGenerator<Buffer> {
    yield str('nix-archive-1');
    yield* node(Buffer.from(path));
  }
  return Readable.from(all(), { objectMode: false });
}
