/** The CLI's HTTP client: the coordinator URL and token, coded API errors turned into CliErrors. */
import { readSettings, SettingsError } from '../lib/settings.js';
import { CliError } from './errors.js';

export interface ClientOptions {
  coordinator?: string;
  token?: string;
  /** A file holding the token (--token-file; MXC_API_TOKEN_FILE in the environment). */
  tokenFile?: string;
}

/** The coordinator URL and token from flags and the environment, checked (bad values exit 2). */
function clientSettings(opts: ClientOptions) {
  try {
    return readSettings({
      roles: ['client'],
      flags: {
        MXC_COORDINATOR: { value: opts.coordinator, flag: '--coordinator' },
        MXC_API_TOKEN: { value: opts.token, flag: '--token' },
        MXC_API_TOKEN_FILE: { value: opts.tokenFile, flag: '--token-file' },
      },
    });
  } catch (err) {
    if (err instanceof SettingsError)
      throw new CliError(err.message.replace('refusing to start', 'stopped'), 2);
    throw err;
  }
}

export class ApiClient {
  readonly base: string;
  readonly token?: string;

  constructor(opts: ClientOptions) {
    const s = clientSettings(opts);
    this.base = s.MXC_COORDINATOR![0]!.replace(/\/+$/, '');
    this.token = s.MXC_API_TOKEN;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.token ? { authorization: `Bearer ${this.token}` } : {}), ...extra };
  }

  async raw(method: string, path: string, body?: unknown): Promise<Response> {
    try {
      return await fetch(`${this.base}${path}`, {
        method,
        headers: this.headers(body !== undefined ? { 'content-type': 'application/json' } : {}),
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    } catch (err) {
      throw new CliError(
        `cannot reach the coordinator at ${this.base} (${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}); start one with \`mxc up\` or set --coordinator / MXC_COORDINATOR`,
      );
    }
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body);
    const text = await res.text();
    let parsed: { data?: T; error?: { code: string; message: string; details?: { missing?: string[] } } } =
      {};
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      throw new CliError(
        `the coordinator answered ${res.status} with something that is not JSON: ${text.slice(0, 200)}`,
      );
    }
    if (!res.ok) {
      const e = parsed.error;
      const extra = e?.details?.missing ? `\n  ${e.details.missing.slice(0, 20).join('\n  ')}` : '';
      throw new CliError(
        e ? `${e.message} [${e.code}]${extra}` : `HTTP ${res.status}`,
        res.status === 401 ? 3 : 1,
      );
    }
    return parsed.data as T;
  }

  get<T>(path: string) {
    return this.request<T>('GET', path);
  }
  post<T>(path: string, body?: unknown) {
    return this.request<T>('POST', path, body ?? {});
  }
}
