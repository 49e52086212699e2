/**
 * Text no part of mxc stores or passes on: NUL bytes (PostgreSQL text and C strings end there) and
 * lone UTF-16 surrogates (not encodable as UTF-8). Found anywhere in a request or an agent message,
 * they are a coded 400 before any handler runs, never a 500 from deep inside the database.
 */
import { MxcError } from '../errors.js';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function badText(s: string): string | null {
  if (s.includes('\u0000')) return 'a NUL byte';
  if (LONE_SURROGATE.test(s)) return 'a lone UTF-16 surrogate';
  return null;
}

/** The JSON path and problem of the first bad string (values and keys) in `v`, or null. */
export function findBadText(v: unknown): { path: string; problem: string } | null {
  const found = findIn(v, 0);
  return found ? { path: found.keys.reverse().join('.') || '(value)', problem: found.problem } : null;
}

/**
 * Whether the checks here look into `v`: an object or array parsed from JSON, at most 64 levels deep
 * (a Buffer body or a stream is not parsed JSON).
 */
function isWalked(v: unknown, depth: number): v is object {
  if (v === null || typeof v !== 'object' || depth > 64) return false;
  return !Buffer.isBuffer(v) && typeof (v as { pipe?: unknown }).pipe !== 'function';
}

/** The walk behind findBadText: keys are collected innermost first, and only on the way out of a find,
 * so a clean message (an agent's thousands of store paths, every log line) builds no path strings. */
function findIn(v: unknown, depth: number): { keys: string[]; problem: string } | null {
  if (typeof v === 'string') {
    const p = badText(v);
    return p ? { keys: [], problem: p } : null;
  }
  if (!isWalked(v, depth)) return null;
  // Keys, not entries: no [key, value] array per property (this runs on every request's params and query).
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    const pk = badText(k);
    if (pk) return { keys: [k], problem: `${pk} in a key` };
    const found = findIn(o[k], depth + 1);
    if (found) {
      found.keys.push(k);
      return found;
    }
  }
  return null;
}

export function badTextError(where: string, found: { path: string; problem: string }): MxcError {
  return new MxcError(
    'BAD_CHARACTERS',
    400,
    `${where} holds ${found.problem} at ${found.path}; mxc accepts no NUL bytes and only well-formed Unicode`,
    { path: found.path },
  );
}

/**
 * Most keys one JSON object of a request may have: far above any map a request carries (a job's
 * environment has at most 1,024 variables), and checked before the schemas, which validate every entry
 * of a map before counting them (300,000 keys in a 4 MiB spec held the event loop ~3 s, and a strict
 * object listed every unknown key in a 7.5 MiB answer).
 */
export const MAX_OBJECT_KEYS = 4096;

/** The JSON path of the first object in `v` with more than MAX_OBJECT_KEYS keys, or null. */
export function findCrowdedObject(v: unknown, depth = 0): string | null {
  if (!isWalked(v, depth)) return null;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length > MAX_OBJECT_KEYS && !Array.isArray(v)) return '(value)';
  for (const k of keys) {
    const found = findCrowdedObject(o[k], depth + 1);
    if (found) return found === '(value)' ? k : `${k}.${found}`;
  }
  return null;
}

export function crowdedObjectError(where: string, path: string): MxcError {
  return new MxcError(
    'TOO_MANY_KEYS',
    400,
    `${where} holds an object with more than ${MAX_OBJECT_KEYS} keys at ${path}; no map mxc takes has that many`,
    { path },
  );
}
