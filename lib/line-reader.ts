/**
 * Splits a child's output stream into lines (UTF-8 safe across chunk boundaries), so every line
 * of a process reaches the log sink on its own. Over-long lines are cut rather than buffered forever.
 */
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

/** A line longer than this is emitted in pieces: a process printing without newlines must not grow our memory. */
export const MAX_LINE_CHARS = 16 * 1024;

/** Calls `onLine` for each line of `stream`; resolves when the stream has ended or closed. */
export function readLines(
  stream: Readable,
  onLine: (line: string) => void,
  maxChars = MAX_LINE_CHARS,
): Promise<void> {
  const decoder = new StringDecoder('utf8');
  let buf = '';
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
  return new Promise((resolve) => {
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      push(decoder.end());
      if (buf.length > 0) onLine(buf);
      buf = '';
      resolve();
    };
    stream.on('data', (chunk: Buffer) => push(decoder.write(chunk)));
    stream.on('end', finish);
    stream.on('close', finish);
    stream.on('error', finish);
  });
}
