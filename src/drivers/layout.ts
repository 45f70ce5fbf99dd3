/**
 * Where an app's files live under the apps folder (config `appsDir`):
 *
 *   <appsDir>/<team>/<env>/<app>/
 *     releases/<version>/        unpacked release (complete, or absent: see assets.ts)
 *     releases/.tmp-…            a release being unpacked (removed on failure and at start-up)
 *     env/<instance>.env         the instance's EnvironmentFile (folder 0700, file 0600)
 *
 * Every part is a pattern-restricted id, so these paths never need escaping.
 */
import path from 'node:path';
import { CrateError } from '../core/errors.ts';
import { ID_PATTERN, SPEC_PATTERN, VERSION_PATTERN, type AppKey } from '../core/identity.ts';

function check(field: string, v: string, re: RegExp): string {
  if (!re.test(v)) throw new CrateError('E_INVALID_UNIT_FIELD', `${field}: ${JSON.stringify(v)} does not match ${re.source}`, { details: { field } });
  return v;
}

/** The folder of one app in one environment. */
export function appDir(appsDir: string, key: AppKey): string {
  check('team', key.team, ID_PATTERN);
  if (!Number.isSafeInteger(key.env) || key.env < 1 || !Number.isSafeInteger(key.app) || key.app < 1) {
    throw new CrateError('E_INVALID_UNIT_FIELD', 'env and app must be positive integers', { details: { field: 'key' } });
  }
  return path.join(path.resolve(appsDir), key.team, String(key.env), String(key.app));
}

/** The folder holding every release of an app. */
export function releasesDir(appsDir: string, key: AppKey): string {
  return path.join(appDir(appsDir, key), 'releases');
}

/** The folder of one release. */
export function releaseDir(appsDir: string, key: AppKey, version: string): string {
  return path.join(releasesDir(appsDir, key), check('version', version, VERSION_PATTERN));
}

/** The folder of an app's environment files. */
export function envDir(appsDir: string, key: AppKey): string {
  return path.join(appDir(appsDir, key), 'env');
}

/** The EnvironmentFile of one run of an instance (`<instance>@<spec>.env`; `@` is in no id). */
export function envFilePath(appsDir: string, key: AppKey, instance: string, spec?: string): string {
  const run = spec === undefined ? check('instance', instance, ID_PATTERN) : `${check('instance', instance, ID_PATTERN)}@${check('spec', spec, SPEC_PATTERN)}`;
  return path.join(envDir(appsDir, key), `${run}.env`);
}
