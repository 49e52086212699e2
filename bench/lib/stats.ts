/** Small statistics and formatting helpers shared by the benchmarks (percentiles, medians, units). */

/** The q-quantile (0..1) of `xs` by nearest rank; NaN for an empty list. */
export function percentile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[rank]!;
}

export const median = (xs: readonly number[]): number => percentile(xs, 0.5);

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? Number.NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** A number with `digits` significant-ish decimals, thousands separated. */
export function fmt(n: number, digits = 1): string {
  if (!Number.isFinite(n)) return String(n);
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export const fmtMs = (ms: number): string => `${fmt(ms, ms < 10 ? 2 : 1)} ms`;
export const fmtMiB = (bytes: number): string => `${fmt(bytes / 1024 / 1024, 1)} MiB`;

/** Milliseconds since an arbitrary origin, with sub-millisecond resolution. */
export const nowMs = (): number => performance.now();

/** An integer from an environment variable, or the default; a bad value is an error naming the variable. */
export function envInt(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw.replace(/_/g, ''));
  if (!Number.isInteger(n) || n < 0)
    throw new Error(`${name} must be a non-negative integer (got "${raw}"); unset it to use ${dflt}`);
  return n;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
