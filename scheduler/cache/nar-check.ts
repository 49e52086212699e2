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
