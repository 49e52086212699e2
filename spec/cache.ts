/**
 * Shapes of the binary cache's upload side (`/api/cache/…`): the cache key, the missing-paths question,
 * what an upload answers, and the header of each NAR in a batch upload. The read side (`/cache/…`) speaks
 * Nix's own text formats (nix-cache-info, narinfo, NAR).
 */
import * as z from 'zod';

/** Most paths one `POST /api/cache/missing` may ask about; `mxc push` asks in slices of this size. */
export const MAX_MISSING_PATHS = 10_000;

/** Most NARs one batch upload (`POST /api/cache/nars`) may carry; `mxc push` sends longer closures in several. */
export const MAX_BATCH_NARS = 1_000;

/** Most references one path may claim (nix itself has no limit; real closures stay far below). */
export const MAX_REFERENCES = 10_000;

/** Longest header of one NAR in a batch, in bytes (a path with MAX_REFERENCES short references fits). */
export const MAX_BATCH_HEADER_BYTES = 1024 * 1024;

/** The media type of a batch upload body: frames of `u32 big-endian header length, JSON header, NAR`. */
export const NAR_BATCH_MEDIA_TYPE = 'application/x-mxc-nar-batch';

const StorePathText = z.string().min(1).max(400);

export const CacheKeyAnswer = z.object({
  data: z.object({
    name: z.string().describe('name of the signing key, as in `Sig:` lines'),
    public_key: z.string().describe('`name:base64`, what nix takes as a trusted public key'),
  }),
});

export const MissingRequest = z
  .object({
    paths: z
      .array(StorePathText)
      .max(MAX_MISSING_PATHS, `at most ${MAX_MISSING_PATHS} paths per request; ask in slices`),
  })
  .strict();

export const MissingAnswer = z.object({
  data: z.object({ missing: z.array(z.string()).describe('the asked paths the cache does not hold') }),
});
export type MissingAnswer = z.infer<typeof MissingAnswer>;

/** One path as the cache holds it after an upload. */
export const StoredPath = z.object({
  path: z.string(),
  created: z.boolean().describe('false when the cache already held the path with this NarHash'),
  nar_hash: z.string(),
  nar_size: z.number().int(),
  file_size: z.number().int().describe('bytes of the compressed NAR file'),
});
export type StoredPath = z.infer<typeof StoredPath>;

export const UploadAnswer = z.object({ data: StoredPath });

/**
 * The header before each NAR of a batch upload: what the uploader claims about the path, checked
 * (hash, size, structure) or signed (references, deriver) exactly as a single upload's X-Nix-* headers.
 */
export const NarBatchHeader = z
  .object({
    path: StorePathText.describe('store path or basename'),
    nar_hash: z.string().max(200).describe('sha256 of the NAR as nix prints it'),
    nar_size: z.number().int().nonnegative().describe('bytes of the NAR that follow this header'),
    references: z
      .array(StorePathText)
      .max(MAX_REFERENCES)
      .describe('store paths, basenames, or hash parts of paths the cache holds'),
    deriver: StorePathText.optional(),
  })
  .strict();
export type NarBatchHeader = z.infer<typeof NarBatchHeader>;

export const NarBatchAnswer = z.object({
  data: z.object({ stored: z.array(StoredPath).describe('every path of the batch, in upload order') }),
});
export type NarBatchAnswer = z.infer<typeof NarBatchAnswer>;
