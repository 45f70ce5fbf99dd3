/**
 * Running one benchmark on its own (`npx tsx bench/<name>.ts [--quick]`) or several in one process
 * (`bench/all.ts`): parse the common flags, start the bench host once, run, print, write the JSON.
 */
import { pathToFileURL } from 'node:url';
import { withBenchHost, type TestHost } from './host.ts';
import { printResult, targetsTable, writeResult, type BenchResult, type Target } from './report.ts';

/** Options every benchmark takes. */
export interface BenchOptions {
  quick: boolean;
  /** Arguments after the flags (benchmark-specific, e.g. sizes). */
  args: string[];
}

export type Bench = (host: TestHost, opts: BenchOptions) => Promise<BenchResult>;

export function parseOptions(argv: readonly string[]): BenchOptions {
  return { quick: argv.includes('--quick'), args: argv.filter((a) => !a.startsWith('--')) };
}

/** True when `importMetaUrl` is the script node was started with. */
export function isMain(importMetaUrl: string): boolean {
  const entry = process.argv[1];
  return entry !== undefined && pathToFileURL(entry).href === importMetaUrl;
}

/** Print and save a result; returns it. */
export async function report(r: BenchResult): Promise<BenchResult> {
  printResult(r);
  const file = await writeResult(r);
  console.log(`(figures written to ${file})`);
  return r;
}

/**
 * Run benchmarks one after the other on one host. A benchmark that throws is reported and the next
 * one still runs. Exit code: 0, 1 when any benchmark reported a failure (zero downtime: a failed
 * request), 2 when one crashed. With more than one benchmark, a summary of every target ends the run.
 */
export async function runMain(benches: Bench[], argv = process.argv.slice(2)): Promise<void> {
  const opts = parseOptions(argv);
  const t0 = performance.now();
  let code = 0;
  const targets: Target[] = [];
  const failures: string[] = [];
  try {
    await withBenchHost(async (host) => {
      for (const b of benches) {
        try {
          const r = await report(await b(host, opts));
          targets.push(...r.targets.map((t) => ({ ...t, what: `${r.name}: ${t.what}` })));
          failures.push(...r.failures.map((f) => `${r.name}: ${f}`));
          if (r.failures.length > 0) code = Math.max(code, 1);
        } catch (err) {
          console.error(`benchmark ${b.name} crashed:`, err);
          failures.push(`${b.name}: crashed: ${err instanceof Error ? err.message : String(err)}`);
          code = 2;
        }
      }
    });
  } catch (err) {
    console.error(err);
    code = 2;
  }
  if (benches.length > 1) {
    console.log(`\n== Summary (${((performance.now() - t0) / 1000).toFixed(0)} s${opts.quick ? ', quick' : ''})`);
    console.log(targetsTable(targets));
    if (failures.length > 0) console.log(`\nFAILURES (${failures.length}):\n${failures.map((f) => `  - ${f}`).join('\n')}`);
  }
  process.exitCode = code;
}
