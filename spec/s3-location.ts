/**
 * Where an S3-compatible bucket is, as one URL: `s3://bucket/prefix?endpoint=…&region=…&force_path_style=true`
 * (the query names follow Nix's own s3:// store URLs). Credentials never go in it: they come from
 * the AWS variables or their `_FILE` twins, so the URL is safe in argv and logs.
 */
import * as z from 'zod';

export interface S3Location {
  bucket: string;
  /** Key prefix, '' or ending in '/'. */
  prefix: string;
  /** http(s) endpoint of an S3-compatible server; unset means AWS itself. */
  endpoint?: string;
  region?: string;
  forcePathStyle: boolean;
}

const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const PREFIX_SEGMENT_RE = /^[A-Za-z0-9._-]+$/;
const REGION_RE = /^[a-z0-9-]{1,32}$/;
const KNOWN = ['endpoint', 'region', 'force_path_style'];

/** Parses an `s3://` URL; returns the location or the reasons it is refused. */
export function parseS3Location(text: string): S3Location | { problems: string[] } {
  let u: URL;
  try {
    u = new URL(text.trim());
  } catch {
    return { problems: ['must be an s3://bucket[/prefix][?endpoint=…&region=…&force_path_style=true] URL'] };
  }
  const problems: string[] = [];
  if (u.protocol !== 's3:') problems.push(`must start with s3://, not ${u.protocol}//`);
  if (u.username || u.password)
    problems.push(
      'must not carry credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or their _FILE twins)',
    );
  const bucket = u.hostname;
  if (!BUCKET_RE.test(bucket) || bucket.includes('..'))
    problems.push(`"${bucket}" is not a bucket name (3-63 of a-z, 0-9, '.', '-')`);
  if (u.port) problems.push('put the server in ?endpoint=http://host:port, not in the bucket part');
  const segments = decodeURIComponent(u.pathname).split('/').filter(Boolean);
  for (const s of segments) {
    if (!PREFIX_SEGMENT_RE.test(s) || s === '.' || s === '..')
      problems.push(`prefix segment "${s}" may only use A-Z, a-z, 0-9, '.', '_', '-'`);
  }
  for (const k of u.searchParams.keys()) {
    if (!KNOWN.includes(k)) problems.push(`unknown parameter "${k}" (known: ${KNOWN.join(', ')})`);
  }
  const endpoint = u.searchParams.get('endpoint') ?? undefined;
  if (endpoint !== undefined) {
    let e: URL | null = null;
    try {
      e = new URL(endpoint);
    } catch {}
    if (!e || !['http:', 'https:'].includes(e.protocol))
      problems.push('endpoint must be an http:// or https:// URL');
    else if (e.username || e.password) problems.push('endpoint must not carry credentials');
  }
  const region = u.searchParams.get('region') ?? undefined;
  if (region !== undefined && !REGION_RE.test(region)) problems.push(`"${region}" is not a region name`);
  const style = u.searchParams.get('force_path_style') ?? 'false';
  if (!['true', 'false'].includes(style)) problems.push('force_path_style must be true or false');
  if (problems.length) return { problems };
  return {
    bucket,
    prefix: segments.length ? `${segments.join('/')}/` : '',
    endpoint,
    region,
    forcePathStyle: style === 'true',
  };
}

/** The settings schema: text in, S3Location out, every problem named. */
export const s3LocationSchema = z.string().transform((s, ctx): S3Location => {
  const r = parseS3Location(s);
  if ('problems' in r) {
    for (const message of r.problems) ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  }
  return r;
});

/** How a location is shown in logs and errors (it never holds a secret). */
export function describeS3Location(l: S3Location): string {
  return `s3://${l.bucket}/${l.prefix}${l.endpoint ? ` at ${l.endpoint}` : ''}`;
}
