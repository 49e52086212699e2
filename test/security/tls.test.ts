// TLS (issue 12.7): a coordinator started with a certificate serves HTTPS; a real agent process joins
// over wss:// trusting the certificate through NODE_EXTRA_CA_CERTS, the CLI reads over https://, and
// without the CA both refuse the connection. The certificate is made by openssl in the test.

import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { nixBuild } from '../../lib/nix.js';
import { repoPath } from '../../scheduler/paths.js';
import { type CoordinatorServer, startCoordinator } from '../../scheduler/server.js';
import { type DaemonProcess, MXC_BIN, startDaemon } from '../helpers/daemon-process.js';
import { testLogger } from '../helpers/logger.js';
import { eventually } from '../helpers/protocol-agent.js';
import { selfSignedCert } from '../helpers/tls-cert.js';

const TOKENS = { api: 'tls-client', agent: 'tls-join' };
let dir: string;
let server: CoordinatorServer;
let agent: DaemonProcess | null = null;
let cert: string;

/** GET over https trusting only our certificate. */
function httpsGet(url: string, ca?: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, headers: { authorization: `Bearer ${TOKENS.api}` } }, (res) => {
      let text = '';
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mxc-tls-'));
  const made = await selfSignedCert(dir, 'mxc test coordinator', 'IP:127.0.0.1,DNS:localhost');
  cert = made.cert;
  server = await startCoordinator({
    port: 0,
    dataDir: join(dir, 'coordinator'),
    tokens: TOKENS,
    logger: testLogger(),
    tls: { certFile: cert, keyFile: made.key },
  });
});
afterAll(async () => {
  await agent?.stop();
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

test('the coordinator serves https; untrusted clients are refused', async () => {
  expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  const ok = await httpsGet(`${server.url}/api/cluster/status`, readFileSync(cert, 'utf8'));
  expect(ok.status).toBe(200);
  await expect(httpsGet(`${server.url}/api/cluster/status`)).rejects.toThrow(/self.signed|certificate/i);
  await expect(fetch(`${server.url.replace('https', 'http')}/healthz`)).rejects.toThrow();
});

test('a real agent joins over wss:// with the CA from NODE_EXTRA_CA_CERTS, and the CLI reads over https://', async () => {
  const tokenFile = join(dir, 'join');
  await writeFile(tokenFile, TOKENS.agent, { mode: 0o600 });
  const args = ['agent', '--coordinator', server.url, '--token-file', tokenFile, '--name', 'tls-agent'];
  args.push(
    '--state-dir',
    join(dir, 'agent'),
    '--store-root',
    join(dir, 'store'),
    '--cpu',
    '1',
    '--memory',
    '256',
  );
  agent = startDaemon(process.execPath, [MXC_BIN, ...args], {
    NODE_EXTRA_CA_CERTS: cert,
    MXC_LOG_FORMAT: 'json',
  });
  const ca = readFileSync(cert, 'utf8');
  await eventually(
    async () => {
      const r = await httpsGet(`${server.url}/api/nodes`, ca);
      return r.body.data?.some(
        (n: { name: string; status: string }) => n.name === 'tls-agent' && n.status === 'ready',
      );
    },
    60_000,
    'the agent to join over wss://',
  );
  const cli = (env: Record<string, string>) =>
    execa(process.execPath, [MXC_BIN, 'nodes', 'list', '--json', '--coordinator', server.url], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, MXC_API_TOKEN: TOKENS.api, ...env },
      extendEnv: false,
      reject: false,
    });
  const trusted = await cli({ NODE_EXTRA_CA_CERTS: cert });
  expect(trusted.exitCode, trusted.stderr).toBe(0);
  expect(JSON.parse(trusted.stdout).map((n: { name: string }) => n.name)).toContain('tls-agent');
  const untrusted = await cli({});
  expect(untrusted.exitCode).not.toBe(0);
});

test('run as `mxc` through its shebang (which starts Node without NODE_EXTRA_CA_CERTS), an agent, the CLI and mxc push still trust it', async () => {
  const tokenFile = join(dir, 'join');
  await writeFile(tokenFile, TOKENS.agent, { mode: 0o600 });
  const viaShebang = startDaemon(
    MXC_BIN,
    ['agent', '--coordinator', server.url, '--token-file', tokenFile, '--name', 'tls-shebang-agent'].concat(
      ['--state-dir', join(dir, 'agent-shebang'), '--store-root', join(dir, 'store-shebang')],
      ['--cpu', '1', '--memory', '256'],
    ),
    { NODE_EXTRA_CA_CERTS: cert },
  );
  try {
    const ca = readFileSync(cert, 'utf8');
    await eventually(
      async () =>
        (await httpsGet(`${server.url}/api/nodes`, ca)).body.data?.some(
          (n: { name: string; status: string }) => n.name === 'tls-shebang-agent' && n.status === 'ready',
        ),
      60_000,
      'the agent started through its shebang to join over wss://',
    );
    const cli = (args: string[], env: Record<string, string>) =>
      execa(MXC_BIN, [...args, '--coordinator', server.url], {
        env: { PATH: process.env.PATH, HOME: process.env.HOME, MXC_API_TOKEN: TOKENS.api, ...env },
        extendEnv: false,
        reject: false,
      });
    const trusted = await cli(['nodes', 'list', '--json'], { NODE_EXTRA_CA_CERTS: cert });
    expect(trusted.exitCode, trusted.stderr).toBe(0);
    expect(JSON.parse(trusted.stdout).map((n: { name: string }) => n.name)).toContain('tls-shebang-agent');
    const untrusted = await cli(['nodes', 'list', '--json'], {});
    expect(untrusted.exitCode).not.toBe(0);
    const missing = await cli(['nodes', 'list', '--json'], { NODE_EXTRA_CA_CERTS: join(dir, 'missing.pem') });
    expect(missing.exitCode).not.toBe(0);
    expect(missing.stderr).toMatch(/Ignoring extra certs from `.*missing\.pem`/);

    const [root] = (await nixBuild([repoPath('examples', 'hello_world')])) as [string];
    const push = await cli(['push', '--json', root], { NODE_EXTRA_CA_CERTS: cert });
    expect(push.exitCode, push.stderr).toBe(0);
    expect(JSON.parse(push.stdout).uploaded).toContain(root);
  } finally {
    await viaShebang.stop();
  }
}, 120_000);
