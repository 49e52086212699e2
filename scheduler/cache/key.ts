/**
 * The cache's ed25519 signing key in the format of `nix-store --generate-binary-cache-key`: a key file
 * given to every coordinator, one kept in the cache directory, or one shared through PostgreSQL.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';
import { chmod, link, mkdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CacheError } from './errors.js';

export const DEFAULT_KEY_NAME = 'mxc-1';
export const SECRET_KEY_FILE = 'secret.key';
export const PUBLIC_KEY_FILE = 'public.key';

export interface CacheKey {
  name: string;
  /** `name:base64(32-byte public key)`, what goes into `trusted-public-keys`. */
  publicKey: string;
  privateKey: KeyObject;
}

const KEY_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

function b64url(buf: Buffer): string {
  return buf.toString('base64url');
}

/** Parses `name:base64(seed ‖ pub)` (nix's secret key file) into a usable key. */
export function parseSecretKey(text: string, source: string): CacheKey {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(':');
  const raw = colon > 0 ? Buffer.from(trimmed.slice(colon + 1), 'base64') : Buffer.alloc(0);
  if (colon <= 0 || raw.length !== 64) {
    throw new CacheError(
      'CACHE_KEY_INVALID',
      500,
      `${source} is not a nix binary cache secret key ("name:base64 of 64 bytes"); ` +
        'move it away to let mxc create a new key (agents must then trust the new public key)',
    );
  }
  const name = trimmed.slice(0, colon);
  const seed = raw.subarray(0, 32);
  const pub = raw.subarray(32);
  const privateKey = createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', d: b64url(seed), x: b64url(pub) },
    format: 'jwk',
  });
  // A file whose public half does not belong to its seed would make every signature unverifiable.
  const derived = Buffer.from(createPublicKey(privateKey).export({ format: 'jwk' }).x ?? '', 'base64url');
  if (!derived.equals(pub)) {
    throw new CacheError('CACHE_KEY_INVALID', 500, `${source}: the public half does not match the seed`);
  }
  return { name, publicKey: `${name}:${pub.toString('base64')}`, privateKey };
}

/** Signs a narinfo fingerprint: `name:base64(signature)`. */
export function signFingerprint(key: CacheKey, fp: string): string {
  return `${key.name}:${sign(null, Buffer.from(fp, 'utf8'), key.privateKey).toString('base64')}`;
}

/** Public halves derived so far, by private key: a check of a signature derives none. */
const publicHalves = new WeakMap<KeyObject, KeyObject>();

/**
 * Whether `sigs` hold a valid signature of the fingerprint by this key; null when none of them is by
 * a key of this name (a narinfo signed elsewhere, which this cache cannot check).
 */
export function signedByKey(key: CacheKey, fp: string, sigs: readonly string[]): boolean | null {
  const own = sigs.filter((s) => s.startsWith(`${key.name}:`));
  if (own.length === 0) return null;
  let pub = publicHalves.get(key.privateKey);
  if (!pub) {
    pub = createPublicKey(key.privateKey);
    publicHalves.set(key.privateKey, pub);
  }
  const data = Buffer.from(fp, 'utf8');
  return own.some((s) => {
    const sig = Buffer.from(s.slice(key.name.length + 1), 'base64');
    return sig.length === 64 && verify(null, data, pub, sig);
  });
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot read ${path}`, { cause: err });
  }
}

/**
 * Loads the cache key from `<cacheDir>`, creating it on first start. Creation is exclusive
 * (link of a finished temp file), so two coordinators starting at once end up with the same key.
 */
export async function loadOrCreateKey(cacheDir: string, keyName = DEFAULT_KEY_NAME): Promise<CacheKey> {
  if (!KEY_NAME_RE.test(keyName)) {
    throw new CacheError(
      'CACHE_KEY_NAME_INVALID',
      500,
      `cache key name "${keyName}" must match ${KEY_NAME_RE}`,
    );
  }
  await mkdir(cacheDir, { recursive: true });
  const secretPath = join(cacheDir, SECRET_KEY_FILE);
  let text = await readIfExists(secretPath);
  if (text === null) {
    const tmp = `${secretPath}.${randomBytes(8).toString('hex')}.tmp`;
    await writeFile(tmp, generateSecretKey(keyName), { mode: 0o600 });
    try {
      await link(tmp, secretPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new Error('cannot store cache key', { cause: err });
    } finally {
      await unlink(tmp).catch(() => {});
    }
    text = await readFile(secretPath, 'utf8');
  }
  // The secret must stay private even if someone copied it in with a loose umask.
  const st = await stat(secretPath);
  if ((st.mode & 0o077) !== 0) await chmod(secretPath, 0o600);
  const key = checkName(parseSecretKey(text, secretPath), keyName, secretPath, 'move the key file away');
  const pubPath = join(cacheDir, PUBLIC_KEY_FILE);
  if ((await readIfExists(pubPath))?.trim() !== key.publicKey)
    await writeFile(pubPath, key.publicKey, { mode: 0o644 });
  return key;
}

/** A new secret key as nix writes it: `name:base64(seed ‖ public key)`. */
export function generateSecretKey(keyName: string): string {
  const jwk = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
  const seed = Buffer.from(jwk.d ?? '', 'base64url');
  const pub = Buffer.from(jwk.x ?? '', 'base64url');
  return `${keyName}:${Buffer.concat([seed, pub]).toString('base64')}`;
}

function checkName(key: CacheKey, keyName: string, source: string, remedy: string): CacheKey {
  if (key.name === keyName) return key;
  throw new CacheError(
    'CACHE_KEY_NAME_MISMATCH',
    500,
    `${source} holds key "${key.name}" but the cache was configured with key name "${keyName}"; ` +
      `configure "${key.name}", or ${remedy} to create a new key`,
  );
}

/** A key file given to the coordinator (MXC_CACHE_KEY_FILE); its name is the key's. */
export async function loadKeyFile(path: string): Promise<CacheKey> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new CacheError(
      'CACHE_KEY_INVALID',
      500,
      `cannot read the cache key file ${path} (${(err as NodeJS.ErrnoException).code ?? err}); ` +
        'create one with `nix-store --generate-binary-cache-key <name> secret.key public.key`',
      { cause: err },
    );
  }
  return parseSecretKey(text, path);
}

/** Where several coordinators keep one key (PostgreSQL's mxc_settings); the first writer wins. */
export interface SharedKeyStore {
  read(): Promise<string | null>;
  insertIfAbsent(secret: string): Promise<void>;
}

/**
 * The key all coordinators on one database share: the first to start generates it and inserts it
 * unless another was faster; everyone signs with what the database then holds.
 */
export async function loadOrCreateSharedKey(
  shared: SharedKeyStore,
  keyName = DEFAULT_KEY_NAME,
): Promise<CacheKey> {
  if (!KEY_NAME_RE.test(keyName)) {
    throw new CacheError(
      'CACHE_KEY_NAME_INVALID',
      500,
      `cache key name "${keyName}" must match ${KEY_NAME_RE}`,
    );
  }
  let text = await shared.read();
  if (text === null) {
    await shared.insertIfAbsent(generateSecretKey(keyName));
    text = await shared.read();
    if (text === null) throw new Error('the shared cache key was inserted but cannot be read back');
  }
  return checkName(
    parseSecretKey(text, 'the cache key in the database (mxc_settings)'),
    keyName,
    'the database (mxc_settings cache_signing_key)',
    'give a key file with MXC_CACHE_KEY_FILE',
  );
}
