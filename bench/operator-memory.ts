// Operator memory: the resident set of the operator process as it runs, and what would shrink it.
//   npx tsx bench/operator-memory.ts [--quick]
//
// The operator process (`crate-operator serve`, resyncing every second, no apps) is started four ways
// and its RSS sampled for a few seconds once up (max of the samples, and VmHWM, the peak including
// start-up):
//   - tsx: bin/crate-operator.js as shipped (TypeScript compiled on load by tsx's loader thread);
//   - tsx, small young generation: the same with `--max-semi-space-size=1`;
//   - bundle: the same code bundled once by esbuild (packages external) and run by plain node;
//   - bundle, small young generation.
// reconcile-scaling.ts reports the shipped variant with N apps; this one explains the number.
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { startChildOperator } from './lib/child-operator.ts';
import type { TestHost } from './lib/host.ts';
import { isMain, runMain, type BenchOptions } from './lib/main.ts';
import { machine, finishMachine, table, type BenchResult, type Target } from './lib/report.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** Bundle src/cli.ts with esbuild into `dir/cli.mjs` (node_modules reachable through a symlink). */
async function bundle(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const entry = path.join(dir, 'entry.ts');
  await writeFile(entry, `import { main } from ${JSON.stringify(path.join(ROOT, 'src', 'cli.ts'))};\nprocess.exitCode = await main(process.argv);\n`);
  const out = path.join(dir, 'cli.mjs');
  await execa(path.join(ROOT, 'node_modules', '.bin', 'esbuild'), [entry, '--bundle', '--platform=node', '--format=esm', '--packages=external', '--target=node20', `--outfile=${out}`], { cwd: ROOT });
  await symlink(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return out;
}

interface Variant {
  name: string;
  bin?: string;
  args: string;
}

export async function operatorMemory(host: TestHost, opts: BenchOptions): Promise<BenchResult> {
  const m = machine();
  const dir = path.join(host.tmpRoot, 'bench', 'memory');
  const bundled = await bundle(path.join(dir, 'bundle'));
  const variants: Variant[] = [
    { name: 'tsx (as shipped)', args: '' },
    { name: 'tsx, --max-semi-space-size=1', args: '--max-semi-space-size=1' },
    { name: 'esbuild bundle, plain node', bin: bundled, args: '' },
    { name: 'bundle, --max-semi-space-size=1', bin: bundled, args: '--max-semi-space-size=1' },
  ];
  const rows: { name: string; rssMiB: number; hwmMiB: number }[] = [];
  const saved = { bin: process.env.BENCH_OPERATOR_BIN, args: process.env.BENCH_NODE_ARGS };
  try {
    let i = 0;
    for (const v of variants) {
      if (v.bin) process.env.BENCH_OPERATOR_BIN = v.bin;
      else delete process.env.BENCH_OPERATOR_BIN;
      process.env.BENCH_NODE_ARGS = v.args;
      const child = await startChildOperator(host, path.join(dir, `state-${++i}`), { resyncSeconds: 1 });
      let rss = 0;
      try {
        await new Promise((r) => setTimeout(r, 2_000));
        for (let s = 0; s < (opts.quick ? 8 : 20); s++) {
          await new Promise((r) => setTimeout(r, 250));
          rss = Math.max(rss, child.memory().rssMiB);
        }
        rows.push({ name: v.name, rssMiB: rss, hwmMiB: child.memory().hwmMiB });
      } finally {
        await child.stop();
      }
    }
  } finally {
    if (saved.bin === undefined) delete process.env.BENCH_OPERATOR_BIN;
    else process.env.BENCH_OPERATOR_BIN = saved.bin;
    if (saved.args === undefined) delete process.env.BENCH_NODE_ARGS;
    else process.env.BENCH_NODE_ARGS = saved.args;
  }
  const text = [
    'Operator process with no apps, resyncing every second: RSS once up (max of samples) and peak (VmHWM, start-up included), MiB.',
    table(['variant', 'RSS', 'peak'], rows.map((r) => [r.name, r.rssMiB, r.hwmMiB])),
  ].join('\n');
  const shipped = rows[0];
  const targets: Target[] = [{ what: 'operator RSS, no apps (as shipped)', target: '≤ 100 MB', measured: `${shipped?.rssMiB ?? '-'} MiB (peak ${shipped?.hwmMiB ?? '-'})`, met: (shipped?.rssMiB ?? Infinity) <= 100 }];
  return { name: 'operator-memory', quick: opts.quick, machine: finishMachine(m), figures: { rows }, targets, text, failures: [] };
}

if (isMain(import.meta.url)) await runMain([operatorMemory]);
