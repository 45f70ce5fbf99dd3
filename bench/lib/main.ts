/**
 * Running one benchmark on its own (`npx tsx bench/<name>.ts [--quick]`) or several in one process
 * (`bench/all.ts`): parse the common flags, start the bench host once, run, print, write the JSON.
 */
import { pathToFileURL } from 'node:url';
import { withBenchHost, type TestHost } from './host.ts';
import { printResult, writeResult, type BenchResult } from './report.ts';

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

/** Run benchmarks on one host; exit code 1 when any reported a failure, 2 when one crashed. */
export async function runMain(benches: Bench[], argv = process.argv.slice(2)): Promise<void> {
  const opts = parseOptions(argv);
  let code = 0;
  try {
    await withBenchHost(async (host) => {
      for (const b of benches) {
        const r = await report(await b(host, opts));
        if (r.failures.length > 0) code = 1;
      }
    });
  } catch (err) {
    console.error(err);
    code = 2;
  }
  process.exitCode = code;
}
