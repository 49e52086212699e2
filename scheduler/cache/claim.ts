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
  const hashText = field(headers, query, 'x-nix-nar-hash', 'narHash');
  const narHash = hashText ? parseSha256(hashText.trim()) : null;
  if (!narHash) {
    throw bad(
      `X-Nix-Nar-Hash must be the NAR's sha256 as nix prints it (sha256:<base32>, sha256:<hex> or sha256-<base64>), got ${JSON.stringify(hashText ?? null)}`,
    );
  }
  const sizeText = field(headers, query, 'x-nix-nar-size', 'narSize');
  const narSize = Number(sizeText);
  if (!sizeText || !/^\d+$/.test(sizeText.trim()) || !Number.isSafeInteger(narSize)) {
    throw bad(`X-Nix-Nar-Size must be the NAR size in bytes, got ${JSON.stringify(sizeText ?? null)}`);
  }
  if (narSize > maxNarBytes) {
    throw new CacheError(
      'CACHE_TOO_LARGE',
      413,
      `the NAR is ${narSize} bytes, over the cache limit of ${maxNarBytes} bytes; raise maxNarBytes on the coordinator`,
    );
  }
  const references: string[] = [];
  for (const ref of (field(headers, query, 'x-nix-references', 'references') ?? '').split(/[\s,]+/)) {
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
  const deriverText = field(headers, query, 'x-nix-deriver', 'deriver')?.trim();
  let deriver: string | undefined;
  if (deriverText && deriverText !== 'unknown-deriver') {
    const base = storeBasename(deriverText);
    if (!base?.endsWith('.drv'))
      throw bad(`X-Nix-Deriver must be a .drv store path, got ${JSON.stringify(deriverText)}`);
    deriver = `${STORE_DIR}/${base}`;
  }
  return { narHash, narSize, references, deriver };
}
