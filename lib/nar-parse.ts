/**
 * Checks that a byte stream is one well-formed NAR, end to end, while it streams: the grammar of
 * `nix-store --dump` (regular files, executables, symlinks, directories with strictly ordered, safe
 * entry names), zero padding, and nothing after the last node. File contents are never buffered.
 * Written here rather than taken from npm: no maintained package validates NARs as a stream.
 */
import { Transform, type TransformCallback } from 'node:stream';

export class NarFormatError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`not a valid NAR at byte ${offset}: ${message}`);
    this.name = 'NarFormatError';
  }
}

/** What the parser asks for next: exactly `take` bytes, or to let `skip` bytes of file contents pass. */
type Need = { take: number } | { skip: number };

const MAX_TOKEN = 4096;
const MAX_NAME = 255;
const MAX_DEPTH = 512;
const pad8 = (n: number) => (8 - (n % 8)) % 8;

/** The parser as a generator: it yields what it needs and receives the bytes (or nothing, for skips). */
function* narGrammar(fail: (msg: string) => never): Generator<Need, void, Buffer> {
  function* u64(): Generator<Need, number, Buffer> {
    const b = yield { take: 8 };
    const v = b.readBigUInt64LE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail('a length is too large');
    return Number(v);
  }
  function* bytes(max: number): Generator<Need, Buffer, Buffer> {
    const len = yield* u64();
    if (len > max) fail(`a string of ${len} bytes where at most ${max} are allowed`);
    const b = len + pad8(len) > 0 ? yield { take: len + pad8(len) } : Buffer.alloc(0);
    for (let i = len; i < b.length; i++) if (b[i] !== 0) fail('padding is not zero');
    return b.subarray(0, len);
  }
  function* str(max = 64): Generator<Need, string, Buffer> {
    return (yield* bytes(max)).toString('latin1');
  }
  function* expect(want: string): Generator<Need, void, Buffer> {
    const got = yield* str();
    if (got !== want) fail(`expected "${want}", found "${got.slice(0, 40)}"`);
  }
  function* node(depth: number): Generator<Need, void, Buffer> {
    if (depth > MAX_DEPTH) fail(`directories nested deeper than ${MAX_DEPTH}`);
    yield* expect('(');
    yield* expect('type');
    const type = yield* str();
    if (type === 'regular') {
      let tag = yield* str();
      if (tag === 'executable') {
        yield* expect('');
        tag = yield* str();
      }
      if (tag !== 'contents') fail(`expected "contents", found "${tag.slice(0, 40)}"`);
      const len = yield* u64();
      if (len > 0) yield { skip: len };
      const p = pad8(len);
      if (p > 0) {
        const b = yield { take: p };
        if (b.some((x) => x !== 0)) fail('padding is not zero');
      }
      yield* expect(')');
    } else if (type === 'symlink') {
      yield* expect('target');
      const target = yield* bytes(MAX_TOKEN);
      if (target.length === 0 || target.includes(0)) fail('a symlink target is empty or holds a NUL byte');
      yield* expect(')');
    } else if (type === 'directory') {
      let prev: Buffer | null = null;
      for (;;) {
        const tag = yield* str();
        if (tag === ')') break;
        if (tag !== 'entry') fail(`expected "entry" or ")", found "${tag.slice(0, 40)}"`);
        yield* expect('(');
        yield* expect('name');
        const name = yield* bytes(MAX_NAME);
        const text = name.toString('latin1');
        if (name.length === 0 || text === '.' || text === '..' || name.includes(0x2f) || name.includes(0))
          fail(`an entry name "${text.slice(0, 40)}" is empty, . or .., or holds / or NUL`);
        if (prev && Buffer.compare(prev, name) >= 0)
          fail(`entries are not in strictly ascending order at "${text.slice(0, 40)}"`);
        prev = name;
        yield* expect('node');
        yield* node(depth + 1);
        yield* expect(')');
      }
    } else {
      fail(`unknown node type "${type.slice(0, 40)}"`);
    }
  }
  yield* expect('nix-archive-1');
  yield* node(0);
}

/**
 * The NAR grammar fed chunk by chunk: `feed` throws NarFormatError as soon as the input stops being a
 * NAR, `end` when it is incomplete. Used whole (`checkNar`) or as a stream (`NarValidator`).
 */
export class NarChecker {
  private readonly parser: Generator<Need, void, Buffer>;
  private need: Need | null;
  private offset = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private done = false;

  constructor() {
    this.parser = narGrammar((msg) => {
      throw new NarFormatError(msg, this.offset);
    });
    this.need = this.next(undefined);
  }

  private next(input: Buffer | undefined): Need | null {
    const r = input === undefined ? this.parser.next() : this.parser.next(input);
    if (r.done) {
      this.done = true;
      return null;
    }
    return r.value;
  }

  /** Checks that the whole input so far was read to its end. */
  end(): void {
    if (!this.done) throw new NarFormatError('the NAR ends early', this.offset);
  }

  feed(chunk: Buffer): void {
    let buf = chunk;
    while (buf.length > 0) {
      if (this.done) throw new NarFormatError('bytes follow the end of the NAR', this.offset);
      const need = this.need!;
      if ('skip' in need) {
        const n = Math.min(need.skip, buf.length);
        this.offset += n;
        buf = buf.subarray(n);
        need.skip -= n;
        if (need.skip === 0) this.need = this.next(Buffer.alloc(0));
        continue;
      }
      const want = need.take - this.pendingBytes;
      const n = Math.min(want, buf.length);
      this.pending.push(buf.subarray(0, n));
      this.pendingBytes += n;
      buf = buf.subarray(n);
      if (this.pendingBytes === need.take) {
        const got = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
        this.pending = [];
        this.pendingBytes = 0;
        this.offset += got.length;
        this.need = this.next(got);
      }
    }
  }
}

/** Throws NarFormatError unless `nar` is exactly one well-formed NAR. */
export function checkNar(nar: Buffer): void {
  const checker = new NarChecker();
  checker.feed(nar);
  checker.end();
}

/**
 * A pass-through stream that fails (with NarFormatError) as soon as its input stops being a NAR, and at
 * the end when the NAR is incomplete or followed by anything.
 */
export class NarValidator extends Transform {
  private readonly checker = new NarChecker();

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.checker.feed(chunk);
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.checker.end();
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb();
  }
}
