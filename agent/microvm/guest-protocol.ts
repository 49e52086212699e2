/**
 * The line protocol between the host and the guest init over the serial console. Guest → host
 * lines start with `@@mxc:` (anything else is kernel/init noise); host → guest lines are commands.
 */

export const TAG = '@@mxc:';

export type GuestEvent =
  | { kind: 'ready' }
  | { kind: 'started'; process: string; run: number }
  | { kind: 'output'; process: string; run: number; stream: 'stdout' | 'stderr'; line: string }
  | { kind: 'exit'; process: string; run: number; exitCode: number }
  | { kind: 'warning'; line: string }
  | { kind: 'fatal'; line: string }
  | { kind: 'noise'; line: string };

/** Parses one console line (without its line ending). */
export function parseGuestLine(raw: string): GuestEvent {
  const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
  const at = line.indexOf(TAG);
  // A kernel message may have been printed on the same line before the tag.
  if (at < 0) return { kind: 'noise', line };
  const body = line.slice(at + TAG.length);
  const kind = body[0];
  const rest = body.slice(2);
  if (kind === 'r') return { kind: 'ready' };
  if (kind === 'w') return { kind: 'warning', line: rest };
  if (kind === 'f') return { kind: 'fatal', line: rest };
  const parts = rest.split(':');
  const process = parts[0] ?? '';
  const run = Number(parts[1]);
  if (!process || !Number.isInteger(run)) return { kind: 'noise', line };
  if (kind === 's') return { kind: 'started', process, run };
  if (kind === 'x') return { kind: 'exit', process, run, exitCode: Number(parts[2] ?? 255) };
  if (kind === 'o' || kind === 'e') {
    const text = rest.slice(process.length + String(run).length + 2);
    return { kind: 'output', process, run, stream: kind === 'o' ? 'stdout' : 'stderr', line: text };
  }
  return { kind: 'noise', line };
}

export type HostCommand =
  | { kind: 'run'; process: string; run: number }
  | { kind: 'kill'; process: string; signal: 'TERM' | 'KILL' }
  | { kind: 'off' };

export function formatCommand(c: HostCommand): string {
  switch (c.kind) {
    case 'run':
      return `run ${c.process} ${c.run}\n`;
    case 'kill':
      return `kill ${c.process} ${c.signal}\n`;
    case 'off':
      return 'off\n';
  }
}
