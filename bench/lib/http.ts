/** Minimal JSON-over-HTTP helpers for talking to the coordinator's API from a benchmark. */

export async function getJson<T>(url: string, token?: string): Promise<T> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const body = (await res.json()) as { data?: T; error?: { message: string } };
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${body.error?.message ?? ''}`);
  return body.data as T;
}

export async function postJson<T>(url: string, payload: unknown, token?: string): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(payload),
  });
  const body = (await res.json()) as { data?: T; error?: { message: string } };
  if (!res.ok) throw new Error(`POST ${url}: ${res.status} ${body.error?.message ?? JSON.stringify(body)}`);
  return body.data as T;
}

/** Runs `fn(i)` for i in 0..count-1 with at most `concurrency` in flight. */
export async function pool(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < count) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
}
