/**
 * The attacker side of the request-stall bench, run as its own process so that building and sending a
 * huge payload never counts against the coordinator's event loop: `node stall-client.js URL KIND N`.
 * Prints one JSON line: what the coordinator answered.
 */
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { toNixBase32 } from '../../lib/nix-base32.js';
import { PROCESS_ONLY_CAPABILITIES } from './capabilities.js';

// A store path's hash part is nix-base32 of 20 bytes: 32 characters.
const fakePath = (i: number) => `/nix/store/${toNixBase32(randomBytes(20))}-stall-${i}`;
const paths = (n: number) => Array.from({ length: n }, (_, i) => fakePath(i));

const hello = (name: string, extra: Record<string, unknown>) => ({
  type: 'hello',
  name,
  version: 'bench',
  resources: { cpu: 4, memory_mb: 8192, disk_mb: 100_000 },
  capabilities: PROCESS_ONLY_CAPABILITIES,
  ...extra,
});

/** Opens the agent socket, sends the frames, returns the first answer (welcome or error) or the close. */
function agentSession(url: string, frames: unknown[], waitForAll: boolean): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/api/agent/ws`);
    const answers: string[] = [];
    const done = (s: string) => {
      ws.close();
      resolve(s);
    };
    ws.on('open', () => {
      for (const f of frames) ws.send(JSON.stringify(f));
      // A heartbeat after the load: its answer-less arrival is what "handled" means for later frames.
      if (waitForAll) ws.send(JSON.stringify({ type: 'bogus' }));
    });
    ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString()) as { type: string; code?: string };
      answers.push(m.code ? `${m.type}:${m.code}` : m.type);
      if (!waitForAll || m.type === 'error') done(answers.join(','));
    });
    ws.on('close', (code) => resolve(`${answers.join(',')} closed ${code}`));
    ws.on('error', (err) => resolve(`error ${err.message}`));
  });
}

/** POSTs JSON; a refusal that closes the connection mid-upload counts as an answer too. */
async function post(url: string, body: unknown): Promise<string> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = (await res.json()) as { error?: { code: string } };
    return `${res.status}${json.error ? ` ${json.error.code}` : ''}`;
  } catch (err) {
    return `connection closed (${String((err as Error).cause ?? err)})`;
  }
}

async function main() {
  const [url, kind, nText] = process.argv.slice(2) as [string, string, string];
  const n = Number(nText);
  const name = `stall-${kind}-${randomBytes(3).toString('hex')}`;
  let answer: string;
  switch (kind) {
    case 'missing': {
      answer = await post(`${url}/api/cache/missing`, { paths: paths(n) });
      break;
    }
    case 'submit-closure': {
      answer = await post(`${url}/api/jobs`, {
        name,
        role: 'r',
        cluster: 'c',
        environment: 'e',
        task: {
          name: 't',
          processes: [{ name: 'p', cmdline: 'true' }],
          resources: { cpu: 0.1, ram: 1 << 20, disk: 0 },
        },
        mxc: { closure: paths(n) },
      });
      break;
    }
    case 'hello-store':
      answer = await agentSession(url, [hello(name, { store_paths: paths(n) })], false);
      break;
    case 'hello-running':
      answer = await agentSession(
        url,
        [
          hello(name, {
            running: Array.from({ length: n }, (_, i) => ({
              workload_id: `w-${i}-deadbeef`,
              status: 'running',
            })),
          }),
        ],
        false,
      );
      break;
    case 'store-added':
      answer = await agentSession(
        url,
        [hello(name, {}), { type: 'store_paths', added: paths(n), removed: [] }],
        true,
      );
      break;
    default:
      throw new Error(`unknown kind ${kind}`);
  }
  process.stdout.write(`${JSON.stringify({ kind, n, answer })}\n`);
}

void main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  },
);
