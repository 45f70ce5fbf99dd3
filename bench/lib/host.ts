/**
 * The throwaway host a benchmark runs against: the harness's private systemd user manager, dockerd
 * (with the test images imported), Caddy and asset server (test/harness/host.ts), in a private temp
 * folder. `withBenchHost(fn)` starts it, runs `fn`, and tears everything down afterwards: on success,
 * on an error, and on Ctrl-C/SIGTERM (then the process exits 130/143). If the process dies without
 * running the teardown, the component process groups are SIGKILLed on exit and the next run's reaper
 * removes the folder, cgroups and bridge.
 */
import { startTestHost, type RunningTestHost } from '../../test/harness/host.ts';
import type { TestHost } from '../../test/harness/types.ts';

export type { TestHost };

/** Environment for systemctl/the systemd driver against the bench host's user manager. */
export function systemdEnvOf(host: TestHost): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', ...host.systemd.env };
}

/**
 * Start the host, run `fn(host)`, stop the host whatever happened. Resolves with `fn`'s value;
 * rejects with `fn`'s error after the teardown.
 */
export async function withBenchHost<T>(fn: (host: TestHost) => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const running: RunningTestHost = await startTestHost();
  console.error(`bench host up in ${Math.round(performance.now() - t0)} ms at ${running.info.tmpRoot}`);
  const emergency = (): void => {
    for (const pid of running.pids) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  };
  let stopping: Promise<unknown> | null = null;
  const stop = (): Promise<unknown> => {
    stopping ??= running.stop().then(
      (r) => {
        if (r.leftovers.length > 0) console.error(`bench host: removed leftovers:\n  ${r.leftovers.slice(0, 20).join('\n  ')}${r.leftovers.length > 20 ? `\n  … ${r.leftovers.length - 20} more` : ''}`);
        console.error(`bench host torn down in ${r.ms} ms`);
      },
      (err: unknown) => console.error(`bench host teardown failed: ${String(err)}`),
    );
    return stopping;
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    console.error(`\n${signal}: tearing the bench host down…`);
    void stop().finally(() => {
      process.removeListener('exit', emergency);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  };
  process.once('exit', emergency);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await fn(running.info);
  } finally {
    await stop();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('exit', emergency);
  }
}
