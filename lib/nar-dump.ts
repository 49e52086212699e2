/**
 * Serialises a store path as a NAR (what `nix-store --dump` prints) inside this process: spawning
 * nix-store for each of hundreds of small paths costs far more than reading them.
 */
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs';
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

/** Writes NAR tokens into a buffer of exactly the expected size; overrunning it means the tree changed. */
class NarWriter {
  pos: number;

  constructor(
    readonly buf: Buffer,
    start: number,
    private readonly changed: () => Error,
  ) {
    this.pos = start;
  }

  room(n: number): void {
    if (this.pos + n > this.buf.length) throw this.changed();
  }

  u64(n: number): void {
    this.room(8);
    this.buf.writeUInt32LE(n % 2 ** 32, this.pos);
    this.buf.writeUInt32LE(Math.floor(n / 2 ** 32), this.pos + 4);
    this.pos += 8;
  }

  pad(n: number): void {
    const p = (8 - (n % 8)) % 8;
    this.room(p);
    this.buf.fill(0, this.pos, this.pos + p);
    this.pos += p;
  }

  str(s: string | Buffer): void {
    const bytes = typeof s === 'string' ? Buffer.byteLength(s, 'utf8') : s.length;
    this.u64(bytes);
    this.room(bytes);
    if (typeof s === 'string') this.buf.write(s, this.pos, 'utf8');
    else s.copy(this.buf, this.pos);
    this.pos += bytes;
    this.pad(bytes);
  }
}

function nodeInto(w: NarWriter, path: Buffer): void {
  const st = lstatSync(path);
  w.str('(');
  w.str('type');
  if (st.isSymbolicLink()) {
    w.str('symlink');
    w.str('target');
    w.str(readlinkSync(path, { encoding: 'buffer' }));
  } else if (st.isFile()) {
    w.str('regular');
    if ((st.mode & 0o100) !== 0) {
      w.str('executable');
      w.str('');
    }
    w.str('contents');
    const size = st.size;
    w.u64(size);
    w.room(size);
    const fd = openSync(path, 'r');
    try {
      let done = 0;
      while (done < size) {
        const n = readSync(fd, w.buf, w.pos + done, size - done, done);
        if (n === 0) throw new Error(`${path.toString()} shrank while it was being read`);
        done += n;
      }
    } finally {
      closeSync(fd);
    }
    w.pos += size;
    w.pad(size);
  } else if (st.isDirectory()) {
    w.str('directory');
    for (const name of readdirSync(path, { encoding: 'buffer' }).sort(Buffer.compare)) {
      w.str('entry');
      w.str('(');
      w.str('name');
      w.str(name);
      w.str('node');
      nodeInto(w, Buffer.concat([path, SLASH, name]));
      w.str(')');
    }
  } else {
    throw new Error(`${path.toString()} is neither a file, a directory nor a symlink; nix cannot archive it`);
  }
  w.str(')');
}

/**
 * Writes the NAR of `path` into `buf` from `start` to its end, which must be exactly the NAR's size
 * (the NarSize nix recorded), with blocking reads: for the many small paths of a closure one buffer,
 * no copies and no per-file round trips through the thread pool. Only for a command-line process,
 * never a server's event loop. Throws when the tree's NAR is not exactly that long (it changed).
 */
export function narInto(path: string, buf: Buffer, start: number): void {
  const changed = () =>
    new Error(`${path} is not the ${buf.length - start}-byte NAR nix recorded for it; it changed on disk`);
  const w = new NarWriter(buf, start, changed);
  w.str('nix-archive-1');
  nodeInto(w, Buffer.from(path));
  if (w.pos !== buf.length) throw changed();
}
