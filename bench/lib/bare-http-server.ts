/**
 * The cache bench's second anchor: a bare node:http server answering each `<hash>.narinfo` with the
 * same bytes the cache serves, from memory, with nothing else (no router, validation or hooks). Served
 * from its own process like the cache, and loaded by the same generator, it shows the most this
 * machine's node, kernel and load generator allow. Started with `fork(file, [narinfoDir])`; it answers
 * `{ port }` once listening and `{ cpuMs }` when sent 'cpu'.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

const dir = process.argv[2];
if (!dir || !process.send) throw new Error('fork this file with the narinfo directory as its argument');
const bodies = new Map<string, Buffer>();
for (const f of readdirSync(dir)) if (f.endsWith('.narinfo')) bodies.set(f, readFileSync(join(dir, f)));

const server = createServer((req, res) => {
  const url = req.url ?? '';
  const body = bodies.get(url.slice(url.lastIndexOf('/') + 1));
  if (!body) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  res.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': body.length }).end(body);
});
server.listen(0, '127.0.0.1', () => {
  const addr = server.address();
  process.send?.({ port: typeof addr === 'object' && addr ? addr.port : 0 });
});
process.on('message', (m) => {
  if (m === 'cpu') {
    const u = process.cpuUsage();
    process.send?.({ cpuMs: (u.user + u.system) / 1000 });
  }
});
process.on('disconnect', () => server.close(() => process.exit(0)));
