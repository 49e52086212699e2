/**
 * Reads Nix's `--log-format internal-json` stream (nix 2.8) from a realisation: progress (paths and
 * bytes done of total), the human messages worth keeping, and the warnings/errors that say why Nix
 * refused a path (Nix's final error is only "build of … failed"; the reason is in a warning before it).
 */

/** Activity and result type numbers of nix's logger (src/libutil/logging.hh). */
const ACT_COPY_PATH = 100;
const ACT_COPY_PATHS = 103;
const RES_PROGRESS = 105;
const RES_SET_EXPECTED = 106;

export interface RealiseProgress {
  pathsDone: number;
  pathsTotal: number;
  /** Unpacked NAR bytes copied into the store so far. */
  bytesDone: number;
  bytesTotal: number;
}

interface NixLogEvent {
  action: 'start' | 'stop' | 'result' | 'msg';
  id?: number;
  type?: number;
  level?: number;
  text?: string;
  msg?: string;
  fields?: unknown[];
}

const ANSI = /\u001b\[[0-9;]*m/g;

/** Folds the event stream into progress, log-worthy lines and the refusal reasons. */
export class RealiseLog {
  readonly progress: RealiseProgress = { pathsDone: 0, pathsTotal: 0, bytesDone: 0, bytesTotal: 0 };
  /** Warnings and errors, in order, without colour codes. */
  readonly problems: string[] = [];
  private readonly copying = new Map<number, { path: string; done: number; expected: number }>();
  private copiedBytes = 0;
  private copied = 0;
  private readonly copyPathsIds = new Set<number>();

  constructor(
    private readonly on: {
      /** A line for the workload's system log (what is fetched, and from where). */
      line?: (line: string) => void;
      /** Progress changed: a path finished, or the totals became known. */
      progress?: (p: RealiseProgress, finished?: string) => void;
    } = {},
  ) {}

  /** Feeds one stderr line; lines that are not `@nix {…}` are kept as plain messages. */
  push(raw: string): void {
    if (!raw.startsWith('@nix ')) {
      if (raw.trim()) this.message(raw, 3);
      return;
    }
    let ev: NixLogEvent;
    try {
      ev = JSON.parse(raw.slice(5)) as NixLogEvent;
    } catch {
      this.message(raw, 3);
      return;
    }
    switch (ev.action) {
      case 'msg':
        this.message(ev.msg ?? '', ev.level ?? 3);
        return;
      case 'start':
        if (ev.type === ACT_COPY_PATHS && ev.id !== undefined) this.copyPathsIds.add(ev.id);
        if (ev.type === ACT_COPY_PATH && ev.id !== undefined) {
          this.copying.set(ev.id, { path: String(ev.fields?.[0] ?? ''), done: 0, expected: 0 });
          if (ev.text) this.on.line?.(ev.text.replace(ANSI, ''));
        }
        return;
      case 'stop': {
        const c = ev.id !== undefined ? this.copying.get(ev.id) : undefined;
        if (!c) return;
        this.copying.delete(ev.id!);
        // Nix reports progress in chunks; a finished copy has copied all it expected.
        this.copiedBytes += Math.max(c.done, c.expected);
        this.copied++;
        this.on.progress?.(this.snapshot(), c.path);
        return;
      }
      case 'result':
        this.result(ev);
        return;
    }
  }

  private result(ev: NixLogEvent): void {
    const f = (ev.fields ?? []).map(Number);
    if (ev.type === RES_SET_EXPECTED && f[0] === ACT_COPY_PATH) {
      this.progress.bytesTotal = f[1] ?? 0;
      this.on.progress?.(this.snapshot());
    } else if (ev.type === RES_PROGRESS) {
      const c = ev.id !== undefined ? this.copying.get(ev.id) : undefined;
      if (c) {
        c.done = f[0] ?? c.done;
        c.expected = f[1] ?? c.expected;
      } else if (ev.id !== undefined && this.copyPathsIds.has(ev.id)) {
        // The copy-paths activity counts paths: [done, expected, running, failed].
        this.progress.pathsDone = f[0] ?? 0;
        this.progress.pathsTotal = f[1] ?? 0;
      }
    }
  }

  private message(text: string, level: number): void {
    const clean = text.replace(ANSI, '');
    if (level <= 1) this.problems.push(clean);
    if (level <= 3) this.on.line?.(clean);
  }

  /** Current progress; bytes count finished paths plus the part of those in flight. */
  snapshot(): RealiseProgress {
    let inFlight = 0;
    for (const c of this.copying.values()) inFlight += c.done;
    const pathsDone = Math.max(this.progress.pathsDone, this.copied);
    return {
      ...this.progress,
      pathsDone,
      pathsTotal: Math.max(this.progress.pathsTotal, pathsDone),
      bytesDone: this.copiedBytes + inFlight,
    };
  }

  /** Nix finished without error: everything it meant to fetch is in the store. */
  complete(): RealiseProgress {
    const p = this.snapshot();
    return { ...p, pathsDone: p.pathsTotal, bytesDone: Math.max(p.bytesDone, p.bytesTotal) };
  }

  /** Nix's reason for a failure: its warnings and errors, without the noise. */
  reason(): string {
    return this.problems.join('\n');
  }
}
