/** Loads the dashboard's static files into memory with their content types and ETags. */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { extname, join, relative, sep } from 'node:path';

export interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.json': 'application/json; charset=utf-8',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/** Every file under `dir` with a known type, keyed by its `/`-separated path relative to `dir`. */
export async function loadAssets(dir: string): Promise<Map<string, Asset>> {
  let entries: string[];
  try {
    entries = await readdir(dir, { recursive: true });
  } catch (err) {
    throw new Error(`mxc: cannot read the dashboard assets in ${dir}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const out = new Map<string, Asset>();
  for (const entry of entries) {
    const type = TYPES[extname(entry)];
    if (!type) continue;
    const full = join(dir, entry);
    const body = await readFile(full);
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
    out.set(relative(dir, full).split(sep).join('/'), { body, type, etag });
  }
  return out;
}
