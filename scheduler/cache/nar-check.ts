/**
 * A stored NAR's name is the nix-base32 sha256 of its (compressed) bytes plus its compression suffix,
 * so a storage can tell a damaged copy from a whole one: read whole (small ones) or hashed as it streams.
 */
import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import { toNixBase32 } from '../../lib/nix-base32.js';

/** The name under `nar/` these bytes have: the nix-base32 sha256 of them, with `file`'s suffix. */
export function nameOfBytes(bytes: Buffer, file: string): string {
  return nameOfHash(createHash('sha256').update(bytes).digest(), file);
}

export function nameOfHash(sha256: Buffer, file: string): string {
  return `${toNixBase32(sha256)}${file.slice(52)}`;
}

/**
 * Passes a NAR's bytes through, hashing them, and holds its last chunk back until the hash matches the
 * name `file`: a damaged copy never reaches a client whole (the transfer breaks short of its length).
 * `onEnd` is told whether the bytes were whole; when not, the error it answers ends the stream.
 */
export function narNameCheck(file: string, onEnd: (whole: boolean) => Error | undefined): Transform {
  const hash = createHash('sha256');
  let held: Buffer | null = null;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      const out = held;
      held = chunk;
      done(null, out ?? undefined);
    },
    flush(done) {
      const whole = nameOfHash(hash.digest(), file) === file;
      const err = onEnd(whole);
      if (whole) done(null, held ?? undefined);
      else done(err ?? new Error(`the NAR ${file} is not the bytes its name hashes`));
    },
  });
}

/** NARs remembered as found whole; forgotten all at once past this many. */
const WHOLE_NARS_MAX = 100_000;

/**
 * What a storage found of its NARs as it read them, each at a version (a file's `mtime:size`, an
 * object's ETag): whole (not hashed again while it is that version) or damaged (not served, nor the
 * narinfos naming it, while it is). In memory only. An empty version is never remembered as whole.
 */
export class NarFindings {
  private readonly whole = new Map<string, string>();
  private readonly damaged = new Map<string, string>();

  isWhole(file: string, version: string): boolean {
    return version !== '' && this.whole.get(file) === version;
  }

  /** The version it was found damaged at, if it was (and not forgotten since). */
  damagedAt(file: string): string | undefined {
    return this.damaged.get(file);
  }

  foundWhole(file: string, version: string): void {
    if (version === '') return;
    if (this.whole.size >= WHOLE_NARS_MAX) this.whole.clear();
    this.whole.set(file, version);
  }

  foundDamaged(file: string, version: string): void {
    this.damaged.set(file, version);
    this.whole.delete(file);
  }

  /** Forgets the damage found (the NAR was replaced since, or is gone). */
  forgetDamage(file: string): void {
    this.damaged.delete(file);
  }

  /** Forgets all it found of a NAR: a new copy was stored under its name. */
  forget(file: string): void {
    this.damaged.delete(file);
    this.whole.delete(file);
  }
}
