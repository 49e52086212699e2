/**
 * A self-signed certificate (its own CA) for TLS tests, made by openssl: an EC P-256 key and a
 * certificate valid for a day, with the subject alternative names given (say `IP:127.0.0.1`).
 */
import { join } from 'node:path';
import { run } from '../../lib/exec.js';

export async function selfSignedCert(
  dir: string,
  subject: string,
  altNames: string,
): Promise<{ cert: string; key: string }> {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '1',
    '-subj',
    `/CN=${subject}`,
    '-addext',
    `subjectAltName=${altNames}`,
  ]);
  return { cert, key };
}
