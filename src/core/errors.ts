/**
 * Errors with a stable machine-readable `code` that keep their `cause` (undici's style).
 * Every error that crosses a module boundary is a CrateError; callers switch on `code`, never on message.
 */
export class CrateError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CrateError';
    this.code = code;
    this.details = options.details;
  }
}

/** True when `err` is a CrateError carrying `code`. */
export function hasCode(err: unknown, code: string): err is CrateError {
  return err instanceof CrateError && err.code === code;
}

/** A short, secret-free description of any thrown value, for logs and status documents. */
export function describeError(err: unknown): { code: string; message: string } {
  if (err instanceof CrateError) return { code: err.code, message: err.message };
  if (err instanceof Error) return { code: 'E_INTERNAL', message: err.message };
  return { code: 'E_INTERNAL', message: String(err) };
}
