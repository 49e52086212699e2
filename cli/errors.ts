/** Errors the CLI shows as a message (exit 1, or the given code) rather than as a crash report. */
export class CliError extends Error {
  /** The API's error details (the missing paths of CLOSURE_INCOMPLETE, …), kept for `--json`. */
  readonly details?: unknown;
  /**
   * The message is the coordinator's words: shown to people with every line after the first indented,
   * so a line break in them (echoing a name it was sent) cannot start a line that reads as the CLI's own.
   */
  readonly remote: boolean;
  constructor(
    message: string,
    readonly exitCode = 1,
    /** The API's error code, when the coordinator refused (shown in `--json` errors). */
    readonly code?: string,
    options?: { cause?: unknown; details?: unknown; remote?: boolean },
  ) {
    super(message, options);
    this.name = 'CliError';
    this.details = options?.details;
    this.remote = options?.remote ?? false;
  }
}

/** C0 and C1 control characters (ESC, CR, LF, BEL, DEL, CSI, …): a terminal acts on them rather than showing them. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;
const escaped = (c: string) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;

/**
 * Text that came over the wire (a node's name, an agent's reason, a coordinator's message) as a terminal
 * should show it: every control character written out as `\x1b`, `\x0d`, …, so none retitles or clears
 * the terminal or starts a forged line. `--json` needs none of it: JSON escapes them itself.
 */
export const printable = (s: string) => s.replace(CONTROL, escaped);
