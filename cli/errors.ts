/** Errors the CLI shows as a message (exit 1, or the given code) rather than as a crash report. */
export class CliError extends Error {
  /** The API's error details (the missing paths of CLOSURE_INCOMPLETE, …), kept for `--json`. */
  readonly details?: unknown;
  constructor(
    message: string,
    readonly exitCode = 1,
    /** The API's error code, when the coordinator refused (shown in `--json` errors). */
    readonly code?: string,
    options?: { cause?: unknown; details?: unknown },
  ) {
    super(message, options);
    this.name = 'CliError';
    this.details = options?.details;
  }
}
