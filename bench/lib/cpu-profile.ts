/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): self time by package or source folder, the
 * hottest functions by self time, and the project's own functions by inclusive time, so a benchmark
 * can say where the coordinator's time goes.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  /** Monotonic µs (CLOCK_MONOTONIC on Linux, as process.hrtime) of the first sample's reference point. */
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A span of monotonic time in µs, as `process.hrtime.bigint() / 1000n` reads it. */
export interface ProfileWindow {
  fromUs: number;
  toUs: number;
}

/** Now on the clock a V8 profile's timestamps use (CLOCK_MONOTONIC), in µs. */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export interface ProfileSummary {
  totalMs: number;
  byArea: { area: string; ms: number }[];
  topSelf: { fn: string; ms: number }[];
  topInclusiveOwn: { fn: string; ms: number }[];
}

/** Where a frame comes from: a package, a project folder, node's internals or a V8 pseudo-frame. */
function areaOf(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return 'node internals';
  const own = /\/dist\/(?:bench\/)?([^/]+)\//.exec(url);
  if (own) return `mxc ${own[1]}/`;
  return 'other';
}

function label(n: ProfileNode): string {
  const { functionName, url, lineNumber } = n.callFrame;
  const file = url ? url.replace(/^.*\/(node_modules|dist)\//, '$1/') : '';
  return `${functionName || '(anonymous)'}${file ? ` ${file}:${lineNumber + 1}` : ''}`;
}

/**
 * Summarises the profile in `file`; with `window`, only the samples taken within it (e.g. the measured
 * phase, leaving out start-up and the agents joining).
 */
export function summariseProfile(file: string, top = 15, window?: ProfileWindow): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const area = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  let at = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    at += p.timeDeltas[i] ?? 0;
    if (window && (at < window.fromUs || at > window.toUs)) continue;
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    const n = byId.get(p.samples[i]!);
    if (!n) continue;
    total += dt;
    const l = label(n);
    self.set(l, (self.get(l) ?? 0) + dt);
    const a = areaOf(n.callFrame.url, n.callFrame.functionName);
    area.set(a, (area.get(a) ?? 0) + dt);
    // Inclusive time of the project's own functions: each counted once per sample.
    const seen = new Set<string>();
    for (let id: number | undefined = n.id; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)!;
      if (!/\/dist\//.test(f.callFrame.url) || /node_modules/.test(f.callFrame.url)) continue;
      const fl = label(f);
      if (seen.has(fl)) continue;
      seen.add(fl);
      inclusive.set(fl, (inclusive.get(fl) ?? 0) + dt);
    }
  }
  const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return {
    totalMs: total,
    byArea: sorted(area).map(([area, ms]) => ({ area, ms })),
    topSelf: sorted(self)
      .slice(0, top)
      .map(([fn, ms]) => ({ fn, ms })),
    topInclusiveOwn: sorted(inclusive)
      .slice(0, top)
      .map(([fn, ms]) => ({ fn, ms })),
  };
}

/** The summary as indented lines for a report. */
export function formatProfile(s: ProfileSummary): string[] {
  const pct = (ms: number) => `${((100 * ms) / Math.max(1, s.totalMs)).toFixed(1).padStart(5)}%`;
  const out = [`CPU profile: ${(s.totalMs / 1000).toFixed(1)} s sampled`, '  self time by area:'];
  for (const a of s.byArea.slice(0, 12)) out.push(`    ${pct(a.ms)}  ${a.area}`);
  out.push('  hottest functions (self):');
  for (const f of s.topSelf) out.push(`    ${pct(f.ms)}  ${f.fn}`);
  out.push('  mxc functions (inclusive):');
  for (const f of s.topInclusiveOwn) out.push(`    ${pct(f.ms)}  ${f.fn}`);
  return out;
}
