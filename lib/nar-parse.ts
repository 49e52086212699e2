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

const TOKEN = (t: string) => Buffer.from(t, 'latin1');
const T = {
  magic: TOKEN('nix-archive-1'),
  open: TOKEN('('),
  close: TOKEN(')'),
  type: TOKEN('type'),
  regular: TOKEN('regular'),
  symlink: TOKEN('symlink'),
  directory: TOKEN('directory'),
  executable: TOKEN('executable'),
  empty: TOKEN(''),
  contents: TOKEN('contents'),
  target: TOKEN('target'),
  entry: TOKEN('entry'),
  name: TOKEN('name'),
  node: TOKEN('node'),
};

/**
 * Throws NarFormatError unless `nar` is exactly one well-formed NAR: `narGrammar`'s checks, with its
 * messages and offsets, made over a buffer held whole by index instead of a generator fed piece by
 * piece (no allocation a token: ~10× less CPU for the small NARs most uploads are). The two are held
 * to the same answers by test/cache/nar-parse.test.ts.
 */
export function checkNar(nar: Buffer): void {
  /** The end of the last whole piece read: where the streaming checker would report a fault. */
  let pos = 0;
  const fail = (msg: string, at = pos): never => {
    throw new NarFormatError(msg, at);
  };
  /** Takes `n` bytes; returns where they start. */
  const take = (n: number): number => {
    if (pos + n > nar.length) fail('the NAR ends early');
    const at = pos;
    pos += n;
    return at;
  };
  const u64 = (): number => {
    const at = take(8);
    const high = nar.readUInt32LE(at + 4);
    if (high > 0x1fffff) fail('a length is too large');
    return high * 0x100000000 + nar.readUInt32LE(at);
  };
  /** A string's bytes as [start, end) in `nar`. */
  const bytes = (max: number): [number, number] => {
    const len = u64();
    if (len > max) fail(`a string of ${len} bytes where at most ${max} are allowed`);
    const padded = len + pad8(len);
    if (padded === 0) return [pos, pos];
    const at = take(padded);
    for (let i = at + len; i < at + padded; i++) if (nar[i] !== 0) fail('padding is not zero');
    return [at, at + len];
  };
  const is = ([a, b]: [number, number], t: Buffer) =>
    b - a === t.length && nar.compare(t, 0, t.length, a, b) === 0;
  const text = ([a, b]: [number, number]) => nar.toString('latin1', a, b);
  const expect = (want: Buffer): void => {
    const got = bytes(64);
    if (!is(got, want)) fail(`expected "${want.toString('latin1')}", found "${text(got).slice(0, 40)}"`);
  };
  const node = (depth: number): void => {
    if (depth > MAX_DEPTH) fail(`directories nested deeper than ${MAX_DEPTH}`);
    expect(T.open);
    expect(T.type);
    const type = bytes(64);
    if (is(type, T.regular)) {
      let tag = bytes(64);
      if (is(tag, T.executable)) {
        expect(T.empty);
        tag = bytes(64);
      }
      if (!is(tag, T.contents)) fail(`expected "contents", found "${text(tag).slice(0, 40)}"`);
      const len = u64();
      // File contents are skipped as the streaming checker skips them: cut short, it reports the end.
      if (pos + len > nar.length) fail('the NAR ends early', nar.length);
      pos += len;
      const p = pad8(len);
      if (p > 0) {
        const at = take(p);
        for (let i = at; i < at + p; i++) if (nar[i] !== 0) fail('padding is not zero');
      }
      expect(T.close);
    } else if (is(type, T.symlink)) {
      expect(T.target);
      const [a, b] = bytes(MAX_TOKEN);
      if (a === b || nar.subarray(a, b).includes(0)) fail('a symlink target is empty or holds a NUL byte');
      expect(T.close);
    } else if (is(type, T.directory)) {
      let prev: [number, number] | null = null;
      for (;;) {
        const tag = bytes(64);
        if (is(tag, T.close)) break;
        if (!is(tag, T.entry)) fail(`expected "entry" or ")", found "${text(tag).slice(0, 40)}"`);
        expect(T.open);
        expect(T.name);
        const name = bytes(MAX_NAME);
        const [a, b] = name;
        const bad =
          a === b ||
          (b - a === 1 && nar[a] === 0x2e) ||
          (b - a === 2 && nar[a] === 0x2e && nar[a + 1] === 0x2e) ||
          nar.subarray(a, b).includes(0x2f) ||
          nar.subarray(a, b).includes(0);
        if (bad) fail(`an entry name "${text(name).slice(0, 40)}" is empty, . or .., or holds / or NUL`);
        if (prev && nar.compare(nar, a, b, prev[0], prev[1]) >= 0)
          fail(`entries are not in strictly ascending order at "${text(name).slice(0, 40)}"`);
        prev = name;
        expect(T.node);
        node(depth + 1);
        expect(T.close);
      }
    } else {
      fail(`unknown node type "${text(type).slice(0, 40)}"`);
    }
  };
  expect(T.magic);
  node(0);
  if (pos < nar.length) fail('bytes follow the end of the NAR');
}

/** `checkNar` through the streaming checker (what large uploads get), for tests that hold the two to one answer. */
export function checkNarStreaming(nar: Buffer): void {
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
