/**
 * The dashboard's only door to the coordinator: JSON calls with the client token, the server-sent
 * change feed, and followed log streams. The token lives in localStorage, so a new tab is signed in
 * too; logging out (or a 401) forgets it.
 */

const TOKEN_KEY = 'mxc.token';

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || '',
  set: (t) => localStorage.setItem(TOKEN_KEY, t),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

/** An API error as the coordinator sends it: `{ error: { code, message, details } }`. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

let unauthorized = () => {};
/** Called on any 401, so the app can fall back to the login form. */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

function authHeaders() {
  const t = token.get();
  return t ? { authorization: `Bearer ${t}` } : {};
}

/** Calls the API and returns its `data`; throws ApiError. A string body is sent as is (already JSON). */
export async function api(method, path, body) {
  const headers = authHeaders();
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, 'NETWORK', `cannot reach the coordinator (${err.message}); is it running?`);
  }
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: reported below with the raw text
  }
  if (!res.ok) {
    const e = json?.error;
    const err = new ApiError(
      res.status,
      e?.code ?? `HTTP_${res.status}`,
      e?.message ?? (text || res.statusText),
      e?.details,
    );
    if (res.status === 401) unauthorized(err);
    throw err;
  }
  return json?.data;
}

/** Every item of a paged list (`{data, next_cursor}`), following the cursor page after page. */
export async function apiAll(path) {
  const out = [];
  let cursor = null;
  do {
    const q = new URLSearchParams({ limit: '1000' });
    if (cursor) q.set('cursor', cursor);
    const res = await fetch(`${path}${path.includes('?') ? '&' : '?'}${q}`, { headers: authHeaders() });
    const json = await res.json().catch(() => null);
    if (!res.ok) {
      const e = json?.error;
      const err = new ApiError(
        res.status,
        e?.code ?? `HTTP_${res.status}`,
        e?.message ?? res.statusText,
        e?.details,
      );
      if (res.status === 401) unauthorized(err);
      throw err;
    }
    out.push(...json.data);
    cursor = json.next_cursor;
  } while (cursor);
  return out;
}

/** GET that answers null instead of throwing when the endpoint is absent (optional features). */
export async function optional(path) {
  try {
    return await api('GET', path);
  } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
}

/**
 * Opens the change feed. EventSource cannot set headers, so the token goes in the query.
 * `onState` gets 'live' | 'reconnecting'; after a reconnect the caller should re-fetch (events were missed).
 */
export function openEvents(onEvent, onState) {
  const t = token.get();
  const es = new EventSource(`/api/events${t ? `?token=${encodeURIComponent(t)}` : ''}`);
  let wasDown = false;
  es.onopen = () => {
    onState('live', wasDown);
    wasDown = false;
  };
  es.onerror = () => {
    wasDown = true;
    onState('reconnecting', false);
  };
  es.onmessage = (m) => {
    try {
      onEvent(JSON.parse(m.data));
    } catch {
      // a malformed event is skipped; the next refresh shows the truth anyway
    }
  };
  return () => es.close();
}

/**
 * Follows a workload's logs (NDJSON over a long response) and calls `onLines(rows)` per chunk.
 * Resolves when the stream ends (the workload finished) or `signal` aborts.
 */
export async function followLogs(workloadId, { process, after = 0, signal, onLines }) {
  const q = new URLSearchParams({ follow: '1', after: String(after), limit: '2000' });
  if (process) q.set('process', process);
  const res = await fetch(`/api/workloads/${encodeURIComponent(workloadId)}/logs?${q}`, {
    headers: authHeaders(),
    signal,
  });
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    if (res.status === 401) unauthorized();
    throw new ApiError(
      res.status,
      body?.error?.code ?? `HTTP_${res.status}`,
      body?.error?.message ?? res.statusText,
    );
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const lines = (rest + value).split('\n');
    rest = lines.pop();
    const rows = [];
    for (const l of lines) if (l.trim()) rows.push(JSON.parse(l));
    if (rows.length) onLines(rows);
  }
}
