/**
 * How a benchmark reports: aligned lines on stdout (figure, unit, and the ratio to a published or
 * side-by-side anchor), plus a JSON copy under dist/bench/results/ that `bench/run.mjs` summarises.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../../scheduler/paths.js';
import { fmt } from './stats.js';

export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** The anchor's value in the same unit, and what it is. */
  anchor?: { value: number; label: string; higherIsBetter: boolean };
  note?: string;
}

export class Report {
  readonly figures: Figure[] = [];
  readonly notes: string[] = [];
  private readonly t0 = Date.now();

  constructor(readonly bench: string) {
    this.say(`\n=== ${bench} ===`);
    const load = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
    this.loadAtStart = load;
    this.say(
      `  load average ${load} on ${availableParallelism()} cores${load > 1 ? ' (the machine is busy: figures are pessimistic)' : ''}`,
    );
  }

  readonly loadAtStart: number;

  say(line: string): void {
    process.stdout.write(`${line}\n`);
  }

  /** Progress, prefixed so it stands apart from the figures. */
  progress(line: string): void {
    process.stdout.write(`  [${((Date.now() - this.t0) / 1000).toFixed(1)}s] ${line}\n`);
  }

  /** Records and prints one figure; with an anchor, also "N× anchor" and whether it is better or worse. */
  figure(f: Figure): void {
    this.figures.push(f);
    let line = `  ${f.name.padEnd(44)} ${fmt(f.value, 2).padStart(12)} ${f.unit}`;
    if (f.anchor && f.anchor.value > 0) {
      const r = f.value / f.anchor.value;
      const better = f.anchor.higherIsBetter ? r >= 1 : r <= 1;
      line += `   (${fmt(r, 2)}× ${f.anchor.label}: ${fmt(f.anchor.value, 2)} ${f.unit}${better ? '' : ', worse'})`;
    }
    if (f.note) line += `   ${f.note}`;
    this.say(line);
  }

  note(line: string): void {
    this.notes.push(line);
    this.say(`  note: ${line}`);
  }

  /** Writes the JSON copy; returns its path. */
  save(extra: Record<string, unknown> = {}): string {
    const dir = repoPath('dist', 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${this.bench}.json`);
    writeFileSync(
      file,
      `${JSON.stringify({ bench: this.bench, at: new Date().toISOString(), loadAtStart: this.loadAtStart, figures: this.figures, notes: this.notes, ...extra }, null, 2)}\n`,
    );
    return file;
  }
}
