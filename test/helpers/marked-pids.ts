/**
 * Finds a test's processes on the host by a mark in their environment (`MXC_TEST_MARK=<mark>`), the
 * way to see whether processes started inside PID namespaces are still alive.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Live host pids (zombies and dead ones left out) whose environment holds `MXC_TEST_MARK=<mark>`. */
export function markedPids(mark: string): number[] {
  const needle = `\0MXC_TEST_MARK=${mark}\0`;
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (!`\0${readFileSync(`/proc/${e}/environ`, 'latin1')}`.includes(needle)) continue;
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      if (!/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]!)) out.push(Number(e));
    } catch {}
  }
  return out;
}
