/**
 * Nix's own base-32 (the alphabet without e, o, t, u, read from the last byte) and the hash notations
 * nix prints: `sha256:<base32>`, `sha256:<hex>` and SRI `sha256-<base64>`.
 */

const ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';
/** Each ASCII character's digit, -1 for those not in the alphabet (a table: no Map, no one-char strings). */
const DIGIT = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DIGIT[ALPHABET.charCodeAt(i)] = i;

/** Encodes bytes the way `nix-hash --to-base32` does. */
export function toNixBase32(bytes: Uint8Array): string {
  const len = Math.ceil((bytes.length * 8) / 5);
  let out = '';
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    const c = (bytes[i] >> j) | (i + 1 < bytes.length ? bytes[i + 1] << (8 - j) : 0);
    out += ALPHABET[c & 0x1f];
  }
  return out;
}

/** Decodes nix base-32 into `size` bytes; null when the text is not valid nix base-32 of that size. */
export function fromNixBase32(text: string, size: number): Buffer | null {
  if (text.length !== Math.ceil((size * 8) / 5)) return null;
  const out = Buffer.alloc(size);
  for (let n = 0; n < text.length; n++) {
    const code = text.charCodeAt(text.length - n - 1);
    const digit = code < 128 ? DIGIT[code]! : -1;
    if (digit < 0) return null;
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    out[i] |= (digit << j) & 0xff;
    const carry = digit >> (8 - j);
    if (i + 1 < size) out[i + 1] |= carry;
    else if (carry) return null;
  }
  return out;
}

/**
 * Reads a sha256 in any notation nix uses and returns its 32 bytes, or null when it is not one.
 * Accepted: `sha256:<52 base32>`, `sha256:<64 hex>`, `sha256-<base64>` (SRI).
 */
export function parseSha256(text: string): Buffer | null {
  if (text.startsWith('sha256-')) {
    const b64 = text.slice(7);
    if (!/^[A-Za-z0-9+/]{43}=$/.test(b64)) return null;
    return Buffer.from(b64, 'base64');
  }
  if (!text.startsWith('sha256:')) return null;
  const body = text.slice(7);
  if (/^[0-9a-f]{64}$/.test(body)) return Buffer.from(body, 'hex');
  return fromNixBase32(body, 32);
}

/** The notation narinfo files use: `sha256:<nix base32>`. */
export function formatSha256(bytes: Uint8Array): string {
  return `sha256:${toNixBase32(bytes)}`;
}
