/**
 * Learns which binary cache the agent realises closures from, and the one key it trusts for it:
 * the coordinator's served key, or the key pinned out of band when they differ.
 */
import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { AgentOptions } from './options.js';
import type { CacheTrust } from './realise.js';

/**
 * Asks the coordinator for its cache key. Undefined when it has none to give (or cannot be reached):
 * the caller then keeps whatever it trusted before.
 */
export async function fetchCacheTrust(
  opts: Pick<AgentOptions, 'coordinator' | 'token' | 'cachePublicKey' | 'stateDir'>,
  log: Logger,
): Promise<CacheTrust | undefined> {
  try {
    const res = await fetch(new URL('/api/cache/key', opts.coordinator), {
      headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
    });
    if (!res.ok) return undefined;
    const body = (await res.json()) as { data: { public_key: string } };
    let publicKey = body.data.public_key;
    if (opts.cachePublicKey && opts.cachePublicKey !== publicKey) {
      log.warn(
        { served: publicKey, pinned: opts.cachePublicKey },
        'the coordinator serves a cache key other than the pinned one; trusting only the pinned key',
      );
      publicKey = opts.cachePublicKey;
    }
    const url = new URL('/cache', opts.coordinator);
    let netrcFile: string | undefined;
    if (opts.token) {
      netrcFile = join(opts.stateDir, 'netrc');
      // A new file, owner-only from its creation, renamed over the old one: writing the old one in place
      // kept whatever mode it had (a netrc left 0644 showed the token to every user) and followed a
      // symlink in its place; a nix fetch reading it meanwhile never sees it half written.
      const tmp = `${netrcFile}.${randomBytes(4).toString('hex')}.tmp`;
      await writeFile(tmp, `machine ${url.hostname} login mxc password ${opts.token}\n`, {
        mode: 0o600,
        flag: 'wx',
      });
      await rename(tmp, netrcFile);
    }
    return { url: url.toString(), publicKey, netrcFile };
  } catch (err) {
    log.debug({ err }, 'no cache key from the coordinator');
    return undefined;
  }
}
