/**
 * A failure that no retry can fix. Thrown from a function (or found in the
 * `cause` chain of what it throws), it makes the runtime dead-letter the
 * batch instead of retrying it, and the address goes on with its next
 * messages. Any other error is retryable.
 */
export class TerminalError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TerminalError";
  }
}

/**
 * Marks err as terminal: returns a {@link TerminalError} with err's message
 * and err as its cause.
 */
export function terminal(err: unknown): TerminalError {
  if (err instanceof TerminalError) {
    return err;
  }
  return new TerminalError(errorMessage(err), { cause: err });
}

/** Reports whether err, or an error in its `cause` chain, is a {@link TerminalError}. */
export function isTerminal(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e != null && depth < 32; depth++) {
    if (e instanceof TerminalError) {
      return true;
    }
    e = e instanceof Error ? e.cause : undefined;
  }
  return false;
}

/** The message of whatever was thrown. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    return err.message;
  }
  return String(err);
}
