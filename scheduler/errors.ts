/**
 * Coded errors: every error the API returns has a stable code, an HTTP status and a message that
 * says what to do. Thrown anywhere in the coordinator, turned into JSON by the one error handler.
 */
export class MxcError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly details?: unknown,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MxcError';
  }
}

export const errors = {
  unauthorized: (what: string) =>
    new MxcError(
      'UNAUTHORIZED',
      401,
      `missing or wrong ${what} token: pass it as "Authorization: Bearer <token>" (mxc: --token-file or MXC_API_TOKEN_FILE, --token or MXC_API_TOKEN)`,
    ),
  validation: (what: string, problems: string[]) =>
    new MxcError('VALIDATION_FAILED', 422, `${what} is invalid:\n  ${problems.join('\n  ')}`, { problems }),
  badRequest: (message: string) => new MxcError('BAD_REQUEST', 400, message),
  notFound: (kind: string, id: string) =>
    new MxcError('NOT_FOUND', 404, `${kind} "${id}" not found; list them with \`mxc ${kind}s list\``),
  conflict: (code: string, message: string, cause?: unknown) =>
    new MxcError(code, 409, message, undefined, cause === undefined ? undefined : { cause }),
  closureIncomplete: (missing: string[]) =>
    new MxcError(
      'CLOSURE_INCOMPLETE',
      422,
      `the job's closure is not complete in the coordinator's cache (${missing.length} path(s) missing); push it with \`mxc submit\`, which uploads what is missing`,
      { missing },
    ),
} as const;

/**
 * A request's URL as the log may show it: a `?token=` (the dashboard's event stream, a browser's
 * WebSocket) is a credential, and a log line naming the URL wrote it whole. Its name is matched as the
 * query parser reads it (`%74oken=` is a token too).
 */
export function loggedUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const pairs = url.slice(q + 1).split('&');
  for (let i = 0; i < pairs.length; i++) {
    const eq = pairs[i]!.indexOf('=');
    const name = eq < 0 ? pairs[i]! : pairs[i]!.slice(0, eq);
    let decoded = name;
    try {
      decoded = decodeURIComponent(name.replaceAll('+', ' '));
    } catch {
      // not decodable: the parser keeps it as it is
    }
    if (decoded === 'token') pairs[i] = `${name}=[redacted]`;
  }
  return `${url.slice(0, q)}?${pairs.join('&')}`;
}
