/**
 * The `.narinfo` format of a Nix binary cache: store path names, the signed fingerprint, and
 * rendering/parsing the key-value text that `nix-store --realise` and `nix copy` read.
 */

export const STORE_DIR = '/nix/store';

/** The 32 characters of nix base32 that start a store path basename and name its narinfo file. */
export const STORE_HASH_RE = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/;

/** `<32 chars of nix base32>-<name>`; the name rules are nix's own (`checkName`). */
const BASENAME_RE = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+\-._?=]{1,211}$/;

/** True when `base` is a valid store path basename (no slashes, no `..`, nix's character set). */
export function isStoreBasename(base: string): boolean {
  return BASENAME_RE.test(base) && !base.slice(33).startsWith('.');
}

/**
 * Turns a full store path or a basename into the basename, or null when it is neither (another
 * store directory, a nested path, traversal, bad characters).
 */
export function storeBasename(pathOrBase: string): string | null {
  const base = pathOrBase.startsWith(`${STORE_DIR}/`) ? pathOrBase.slice(STORE_DIR.length + 1) : pathOrBase;
  return isStoreBasename(base) ? base : null;
}

/** The 32-character hash part that names the narinfo file. */
export function hashPart(base: string): string {
  return base.slice(0, 32);
}

export interface NarInfo {
  /** Full store path. */
  storePath: string;
  /** Relative URL of the compressed NAR, e.g. `nar/<filehash>.nar.br`. */
  url: string;
  compression: string;
  /** `sha256:<base32>` of the compressed file. */
  fileHash: string;
  fileSize: number;
  /** `sha256:<base32>` of the uncompressed NAR. */
  narHash: string;
  narSize: number;
  /** Full store paths, sorted. */
  references: string[];
  /** Full store path of the .drv, when known. */
  deriver?: string;
  /** `keyname:base64sig` entries. */
  sigs: string[];
}

/** What a signature covers: `1;<path>;<narHash>;<narSize>;<refs,comma-separated>` (nix's `fingerprint`). */
export function fingerprint(info: Pick<NarInfo, 'storePath' | 'narHash' | 'narSize' | 'references'>): string {
  return `1;${info.storePath};${info.narHash};${info.narSize};${[...info.references].sort().join(',')}`;
}

/** Renders the text nix reads. References and Deriver are written as basenames, as nix writes them. */
export function renderNarInfo(info: NarInfo): string {
  const lines = [
    `StorePath: ${info.storePath}`,
    `URL: ${info.url}`,
    `Compression: ${info.compression}`,
    `FileHash: ${info.fileHash}`,
    `FileSize: ${info.fileSize}`,
    `NarHash: ${info.narHash}`,
    `NarSize: ${info.narSize}`,
    `References: ${[...info.references]
      .sort()
      .map((r) => r.slice(STORE_DIR.length + 1))
      .join(' ')}`,
  ];
  if (info.deriver) lines.push(`Deriver: ${info.deriver.slice(STORE_DIR.length + 1)}`);
  for (const sig of info.sigs) lines.push(`Sig: ${sig}`);
  return `${lines.join('\n')}\n`;
}

/** Parses narinfo text; throws naming the missing or malformed field. */
export function parseNarInfo(text: string): NarInfo {
  const fields = new Map<string, string>();
  const sigs: string[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const colon = line.indexOf(': ');
    if (colon < 0) throw new Error(`narinfo line without "Key: value": ${JSON.stringify(line)}`);
    const key = line.slice(0, colon);
    const value = line.slice(colon + 2);
    if (key === 'Sig') sigs.push(value);
    else fields.set(key, value);
  }
  const need = (k: string): string => {
    const v = fields.get(k);
    if (v === undefined) throw new Error(`narinfo has no ${k} field`);
    return v;
  };
  const num = (k: string): number => {
    const v = Number(need(k));
    if (!Number.isSafeInteger(v) || v < 0)
      throw new Error(`narinfo field ${k} is not a size: ${fields.get(k)}`);
    return v;
  };
  const refs = (fields.get('References') ?? '').split(' ').filter(Boolean);
  const deriver = fields.get('Deriver');
  return {
    storePath: need('StorePath'),
    url: need('URL'),
    compression: fields.get('Compression') ?? 'bzip2',
    fileHash: fields.get('FileHash') ?? '',
    fileSize: fields.has('FileSize') ? num('FileSize') : 0,
    narHash: need('NarHash'),
    narSize: num('NarSize'),
    references: refs.map((r) => `${STORE_DIR}/${r}`),
    deriver: deriver && deriver !== 'unknown-deriver' ? `${STORE_DIR}/${deriver}` : undefined,
    sigs,
  };
}
