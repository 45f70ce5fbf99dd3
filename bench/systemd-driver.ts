// Benchmark of the systemd driver and observer against a private user manager:
//   npx tsx bench/systemd-driver.ts [units…]      (default: 1 50 500)
// For each unit count N: writeUnits (first write, then unchanged), daemon-reload, start (one batch),
// observe (median of 10, with its systemctl call count), details() of 10 units, remove (one batch).
// Each unit runs `/bin/sleep`, so the numbers are the operator's cost, not the apps'.
import { hostCallCounts } from '../src/core/hostcalls.ts';
import { unitName } from '../src/core/identity.ts';
import { startSystemdUser } from '../src/host/systemd-user.ts';
import { createWorkspace } from '../src/host/workspace.ts';
import { envFilePath } from '../src/drivers/layout.ts';
import { createSystemdDriver } from '../src/drivers/systemd.ts';
import type { UnitSpec } from '../src/drivers/unit.ts';
import { createSystemdObserver } from '../src/observers/systemd.ts';

const counts = process.argv.slice(2).map(Number).filter((n) => Number.isInteger(n) && n > 0);
const sizes = counts.length > 0 ? counts : [1, 50, 500];

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await f();
  return [v, performance.now() - t];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

const ws = await createWorkspace();
try {
  const sd = await startSystemdUser({ dir: await ws.dir('systemd'), id: ws.id });
  try {
    const appsDir = await ws.dir('apps');
    const opts = { scope: 'user' as const, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...sd.env }, unitDir: sd.unitDir, appsDir, stopTimeoutSec: 5 };
    const driver = createSystemdDriver(opts);
    const observer = createSystemdObserver(opts);
    const rows: string[] = [];
    for (const n of sizes) {
      const key = { team: `b${n}`, env: 1, app: 1 };
      const specs: UnitSpec[] = Array.from({ length: n }, (_, i) => {
        const k = { ...key, app: i + 1 };
        return {
          key: k,
          instance: 'web',
          version: 'v1',
          generation: 0,
          port: 20000 + i,
          workingDirectory: appsDir,
          argv: ['/bin/sleep', '3600'],
          envFile: envFilePath(appsDir, k, 'web'),
          env: { A: 'x', B: 'y\nz' },
          stopTimeoutSec: 5,
          scope: 'user',
        };
      });
      const units = specs.map((s) => unitName(s.key, s.instance));
      const [, write1] = await timed(() => driver.writeUnits(specs));
      const [, write2] = await timed(() => driver.writeUnits(specs));
      const [, reload] = await timed(() => driver.daemonReload());
      const [, start] = await timed(() => driver.start(units));
      const obs: number[] = [];
      let calls = 0;
      for (let i = 0; i < 10; i++) {
        const before = hostCallCounts().systemctl;
        const [snap, ms] = await timed(() => observer.observe());
        calls = hostCallCounts().systemctl - before;
        if (snap.unavailable) throw new Error(snap.message);
        obs.push(ms);
      }
      const [, details] = await timed(() => observer.details(units.slice(0, 10)));
      const [, remove] = await timed(() => driver.remove(units));
      rows.push(
        `N=${n}: writeUnits ${write1.toFixed(0)} ms (unchanged ${write2.toFixed(0)} ms), daemon-reload ${reload.toFixed(0)} ms, start ${start.toFixed(0)} ms, ` +
          `observe median ${median(obs).toFixed(1)} ms (${calls} systemctl call), details(10) ${details.toFixed(0)} ms, remove ${remove.toFixed(0)} ms`,
      );
    }
    console.log(rows.join('\n'));
  } finally {
    await sd.stop();
  }
} finally {
  await ws.remove();
}
