/**
 * The one line reader for child output (workload processes, the task supervisor, the microVM
 * console, helper commands' stderr): UTF-8 safe across chunk boundaries, so every line reaches its
 * sink whole; an over-long line is cut into bounded pieces (never inside a character) rather than
 * buffered forever.
 */
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

/** A line longer than this is emitted in pieces: a process printing without newlines must not grow our memory. */
export const MAX_LINE_CHARS = 16 * 1024;

export interface LineSplitter {
  /** Feeds one chunk of output; calls `onLine` for every line it completes. */
  write(chunk: Buffer): void;
  /** The output has ended: the unterminated rest (if any) is the last line. */
  end(): void;
}

/** Where to cut `text` (a piece starting at `from`) at most at `at`: one earlier rather than split a surrogate pair. */
export function cutAt(text: string, from: number, at: number): number {
  const last = text.charCodeAt(at - 1);
  return last >= 0xd800 && last <= 0xdbff && at - 1 > from ? at - 1 : at;
}

/** Splits chunks of output into lines, for output that arrives other than as a stream. */
export function lineSplitter(onLine: (line: string) => void, maxChars = MAX_LINE_CHARS): LineSplitter {
  const decoder = new StringDecoder('utf8');
  let buf = '';
  let ended = false;
  /** Emits `text` (no newline in it) in pieces of at most maxChars. */
  const emit = (text: string): void => {
    let from = 0;
    while (text.length - from > maxChars) {
      const to = cutAt(text, from, from + maxChars);
      onLine(text.slice(from, to));
      from = to;
    }
    onLine(from === 0 ? text : text.slice(from));
  };
  const push = (text: string): void => {
    buf += text;
    let from = 0;
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const end = nl > from && buf.charCodeAt(nl - 1) === 13 ? nl - 1 : nl; // CRLF: drop the CR
      emit(buf.slice(from, end));
      from = nl + 1;
      nl = buf.indexOf('\n', from);
    }
    buf = from === 0 ? buf : buf.slice(from);
    // No newline yet: hand over what exceeds the bound, keep the rest for the next chunk.
    while (buf.length > maxChars) {
      const to = cutAt(buf, 0, maxChars);
      onLine(buf.slice(0, to));
      buf = buf.slice(to);
    }
  };
  return {
    write: (chunk) => push(decoder.write(chunk)),
    end: () => {
      if (ended) return;
      ended = true;
      push(decoder.end());
      if (buf.length > 0) onLine(buf);
      buf = '';
    },
  };
}

/** Calls `onLine` for each line of `stream`; resolves when the stream has ended or closed. */
export function readLines(
  stream: Readable,
  onLine: (line: string) => void,
  maxChars = MAX_LINE_CHARS,
): Promise<void> {
  const lines = lineSplitter(onLine, maxChars);
  return new Promise((resolve) => {
    const finish = (): void => {
      lines.end();
      resolve();
    };
    stream.on('data', (chunk: Buffer) => lines.write(chunk));
    stream.on('end', finish);
    stream.on('close', finish);
    stream.on('error', finish);
  });
}
