/**
 * The cache bench's server: the binary cache plugin alone in its own process (as in a coordinator, the
 * client's push does not share its event loop or thread pool). Started with `fork(file, [dataDir])`; it
 * answers `{ port }` once listening and `{ cpuMs }` (its CPU time so far) when sent 'cpu'.
 */
import Fastify from 'fastify';
import { cachePlugin } from '../../scheduler/cache/index.js';

const dataDir = process.argv[2];
if (!dataDir || !process.send) throw new Error('fork this file with the data dir as its argument');
const app = Fastify({ logger: false });
// MXC_CACHE_COMPRESSION=br measures the push with brotli, as a coordinator set so would store.
const compression = process.env.MXC_CACHE_COMPRESSION === 'br' ? 'br' : 'none';
await app.register(cachePlugin, { dataDir, compression });
await app.listen({ host: '127.0.0.1', port: 0 });
const addr = app.server.address();
process.send({ port: typeof addr === 'object' && addr ? addr.port : 0 });
process.on('message', (m) => {
  if (m === 'cpu') {
    const u = process.cpuUsage();
    process.send?.({ cpuMs: (u.user + u.system) / 1000 });
  }
});
process.on('disconnect', () => void app.close().then(() => process.exit(0)));
