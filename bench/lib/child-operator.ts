/**
 * The real operator as its own process (`bin/crate-operator.js serve`), as production runs it, for
 * figures that must not include the benchmark's own memory or event loop: RSS, and HTTP throughput.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { request } from 'undici';
import { freePort, systemPath } from '../../src/host/process.ts';
import type { TestHost } from './host.ts';
import { TOKEN } from './operator.ts';

const BIN = fileURLToPath(new URL('../../bin/crate-operator.js', import.meta.url));

export interface ChildOperator {
  readonly pid: number;
  readonly url: string;
  /** Resident set size now and its peak (VmRSS, VmHWM from /proc), in MiB. */
  memory(): { rssMiB: number; hwmMiB: number };
  stop(): Promise<void>;
}

function statusKiB(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+([0-9]+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/**
 * Start `crate-operator serve` on `stateDir` against the bench host; resolves once `/healthz` answers.
 * With `BENCH_CPU_PROF=<dir>` in the environment, the process writes a V8 CPU profile there when it stops;
 * `BENCH_OPERATOR_BIN=<file.mjs>` runs that script instead of bin/crate-operator.js (e.g. an esbuild
 * bundle of the operator, to compare the memory of running without tsx); `BENCH_NODE_ARGS` adds node
 * flags (space-separated, e.g. `--max-semi-space-size=2`).
 */
export async function startChildOperator(host: TestHost, stateDir: string, opts: { resyncSeconds?: number; logLevel?: string } = {}): Promise<ChildOperator> {
  const port = await freePort();
  const child: ResultPromise = execa(
    process.execPath,
    [
      ...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []),
      ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a.startsWith('--')),
      process.env.BENCH_OPERATOR_BIN ?? BIN,
      'serve',
      '--listen',
      `127.0.0.1:${port}`,
      '--token',
      TOKEN,
      '--state-dir',
      stateDir,
      '--systemd-scope',
      'user',
      '--docker-socket',
      host.docker.socket,
      '--caddy-admin',
      host.caddy.adminUrl,
      '--caddy-server',
      host.caddy.serverName,
      '--server-id',
      'bench-host',
    ],
    {
      env: {
        PATH: systemPath(),
        ...host.systemd.env,
        CRATE_RESYNC_SECONDS: String(opts.resyncSeconds ?? 3600),
        CRATE_ALLOW_PRIVATE: '127.0.0.0/8',
        CRATE_LOG_LEVEL: opts.logLevel ?? 'warn',
        CRATE_LOG_FORMAT: 'json',
        CRATE_CADDY_LISTEN: `127.0.0.1:${host.caddy.httpPort}`,
      },
      extendEnv: false,
      reject: false,
      stdout: 'ignore',
      stderr: 'pipe',
      buffer: { stderr: true },
      lines: false,
    },
  );
  const pid = child.pid;
  if (pid === undefined) throw new Error('cannot start the operator process');
  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + 60_000;
  for (;;) {
    try {
      const r = await request(`${url}/healthz`, { headersTimeout: 2_000, bodyTimeout: 2_000, reset: true });
      await r.body.dump();
      if (r.statusCode === 200) break;
    } catch {
      // Not listening yet.
    }
    if (child.exitCode !== null || Date.now() > until) {
      child.kill('SIGKILL');
      const r = await child;
      throw new Error(`operator process did not come up (exit ${String(r.exitCode)}): ${String(r.stderr).slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid,
    url,
    memory: () => ({ rssMiB: Math.round(statusKiB(pid, 'VmRSS') / 1024), hwmMiB: Math.round(statusKiB(pid, 'VmHWM') / 1024) }),
    async stop() {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await child;
      clearTimeout(t);
    },
  };
}
