/**
 * Shared microVM test fixture: the asset cache lives at a fixed path under the repo (.mxc is
 * ignored by git), so the kernel is downloaded once per machine, not once per test run.
 */
import { join } from 'node:path';
import { type MicroVmAssets, prepareMicroVmAssets } from '../../agent/microvm/index.js';

export const ASSET_CACHE_DIR =
  process.env.MXC_MICROVM_CACHE ?? join(import.meta.dirname, '..', '..', '.mxc', 'microvm-assets');

export function testAssets(): Promise<MicroVmAssets> {
  return prepareMicroVmAssets(ASSET_CACHE_DIR);
}
