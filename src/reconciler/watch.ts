/**
 * GitOps drops: watches `<stateDir>/desired/` and turns file events into reconcile triggers.
 *
 * - Only `*.yaml`/`*.yml` documents count; dotfiles and editor leftovers (`~`, `.swp`, `.tmp`, vim's
 *   `4913`) are ignored.
 * - A file still being written (its size still changing) is not applied early: chokidar reports it
 *   only once its size has been stable for `stableMs`.
 * - The store decides what an event means (reloadFile): content already in force (e.g. the operator's
 *   own write) is `unchanged` and triggers nothing; a deleted file means the app is no longer desired.
 */
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { AppKey } from '../core/identity.ts';
import { isIgnoredName, type ReloadOutcome } from '../desired/store.ts';

export interface WatchDeps {
  /** The folder of desired documents. */
  root: string;
  reloadFile(file: string): Promise<ReloadOutcome>;
  keyForPath(file: string): AppKey | undefined;
  trigger(key: AppKey, outcome: ReloadOutcome): void;
  /** How long a file's size must stay the same before it is read. */
  stableMs?: number;
  log?: { warn(o: object, m: string): void };
}

/** True for paths the watcher must never treat as documents (the store ignores the same names). */
export function ignoredPath(file: string): boolean {
  return isIgnoredName(path.basename(file));
}

export async function watchDesired(deps: WatchDeps): Promise<FSWatcher> {
  const stableMs = deps.stableMs ?? 100;
  const watcher = watch(deps.root, {
    ignoreInitial: true,
    persistent: true,
    // Only dotfiles and leftovers are ignored here: folders must pass so new team/env folders are watched.
    ignored: (p: string) => p !== deps.root && ignoredPath(p),
    awaitWriteFinish: { stabilityThreshold: stableMs, pollInterval: Math.max(10, Math.floor(stableMs / 4)) },
  });
  const onFile = (file: string): void => {
    if (!/\.ya?ml$/.test(file)) return;
    deps
      .reloadFile(file)
      .then((outcome) => {
        if (outcome === 'unchanged' || outcome === 'ignored') return;
        const key = deps.keyForPath(file);
        if (key) deps.trigger(key, outcome);
      })
      .catch((err: unknown) => deps.log?.warn({ file, err: String(err) }, 'cannot reload desired document'));
  };
  watcher.on('add', onFile).on('change', onFile).on('unlink', onFile);
  watcher.on('error', (err) => deps.log?.warn({ err: String(err) }, 'desired-state watcher error'));
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  return watcher;
}
