/**
 * The CLI's standard output and error without making process.stdout / process.stderr when nothing
 * needs them. Node makes each stream on its first use, and for a pipe (as scripts and the benchmarks
 * run mxc) that loads node:net and builds a socket: ~2.7 ms of `mxc build`'s ~36 ms of JavaScript
 * (at real-time priority), paid to write one line; for /dev/null (a FILE stream) ~3.7 ms, loading
 * node:stream. Output to a pipe, a file or a character device that is no TTY is written with
 * fs.writeSync instead, as Node's own stream writes it there (at once, in order); anything else (a
 * TTY, a socket) goes through process.stdout as before. A sibling file in the bundle (stdio.cjs), so
 * main and the command files share one state.
 */
import { fstatSync, writeSync } from 'node:fs';

let stdoutMade = false;
let stderrMade = false;

/**
 * Watches the first use of process.stdout and process.stderr (main, before anything writes):
 * `onStdoutMade` gets the stream when it is made. The first use puts Node's own getter back.
 */
export function watchStdio(onStdoutMade: (stream: NodeJS.WriteStream) => void): void {
  watch('stdout', () => {
    stdoutMade = true;
    onStdoutMade(process.stdout);
  });
  watch('stderr', () => {
    stderrMade = true;
  });
}

function watch(name: 'stdout' | 'stderr', made: () => void): void {
  const own = Object.getOwnPropertyDescriptor(process, name);
  if (!own?.get || !own.configurable) {
    made();
    return;
  }
  const get = own.get;
  Object.defineProperty(process, name, {
    configurable: true,
    enumerable: own.enumerable,
    get() {
      Object.defineProperty(process, name, own);
      const stream = get.call(process);
      made();
      return stream;
    },
  });
}

/** The streams made so far (exitWhenWritten waits for what they hold). */
export const madeStreams = (): NodeJS.WriteStream[] => [
  ...(stdoutMade ? [process.stdout] : []),
  ...(stderrMade ? [process.stderr] : []),
];

let plain: boolean | undefined;
/**
 * Whether fd 1 is a pipe, a regular file or a character device that is no TTY (/dev/null, as
 * `stdio: 'ignore'` gives it): written with fs.writeSync.
 */
export function stdoutIsPlain(): boolean {
  if (plain === undefined) {
    try {
      const st = fstatSync(1);
      plain = st.isFIFO() || st.isFile() || (st.isCharacterDevice() && isTTY(1) === false);
    } catch {
      plain = false;
    }
  }
  return plain;
}

/**
 * isatty(fd) through Node's TTY handle binding, as node:tty's isatty calls it (node:tty loads
 * node:net first); undefined where this Node has it not. process.binding is deprecated (DEP0111, a
 * documentation-only deprecation) and warns only under --pending-deprecation, which must not change
 * mxc's output (bin/early.js does the same).
 */
function isTTY(fd: number): boolean | undefined {
  // Not in @types/node: it is deprecated.
  const { binding } = process as unknown as {
    binding?: (name: string) => { isTTY?: (fd: number) => boolean };
  };
  if (typeof binding !== 'function') return undefined;
  const quiet = process.noDeprecation;
  process.noDeprecation = true;
  try {
    const tty = binding.call(process, 'tty_wrap');
    return typeof tty.isTTY === 'function' ? tty.isTTY(fd) : undefined;
  } catch {
    return undefined;
  } finally {
    process.noDeprecation = quiet;
  }
}

/**
 * Writes `text` to standard output: straight to fd 1 when it is plain (stdoutIsPlain) and process.stdout
 * was not made, else through process.stdout. A write the fd does not take whole at once (a
 * non-blocking pipe that is full: EAGAIN) or refuses (EPIPE, …) passes the rest to process.stdout,
 * which then waits, or reports the error as it always did.
 */
export function writeOut(text: string): void {
  if (stdoutMade || !stdoutIsPlain()) {
    process.stdout.write(text);
    return;
  }
  const bytes = Buffer.from(text);
  let written = 0;
  try {
    while (written < bytes.length) written += writeSync(1, bytes, written);
  } catch {
    process.stdout.write(bytes.subarray(written));
  }
}
