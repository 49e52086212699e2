/**
 * `mxc cluster status`'s GET, which bin/mxc.js sends before the CLI loads (bin/client-early.js): it is
 * exactly the request the CLI's client would send (same URL, same token, from the same settings), it
 * is sent only for the plain spellings, the client takes it over (one request reaches the coordinator)
 * or, when it is not its own, aborts it and sends its own. The real CLI against small node:http
 * servers that record what reached them.
 */
import http from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../cli/client.js';
import type { EarlyRequest } from '../../lib/http-answer.js';
import { ClusterStatus } from '../../spec/api.js';
import { mxc } from './up-harness.js';

const early = createRequire(import.meta.url)('../../bin/client-early.js') as {
  clusterStatusRequest(
    argv: string[],
    env: Record<string, string | undefined>,
  ): { method: string; href: string; headers: Record<string, string> } | null;
};

const STATUS = {
  node_count: 0,
  nodes_ready: 0,
  nodes_down: 0,
  nodes_draining: 0,
  workload_count: 0,
  workloads_by_status: {},
  workloads_running: 0,
  total_cpu: 0,
  total_memory_mb: 0,
  total_disk_mb: 0,
  used_cpu: 0,
  used_memory_mb: 0,
  used_disk_mb: 0,
  nodes_healthy: 0,
  available_cpu: 0,
  available_memory: 0,
  database: 'pglite',
};

/** A server on 127.0.0.1 answering every request with STATUS and recording its method, path and token. */
async function coordinator() {
  const seen: { method: string; url: string; authorization?: string }[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: STATUS }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { seen, url, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

const argv = (...rest: string[]) => ['node', 'mxc.js', 'cluster', 'status', ...rest];

describe('the early cluster status request', () => {
  it('is the request the client would send, for every environment it is sent in', () => {
    const envs: Record<string, string | undefined>[] = [
      {},
      { MXC_COORDINATOR: 'http://10.0.0.1:4000/' },
      { MXC_COORDINATOR: ' http://10.0.0.1:4000// , http://10.0.0.2:4000', MXC_API_TOKEN: 't0k en' },
      { MXC_COORDINATOR: 'http://[::1]:4000/prefix', MXC_API_TOKEN: '' },
      { MXC_COORDINATOR: '', MXC_API_TOKEN: 'x' },
    ];
    const saved = { ...process.env };
    try {
      for (const env of envs) {
        const r = early.clusterStatusRequest(argv('--json'), env);
        setEnv(env);
        const client = new ApiClient({});
        expect(r, JSON.stringify(env)).toEqual({
          method: 'GET',
          href: new URL(`${client.base}/api/cluster/status`).href,
          headers: client.headers(),
        });
      }
    } finally {
      setEnv(saved);
    }
  });

  it('is not sent for other spellings, a token file, a list the settings refuse, or https', () => {
    for (const rest of [['-c', 'http://x:1'], ['--token', 't'], ['-f', 'json'], ['--help'], ['x']])
      expect(early.clusterStatusRequest(argv(...rest), {}), rest.join(' ')).toBeNull();
    expect(
      early.clusterStatusRequest(['node', 'mxc.js', '-c', 'http://x:1', 'cluster', 'status'], {}),
    ).toBeNull();
    expect(early.clusterStatusRequest(['node', 'mxc.js', 'nodes', 'list'], {})).toBeNull();
    for (const env of [
      { MXC_API_TOKEN_FILE: '/run/secrets/api' },
      { MXC_COORDINATOR: 'http://ok:1,ftp://no' },
      { MXC_COORDINATOR: 'not a url' },
      { MXC_COORDINATOR: 'https://10.0.0.1:4000' },
    ])
      expect(early.clusterStatusRequest(argv(), env), JSON.stringify(env)).toBeNull();
  });

  describe('through the real CLI', () => {
    let c: Awaited<ReturnType<typeof coordinator>>;
    beforeAll(async () => {
      c = await coordinator();
    });
    afterAll(async () => {
      await c.close();
    });

    it('reaches the coordinator once, with the token, and prints its answer', async () => {
      c.seen.length = 0;
      const r = await mxc(['cluster', 'status', '--json'], {
        env: { MXC_COORDINATOR: c.url, MXC_API_TOKEN: 'early-token', MXC_API_TOKEN_FILE: '' },
      });
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ coordinator: c.url, database: 'pglite', node_count: 0 });
      expect(c.seen).toEqual([
        { method: 'GET', url: '/api/cluster/status', authorization: 'Bearer early-token' },
      ]);
    });

    it('without the early request (an option it leaves to the CLI) still reaches it once', async () => {
      c.seen.length = 0;
      const r = await mxc(['cluster', 'status', '-c', c.url], {
        env: { MXC_API_TOKEN: '', MXC_API_TOKEN_FILE: '' },
      });
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toContain(`coordinator   ${c.url}`);
      expect(c.seen).toEqual([{ method: 'GET', url: '/api/cluster/status', authorization: undefined }]);
    });

    it('prints, without commander, what the command prints through it (tables, JSON, errors)', async () => {
      // The plain spelling, with its settings in the environment (the early request; main() runs the
      // command without commander), against the same settings as options (commander reads them).
      const bare = { MXC_API_TOKEN: '', MXC_API_TOKEN_FILE: '' };
      const seen = (r: Awaited<ReturnType<typeof mxc>>) => ({
        stdout: r.stdout,
        stderr: r.stderr,
        exitCode: r.exitCode,
      });
      for (const [url, token] of [
        [c.url, 'a-token'],
        ['http://127.0.0.1:1', ''],
      ] as const)
        for (const json of [[], ['--json']]) {
          const plain = await mxc(['cluster', 'status', ...json], {
            env: { ...bare, MXC_COORDINATOR: url, MXC_API_TOKEN: token },
          });
          const spelled = await mxc(['cluster', 'status', ...json, '-c', url, '--token', token], {
            env: { ...bare, MXC_COORDINATOR: '' },
          });
          expect(seen(plain), `${url} ${json}`).toEqual(seen(spelled));
        }
    });

    it('an early request that is not the client’s own is aborted and the client sends its own', async () => {
      c.seen.length = 0;
      let aborted = false;
      const other: EarlyRequest = {
        method: 'GET',
        href: `${c.url}/api/somewhere-else`,
        headers: {},
        answer: new Promise(() => {}),
        abort: () => {
          aborted = true;
        },
      };
      const client = new ApiClient({ coordinator: c.url, early: other });
      expect(await client.get('/api/cluster/status', ClusterStatus)).toMatchObject({ database: 'pglite' });
      expect(aborted).toBe(true);
      expect(c.seen.map((s) => s.url)).toEqual(['/api/cluster/status']);
    });
  });
});

/** ApiClient reads its settings from the environment (lib/settings.ts): these three as in `env`. */
function setEnv(env: Record<string, string | undefined>) {
  for (const k of ['MXC_COORDINATOR', 'MXC_API_TOKEN', 'MXC_API_TOKEN_FILE']) {
    if (env[k] === undefined) delete process.env[k];
    else process.env[k] = env[k];
  }
}
