/**
 * Bearer-token authentication of the `/v1` API. Any of the configured tokens is accepted (two during
 * a rotation). The comparison is constant-time: both sides are hashed to fixed-length digests and
 * compared with timingSafeEqual, and every configured token is compared, so neither a token's length
 * nor which token matched leaks through timing. No configured token means every request is refused.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { CrateError } from '../core/errors.ts';

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** A checker for `Authorization` header values against `tokens`. */
export function bearerChecker(tokens: readonly string[]): (header: string | undefined) => boolean {
  const expected = tokens.map(digest);
  return (header) => {
    if (typeof header !== 'string') return false;
    const m = /^Bearer[ ]+([^\s]+)\s*$/i.exec(header);
    if (!m) return false;
    const got = digest(m[1] as string);
    let ok = false;
    for (const e of expected) ok = timingSafeEqual(got, e) || ok;
    return ok;
  };
}

/** The error of a refused request. */
export function unauthorized(): CrateError {
  return new CrateError('E_UNAUTHORIZED', 'missing or invalid bearer token');
}
