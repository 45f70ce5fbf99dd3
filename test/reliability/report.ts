/**
 * Figures of the reliability suite: each test reports what it measured (requests fuzzed, corpus
 * sizes, timings). A line goes to stderr; when CRATE_RELIABILITY_REPORT names a file (the soak
 * runner, scripts/soak.mjs, sets it) the figures are appended to it as JSON lines and printed
 * together at the end of the run.
 */
import { appendFileSync } from 'node:fs';

export function report(name: string, figures: Record<string, unknown>): void {
  const line = JSON.stringify({ test: name, ...figures });
  console.error(`[reliability] ${line}`);
  const file = process.env.CRATE_RELIABILITY_REPORT;
  if (file) appendFileSync(file, `${line}\n`);
}
