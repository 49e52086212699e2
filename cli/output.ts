/** Output for people (tables sized to the terminal, colour only on a TTY) and for scripts (`--json`). */
import { printable } from './errors.js';
import { stdoutIsPlain, writeOut } from './stdio.js';

export { printable };

// Known to be no TTY without making process.stdout (cli/stdio.ts): a pipe, a file, /dev/null.
const tty = !stdoutIsPlain() && process.stdout.isTTY === true && !process.env.NO_COLOR;

const paint = (code: number) => (s: string) => (tty ? `\u001b[${code}m${s}\u001b[0m` : s);
export const color = { red: paint(31), green: paint(32), yellow: paint(33), dim: paint(2), bold: paint(1) };

export function statusColor(s: string): string {
  if (s === 'running' || s === 'ready') return color.green(s);
  if (s === 'failed' || s === 'lost' || s === 'down') return color.red(s);
  if (s === 'pending' || s === 'starting' || s === 'stopping' || s === 'draining') return color.yellow(s);
  return s;
}

/**
 * A workload's status with how it ended when the status alone does not say it: a finished batch
 * instance and a service stopped by hand are both `stopped`, so the first shows `stopped (finished)`.
 */
export function workloadStatus(w: { status: string; outcome?: string | null }, paint = true): string {
  const how = w.outcome && w.outcome !== w.status ? ` (${w.outcome})` : '';
  return `${paint ? statusColor(w.status) : w.status}${how}`;
}

export function printJson(v: unknown): void {
  writeOut(`${JSON.stringify(v, null, 2)}\n`);
}

const visible = (s: string) => s.replace(/\u001b\[[0-9;]*m/g, '').length;

/** The colour codes `paint` writes, and only on a TTY: what a table cell or a field may hold unescaped. */
const OWN_COLOR = /(\u001b\[(?:0|1|2|31|32|33)m)|[\u0000-\u001f\u007f-\u009f]/g;

/**
 * Like `printable`, keeping the colour codes `paint` adds: what `printTable` and `printField` run every
 * text through, and any other line the CLI prints that holds what came over the wire.
 */
export const printableLine = (s: string) =>
  s.replace(OWN_COLOR, (c, own?: string) => (own && tty ? own : printable(c)));

/** One `label   value` line of a `show` command; the value's control characters are escaped. */
export function printField(label: string, value: string, pad: number): void {
  writeOut(`${color.bold(label.padEnd(pad))}${printableLine(value)}\n`);
}

/** A table with a header row; the widest column is cut to fit the terminal. */
export function printTable(headers: string[], rows: string[][]): void {
  if (rows.length === 0) {
    writeOut(color.dim('(none)\n'));
    return;
  }
  rows = rows.map((r) => r.map((c) => printableLine(c ?? '')));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => visible(r[i] ?? ''))));
  const max = stdoutIsPlain() ? 160 : (process.stdout.columns ?? 160);
  const total = () => widths.reduce((a, b) => a + b + 2, 0);
  while (total() > max) {
    const i = widths.indexOf(Math.max(...widths));
    if (widths[i]! <= 12) break;
    widths[i]!--;
  }
  const cell = (s: string, w: number) => {
    const v = visible(s);
    if (v > w) return `${s.replace(/\u001b\[[0-9;]*m/g, '').slice(0, w - 1)}…`;
    return s + ' '.repeat(w - v);
  };
  // No padding after the last column, in the header as in the rows (copied text carries no trailing blanks).
  writeOut(
    `${color.bold(
      headers
        .map((h, i) => cell(h.toUpperCase(), widths[i]!))
        .join('  ')
        .trimEnd(),
    )}\n`,
  );
  for (const r of rows)
    writeOut(
      `${r
        .map((c, i) => cell(c ?? '', widths[i]!))
        .join('  ')
        .trimEnd()}\n`,
    );
}

export function ago(ts: string | Date | null | undefined): string {
  if (!ts) return '-';
  const s = Math.max(0, Math.round((Date.now() - new Date(ts).getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** A one-line progress bar on stderr (TTY only). */
export function progress(label: string, done: number, total: number, extra = ''): void {
  if (!process.stderr.isTTY) return;
  const w = 24;
  const f = total > 0 ? Math.min(w, Math.round((done / total) * w)) : w;
  process.stderr.write(`\r${label} [${'#'.repeat(f)}${'.'.repeat(w - f)}] ${done}/${total} ${extra}\u001b[K`);
  if (done >= total) process.stderr.write('\n');
}

/** Bytes as MiB with one decimal (progress lines, transfer totals). */
export const MiB = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;

/** A byte count (or a signed difference) in B, KiB or MiB, whichever reads best. */
export const bytes = (b: number) =>
  Math.abs(b) < 1024 ? `${b} B` : Math.abs(b) < 1048576 ? `${(b / 1024).toFixed(1)} KiB` : MiB(b);
