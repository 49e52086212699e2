/**
 * The index of a cache pack file (scheduler/cache/storage-dir.ts): one file a batch upload's group
 * writes with its small NARs and all its narinfos, read by every coordinator sharing the cache directory.
 * The file is `NAR bytes… narinfo texts… index JSON`, then a 12-byte trailer: the ASCII magic
 * `mxcpack1` and the index's length as a u32 big-endian.
 */
import * as z from 'zod';

export const PACK_MAGIC = 'mxcpack1';
export const PACK_TRAILER_BYTES = 12;

const Offset = z.number().int().nonnegative();

export const PackIndex = z
  .object({
    /** `[name under nar/, byte offset, bytes]` of each NAR the pack holds. */
    nars: z.array(z.tuple([z.string().regex(/^[0-9a-z]{52}\.nar(\.(br|xz|bz2|zst))?$/), Offset, Offset])),
    /** `[hash part, byte offset, bytes]` of each narinfo the pack publishes (UTF-8 text). */
    narinfos: z.array(
      z.tuple([z.string().regex(/^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/), Offset, Offset]),
    ),
  })
  .strict();
export type PackIndex = z.infer<typeof PackIndex>;
