// bin/deferred-ca.js: NODE_EXTRA_CA_CERTS handed over by bin/mxc.js's shebang is put back for child
// processes and trusted at the first TLS context, as Node would at its start: a real https server with
// a certificate of our own CA (made by openssl), real connections. tls.createSecureContext is put back
// after each test (this file's worker alone sees it).

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, get, type Server } from 'node:https';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { repoPath } from '../../scheduler/paths.js';
import { selfSignedCert } from '../helpers/tls-cert.js';

const deferredCa = createRequire(import.meta.url)(repoPath('bin', 'deferred-ca.js')) as {
  HANDOVER: string;
  take(env?: Record<string, string | undefined>): string | undefined;
  trust(file: string): void;
};
const createSecureContext = tls.createSecureContext;
let dir: string;
let caFile: string;
let keyFile: string;
let server: Server;
let url: string;

/** A GET of the test server with Node's default trust (whatever createSecureContext gives). */
function fetchStatus(opts: { ca?: string } = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, { ...opts, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mxc-deferred-ca-'));
  ({ cert: caFile, key: keyFile } = await selfSignedCert(dir, 'mxc deferred ca test', 'IP:127.0.0.1'));
  server = createServer({ key: await readFile(keyFile), cert: await readFile(caFile) }, (_req, res) =>
    res.end('ok'),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});
afterEach(() => {
  tls.createSecureContext = createSecureContext;
});
afterAll(async () => {
  await new Promise((resolve) => server?.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

describe('take', () => {
  test('puts NODE_EXTRA_CA_CERTS back as the user set it, or leaves it unset, and removes the handover', () => {
    const set: Record<string, string | undefined> = { [deferredCa.HANDOVER]: '/etc/my ca.pem', HOME: '/h' };
    expect(deferredCa.take(set)).toBe('/etc/my ca.pem');
    expect(set).toEqual({ NODE_EXTRA_CA_CERTS: '/etc/my ca.pem', HOME: '/h' });
    const unset: Record<string, string | undefined> = { [deferredCa.HANDOVER]: '' };
    expect(deferredCa.take(unset)).toBe('');
    expect(unset).toEqual({});
    const other: Record<string, string | undefined> = { NODE_EXTRA_CA_CERTS: '/x.pem' };
    expect(deferredCa.take(other)).toBeUndefined();
    expect(other).toEqual({ NODE_EXTRA_CA_CERTS: '/x.pem' });
  });
});

describe('trust', () => {
  test('a connection without its own ca trusts the file’s certificates; one with its own ca keeps to it', async () => {
    await expect(fetchStatus()).rejects.toThrow(/self.signed|certificate/i);
    deferredCa.trust(caFile);
    expect(await fetchStatus()).toBe(200);
    // A falsy ca is no ca of its own, as Node reads it: the file's certificates are trusted there too.
    expect(await fetchStatus({ ca: '' })).toBe(200);
    // A caller's own ca (here Node's roots alone) is kept to: the file's certificate is not added to it.
    await expect(fetchStatus({ ca: tls.rootCertificates.join('\n') })).rejects.toThrow(
      /self.signed|certificate/i,
    );
  });

  test('contexts without an identity of their own are shared by settings; with one, each is new', async () => {
    deferredCa.trust(caFile);
    const a = tls.createSecureContext({});
    expect(tls.createSecureContext()).toBe(a);
    expect(tls.createSecureContext({ servername: 'x' } as tls.SecureContextOptions)).toBe(a);
    const tls13 = tls.createSecureContext({ minVersion: 'TLSv1.3' });
    expect(tls13).not.toBe(a);
    expect(tls.createSecureContext({ minVersion: 'TLSv1.3' })).toBe(tls13);
    const key = await readFile(keyFile);
    const cert = await readFile(caFile);
    expect(tls.createSecureContext({ key, cert })).not.toBe(tls.createSecureContext({ key, cert }));
  });

  test('an unreadable file is reported as Node reports it, and only Node’s roots are trusted', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      deferredCa.trust(join(dir, 'missing.pem'));
      await expect(fetchStatus()).rejects.toThrow(/self.signed|certificate/i);
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.join('\n')).toMatch(
        /Ignoring extra certs from `.*missing\.pem`, load failed: .*ENOENT/,
      );
    } finally {
      process.off('warning', onWarning);
    }
  });
});
