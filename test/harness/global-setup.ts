/**
 * vitest globalSetup: starts the real components once per run and hands their addresses to the
 * tests (`inject('crateHost')`, wrapped by `getTestHost()` in ./index.ts). Teardown warns about
 * anything tests left behind, then stops every component and removes the run's folder.
 * A component that cannot start fails the whole run with a message naming the package or the step.
 */
import type { TestProject } from 'vitest/node';
import { startTestHost } from './host.ts';
import type { TestHost } from './types.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    crateHost: TestHost;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const host = await startTestHost();
  const t = host.timings;
  console.error(
    `crate harness: up in ${t.total} ms (systemd ${t.systemd}, dockerd ${t.docker} incl. images ${t.images}, caddy ${t.caddy}, assets ${t.assets}) at ${host.info.tmpRoot}`,
  );
  // If vitest dies without running teardown, do not leave daemons behind; the next run's reaper
  // removes the folders, cgroups and bridge.
  const emergency = (): void => {
    for (const pid of host.pids) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  };
  process.once('exit', emergency);
  project.provide('crateHost', host.info);

  return async () => {
    process.removeListener('exit', emergency);
    const { leftovers, ms } = await host.stop();
    if (leftovers.length > 0) {
      console.error(`crate harness: tests left behind (removed now):\n  ${leftovers.join('\n  ')}`);
    }
    console.error(`crate harness: torn down in ${ms} ms`);
  };
}
