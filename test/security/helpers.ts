/**
 * Tools of the security suite: raw HTTP requests whose path is sent byte for byte (no client-side
 * normalisation), and a snapshot of everything an attack could change (jobs, workloads, nodes, tokens,
 * the cache), compared before and after.
 */
import { request } from 'node:http';
import type { Queryable } from '../../scheduler/store/db.js';

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any;
}

/** One HTTP request with `path` exactly as given (node:http sends it unchanged). */
export function rawRequest(
  base: string,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<RawResponse> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        method,
        path,
        headers: {
          ...(opts.body !== undefined ? { 'content-length': String(Buffer.byteLength(opts.body)) } : {}),
          ...opts.headers,
        },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

/** Everything a refused request must leave as it was. */
export async function snapshot(db: Queryable, cacheDir?: string): Promise<string> {
  const tables = [
    'SELECT id, key, current_version, status FROM jobs ORDER BY id',
    'SELECT job_id, version FROM job_versions ORDER BY job_id, version',
    'SELECT id, status, node_id, job_version FROM workloads ORDER BY id',
    'SELECT id, name, status FROM nodes ORDER BY id',
    'SELECT name, kind, token_hash FROM api_tokens ORDER BY name',
  ];
  const parts: unknown[] = [];
  for (const sql of tables) {
    try {
      parts.push(await db.query(sql));
    } catch (err) {
      // A column renamed by another change must not hide the rest: record the error text.
      parts.push(String(err));
    }
  }
  if (cacheDir) {
    const { readdir } = await import('node:fs/promises');
    const { join } = await import('node:path');
    for (const sub of ['narinfo', 'nar', 'pack']) {
      parts.push(((await readdir(join(cacheDir, sub)).catch(() => [])) as string[]).sort());
    }
  }
  return JSON.stringify(parts);
}

const pct = (c: string) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`;

/** The same route spelled the ways fastify, a proxy or a sloppy check might read differently. */
export function variants(path: string): string[] {
  const [, first = '', ...rest] = path.split('/');
  const tail = rest.length ? `/${rest.join('/')}` : '';
  const firstEnc = `/${pct(first[0]!)}${first.slice(1)}${tail}`; // /%61pi/…, /%6detrics
  const allEnc = path
    .split('/')
    .map((seg) => [...seg].map((c) => (/[a-z]/i.test(c) ? pct(c) : c)).join(''))
    .join('/');
  return [
    path,
    firstEnc,
    firstEnc.replace(/%([0-9a-f]{2})/g, (_m, h: string) => `%${h.toUpperCase()}`),
    allEnc,
    path.replace(/\//g, '%2F'),
    path.replace(/\//g, '%2f').replace(/^%2f/, '/'),
    `/${path}`,
    `//${path.slice(1).replace(/\//g, '//')}`,
    `/.${path}`,
    `/%2e${path}`,
    `/${first}/..${path}`,
    `/${first}/%2e%2e${path}`,
    `${path}/`,
    `${path}/.`,
    path.toUpperCase(),
    `/${first.toUpperCase()}${tail}`,
    `${path};`,
    `${path};x=1`,
    `/${first};${tail}`,
    `/${first}%3B${tail}`,
    `${path}%00`,
    `${path}?token=`,
    `${path}#`,
    `${path}%23`,
    `/${first}\\${tail.slice(1)}`,
  ];
}
