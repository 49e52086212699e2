/**
 * Reads mxc's settings (spec/settings.ts) from flags, the environment and secret files, and refuses
 * every bad value at once, before anything starts. A secret `X` may instead come from the file named
 * by `X_FILE` (systemd credentials, agenix, Kubernetes secrets): never from argv, never logged.
 */
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { SETTINGS, type SettingName, type SettingRole } from '../spec/settings.js';

type Table = (typeof SETTINGS)[number];

/** Parsed settings, keyed by variable; undefined when unset and without a default. */
export type Settings = { [S in Table as S['env']]: z.output<ReturnType<S['schema']>> | undefined };

/** Bad configuration: every problem found, one line each, naming the variable or flag. */
export class SettingsError extends Error {
  constructor(readonly problems: string[]) {
    super(`bad configuration, refusing to start:\n  ${problems.join('\n  ')}`);
    this.name = 'SettingsError';
  }
}

/** A value given on the command line: it wins over the environment; `flag` names it in errors. */
export interface FlagValue {
  value: string | undefined;
  flag: string;
}

export interface ReadSettingsOptions {
  /** Only the settings these roles read are checked (PORT=abc in a client's shell is not ours). */
  roles: SettingRole[];
  env?: NodeJS.ProcessEnv;
  /** Keyed by variable, or by `<secret>_FILE` for a file flag such as `--token-file`. */
  flags?: Partial<Record<SettingName | `${SettingName}_FILE`, FlagValue>>;
  /** Read only these (e.g. MXC_MODE before the role is known). */
  only?: SettingName[];
}

/**
 * A refused value as a problem may show it: the user info of every URL in it (`//user:password@`,
 * also percent-encoded inside a query parameter) masked, so a password never reaches a terminal or log.
 */
export function withoutCredentials(raw: string): string {
  return raw.replace(/\/\/[^/?#@\s]*@/g, '//***@').replace(/%2F%2F[^/?#&\s]*?%40/gi, '%2F%2F***%40');
}

/** Reads a secret file: the whole content without its trailing newline. */
function readSecretFile(path: string, label: string, problems: string[]): string | undefined {
  try {
    const v = readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    if (!v) problems.push(`${label}=${path}: the file is empty`);
    return v || undefined;
  } catch (err) {
    problems.push(`${label}=${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? err})`);
    return undefined;
  }
}

/** Reads and validates the settings `roles` use; throws SettingsError listing every problem. */
export function readSettings(opts: ReadSettingsOptions): Settings {
  const env = opts.env ?? process.env;
  const flags = (opts.flags ?? {}) as Record<string, FlagValue | undefined>;
  const set = (v: string | undefined) => (v !== undefined && v !== '' ? v : undefined);
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS as readonly (Table & { secret?: boolean; value?: string })[]) {
    if (!s.roles.some((r) => opts.roles.includes(r))) continue;
    if (opts.only && !opts.only.includes(s.env)) continue;
    let raw: string | undefined;
    let label: string = s.env;
    const flag = flags[s.env];
    const fileFlag = flags[`${s.env}_FILE`];
    const secretFile = s.secret ? (set(fileFlag?.value) ?? set(env[`${s.env}_FILE`])) : undefined;
    const fileLabel = set(fileFlag?.value) ? fileFlag!.flag : `${s.env}_FILE`;
    // The secret in the environment beside its file is refused, whichever a flag carries (commander
    // fills a flag from the environment too).
    if (secretFile !== undefined && set(env[s.env]) !== undefined)
      problems.push(
        `${s.env} and ${fileLabel} are both set: keep one (the file keeps it out of the environment)`,
      );
    if (set(flag?.value) !== undefined) {
      raw = flag!.value;
      label = `${flag!.flag} (${s.env})`;
    } else if (secretFile !== undefined) {
      raw = readSecretFile(secretFile, fileLabel, problems);
      label = fileLabel;
      if (raw === undefined) continue;
    } else {
      raw = set(env[s.env]) ?? s.value;
    }
    if (raw === undefined) {
      out[s.env] = undefined;
      continue;
    }
    const r = (s.schema() as z.ZodType).safeParse(raw);
    if (r.success) out[s.env] = r.data;
    else {
      const shown = s.secret ? '' : `="${withoutCredentials(raw)}"`;
      problems.push(`${label}${shown}: ${r.error.issues.map((i) => i.message).join('; ')}`);
    }
  }
  if (problems.length) throw new SettingsError(problems);
  return out as Settings;
}

/**
 * The PostgreSQL URL the coordinator opens, or undefined for embedded PGlite: DATABASE_URL (with
 * DATABASE_PASSWORD filled in when the URL has none), else one built from DATABASE_HOST and friends.
 */
export function databaseUrl(s: Settings): string | undefined {
  const password = s.DATABASE_PASSWORD;
  if (s.DATABASE_URL) {
    const u = new URL(s.DATABASE_URL);
    if (password && !u.password) u.password = password;
    return u.toString();
  }
  if (!s.DATABASE_HOST) return undefined;
  const auth = `${encodeURIComponent(s.DATABASE_USER ?? 'mxc')}${password ? `:${encodeURIComponent(password)}` : ''}`;
  const db = encodeURIComponent(s.DATABASE_NAME ?? 'mxc');
  const port = s.DATABASE_PORT ?? 5432;
  // A socket directory goes in the query string; pg reads it there.
  if (s.DATABASE_HOST.startsWith('/'))
    return `postgres://${auth}@/${db}?host=${encodeURIComponent(s.DATABASE_HOST)}&port=${port}`;
  const host = s.DATABASE_HOST.includes(':') ? `[${s.DATABASE_HOST}]` : s.DATABASE_HOST;
  return `postgres://${auth}@${host}:${port}/${db}`;
}
