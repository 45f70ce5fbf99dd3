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

/** True when `err` or a cause of it says the disk (or a quota) is full: ENOSPC, EDQUOT, SQLITE_FULL. */
export function isNoSpace(err: unknown): boolean {
  let e: unknown = err;
  for (let i = 0; i < 8 && typeof e === 'object' && e !== null; i++) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL') return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * `err` as CrateError E_STATE_FULL when the state directory is full (see isNoSpace), else unchanged.
 * The message names the condition, never file contents.
 */
export function stateWriteError(err: unknown, what: string): unknown {
  if (!isNoSpace(err)) return err;
  return new CrateError('E_STATE_FULL', `the state directory is full: cannot write ${what}; free space and retry`, { cause: err });
}
