/** A small client for the coordinator's /api/events server-sent events: each change with its receive time. */

export interface ChangeSeen {
  kind: string;
  id: string;
  status?: string;
  /** performance.now() when it arrived. */
  at: number;
}

export interface EventStream {
  close(): void;
}

/** Subscribes; resolves once the stream is open. `onEvent` sees every `data:` event. */
export async function subscribeEvents(url: string, onEvent: (e: ChangeSeen) => void): Promise<EventStream> {
  const ac = new AbortController();
  const res = await fetch(`${url}/api/events`, { signal: ac.signal });
  if (!res.ok || !res.body) throw new Error(`GET ${url}/api/events: ${res.status}`);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  void (async () => {
    let buf = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        const at = performance.now();
        buf += decoder.decode(value, { stream: true });
        let sep = buf.indexOf('\n\n');
        while (sep >= 0) {
          const block = buf.slice(0, sep);
          buf = buf.slice(sep + 2);
          for (const line of block.split('\n')) {
            if (line.startsWith('data: '))
              onEvent({ ...(JSON.parse(line.slice(6)) as Omit<ChangeSeen, 'at'>), at });
          }
          sep = buf.indexOf('\n\n');
        }
      }
    } catch {
      // aborted on close
    }
  })();
  return { close: () => ac.abort() };
}
