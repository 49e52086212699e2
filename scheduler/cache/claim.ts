/**
 * Reads what an upload claims about its path (NarHash, NarSize, References, Deriver) from the
 * `X-Nix-*` headers or, equivalently, the query string, and rejects malformed claims.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { STORE_DIR, STORE_HASH_RE, storeBasename } from '../../lib/nar-info.js';
import { parseSha256 } from '../../lib/nix-base32.js';
import { CacheError } from './errors.js';
import type { IngestClaim } from './ingest.js';

function field(
  headers: IncomingHttpHeaders,
  query: Record<string, string | undefined>,
  header: string,
  q: string,
) {
  const h = headers[header];
  return (Array.isArray(h) ? h.join(' ') : h) ?? query[q];
}

function bad(message: string): CacheError {
  return new CacheError('CACHE_BAD_REQUEST', 400, message);
}

/** Claim of one upload; see the module header for where each field comes from. */
export function parseUploadClaim(
  headers: IncomingHttpHeaders,
  query: Record<string, string | undefined>,
  maxNarBytes: number,
): IngestClaim {
  const sizeText = field(headers, query, 'x-nix-nar-size', 'narSize');
  return claimOf(
    {
      narHash: field(headers, query, 'x-nix-nar-hash', 'narHash'),
      narSize: sizeText && /^\d+$/.test(sizeText.trim()) ? Number(sizeText) : (sizeText ?? null),
      references: (field(headers, query, 'x-nix-references', 'references') ?? '').split(/[\s,]+/),
      deriver: field(headers, query, 'x-nix-deriver', 'deriver'),
    },
    maxNarBytes,
  );
}

/**
 * A claim from its fields as sent (a single upload's headers, or the JSON header of a NAR in a batch);
 * the same checks and the same coded refusals for both.
 */
export function claimOf(
  sent: {
    narHash: string | undefined;
    /** Bytes; anything else (the text sent, or null) is refused naming what was sent. */
    narSize: number | string | null;
    references: readonly string[];
    deriver?: string;
  },
  maxNarBytes: number,
): IngestClaim {
  const hashText = sent.narHash;
  const narHash = hashText ? parseSha256(hashText.trim()) : null;
  if (!narHash) {
    throw bad(
      `X-Nix-Nar-Hash must be the NAR's sha256 as nix prints it (sha256:<base32>, sha256:<hex> or sha256-<base64>), got ${JSON.stringify(hashText ?? null)}`,
    );
  }
  const narSize = sent.narSize;
  if (typeof narSize !== 'number' || !Number.isSafeInteger(narSize) || narSize < 0) {
    throw bad(`X-Nix-Nar-Size must be the NAR size in bytes, got ${JSON.stringify(narSize)}`);
  }
  if (narSize > maxNarBytes) {
    throw new CacheError(
      'CACHE_TOO_LARGE',
      413,
      `the NAR is ${narSize} bytes, over the cache limit of ${maxNarBytes} bytes; raise maxNarBytes on the coordinator`,
    );
  }
  const references: string[] = [];
  for (const ref of sent.references) {
    if (!ref) continue;
    // A bare hash part is enough: references must already be in the cache, which knows their names.
    if (STORE_HASH_RE.test(ref)) {
      references.push(ref);
      continue;
    }
    const base = storeBasename(ref);
    if (!base)
      throw new CacheError('CACHE_INVALID_PATH', 400, `reference ${JSON.stringify(ref)} is not a store path`);
    references.push(`${STORE_DIR}/${base}`);
  }
  const deriverText = sent.deriver?.trim();
  let deriver: string | undefined;
  if (deriverText && deriverText !== 'unknown-deriver') {
    const base = storeBasename(deriverText);
    if (!base?.endsWith('.drv'))
      throw bad(`X-Nix-Deriver must be a .drv store path, got ${JSON.stringify(deriverText)}`);
    deriver = `${STORE_DIR}/${base}`;
  }
  return { narHash, narSize, references, deriver };
}
