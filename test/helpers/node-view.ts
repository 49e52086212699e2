/** A node as the pure placement core sees it (4 cores, 4 GiB, 10,000 MiB disk, nothing used), for core tests. */
import type { NodeView } from '../../scheduler/core/place.js';

export const nodeView = (id: string, over: Partial<NodeView> = {}): NodeView => ({
  id,
  name: id,
  status: 'ready',
  cpu: 4,
  memory_mb: 4096,
  disk_mb: 10_000,
  used: { cpu: 0, memory_mb: 0, disk_mb: 0 },
  isolation: ['process', 'sandbox'],
  attributes: { host: id },
  ...over,
});
