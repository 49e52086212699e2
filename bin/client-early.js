// `mxc cluster status`'s GET, sent by bin/mxc.js before the CLI loads. CommonJS, plain JS.
'use strict';

const DEFAULT_COORDINATOR = 'http://127.0.0.1:4000';
const PATH = '/api/cluster/status';
/** The longest bin/mxc.js waits for the request to go out before it loads the CLI. */
const MAX_WAIT_MS = 20;

/** A setting's value, unset when empty (lib/settings.ts's rule). */
const set = (v) => (v !== undefined && v !== '' ? v : undefined);

/**
 * The request `mxc cluster status [--json]` sends first (cli/client.ts's ApiClient from
 * lib/settings.ts's MXC_COORDINATOR and MXC_API_TOKEN), or null whenever it is not that plainly: other
 * options (-c, --token, --token-file, -f: ApiClient's own reading decides), a token in a file (only the
 * CLI reads secret files), a coordinator list the settings would refuse, or https. Then nothing goes
 * out early and the command sends its own request. cli/client.ts takes the early one over only when
 * it is exactly the request it would send.
 */
function clusterStatusRequest(argv, env) {
  if (argv[2] !== 'cluster' || argv[3] !== 'status') return null;
  if (argv.slice(4).some((a) => a !== '--json')) return null;
  if (set(env.MXC_API_TOKEN_FILE) !== undefined) return null;
  const urls = (set(env.MXC_COORDINATOR) ?? DEFAULT_COORDINATOR)
    .split(',')
    .map((u) => u.trim())
    .filter(Boolean);
  if (urls.length < 1 || urls.length > 64) return null;
  for (const u of urls) {
    try {
      if (!['http:', 'https:'].includes(new URL(u).protocol)) return null;
    } catch {
      return null;
    }
  }
  let url;
  try {
    url = new URL(`${urls[0].replace(/\/+$/, '')}${PATH}`);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:') return null;
  const token = set(env.MXC_API_TOKEN);
  return { method: 'GET', href: url.href, headers: token ? { authorization: `Bearer ${token}` } : {} };
}

/**
 * Sends the request clusterStatusRequest names, if any: the coordinator answers while the CLI loads
 * (~10 ms here against one on this machine, most of `mxc cluster status` after Node's own start-up).
 * `answer` settles as lib/http-answer.ts's answerOf does; `abort` drops it when it is not taken over.
 */
function start(argv, env = process.env) {
  const r = clusterStatusRequest(argv, env);
  if (!r) return undefined;
  const req = require('node:http').request(r.href, { method: r.method, headers: r.headers });
  const answer = new Promise((resolve, reject) => {
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          text: Buffer.concat(chunks).toString('utf8'),
          location: res.headers.location,
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  answer.catch(() => {}); // the CLI awaits it when it takes it over
  // Sent once the connection is open and the request written, which happens in the event loop: the
  // CLI's loading, one long synchronous step, would hold it back to the end (bin/mxc.js waits for
  // this first, at most MAX_WAIT_MS, so a slow connect does not hold the CLI back either).
  const sent = new Promise((resolve) => {
    const timer = setTimeout(resolve, MAX_WAIT_MS);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    req.once('finish', done);
    req.once('error', done);
    req.once('close', done);
  });
  req.end();
  return { ...r, answer, sent, abort: () => req.destroy() };
}

module.exports = { clusterStatusRequest, start };
