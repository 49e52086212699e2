/**
 * Splits a child's output stream into lines (UTF-8 safe across chunk boundaries), so every line
 * of a process reaches the log sink on its own. Over-long lines are cut rather than buffered forever.
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

/** Splits chunks of output into lines, for output that arrives other than as a stream. */
export function lineSplitter(onLine: (line: string) => void, maxChars = MAX_LINE_CHARS): LineSplitter {
  const decoder = new StringDecoder('utf8');
  let buf = '';
  let ended = false;
  const push = (text: string): void => {
    buf += text;
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      onLine(line.endsWith('\r') ? line.slice(0, -1) : line);
      buf = buf.slice(nl + 1);
      nl = buf.indexOf('\n');
    }
    while (buf.length > maxChars) {
      onLine(buf.slice(0, maxChars));
      buf = buf.slice(maxChars);
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
