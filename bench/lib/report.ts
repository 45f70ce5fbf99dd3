/**
 * Figures: summary statistics, a plain-text table printer, the machine a run happened on, and the
 * JSON result file `bench/results/<name>.json` (git-ignored; bench/README.md records the figures
 * that matter).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where result files go. */
export const RESULTS_DIR = fileURLToPath(new URL('../results/', import.meta.url));

/** The q-quantile (0..1) of `xs` by nearest rank; NaN for an empty list. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i] as number;
}

export const median = (xs: readonly number[]): number => quantile(xs, 0.5);
export const p95 = (xs: readonly number[]): number => quantile(xs, 0.95);
export const p99 = (xs: readonly number[]): number => quantile(xs, 0.99);

/** Summary of a sample in milliseconds (rounded to 0.1). */
export interface Summary {
  n: number;
  median: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
}

const r1 = (x: number): number => Math.round(x * 10) / 10;

export function summarize(xs: readonly number[]): Summary {
  return { n: xs.length, median: r1(median(xs)), p95: r1(p95(xs)), p99: r1(p99(xs)), min: r1(Math.min(...xs)), max: r1(Math.max(...xs)) };
}

/** Milliseconds since `t0` (performance.now based). */
export function since(t0: number): number {
  return performance.now() - t0;
}

/** Run `f` and return its value and wall time in ms. */
export async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await f();
  return [v, performance.now() - t];
}

/** A number for a table cell: integers as is, others with `digits` decimals; NaN/undefined as `-`. */
export function fmt(x: number | undefined, digits = 1): string {
  if (x === undefined || Number.isNaN(x)) return '-';
  return Number.isInteger(x) ? String(x) : x.toFixed(digits);
}

/** A plain-text table: first column left-aligned, the others right-aligned. */
export function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const widths = head.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

/** The machine a figure was measured on. */
export interface Machine {
  nproc: number;
  cpu: string;
  memGiB: number;
  /** 1, 5, 15-minute load averages at the start of the benchmark. */
  loadStart: number[];
  /** The same at its end. */
  loadEnd?: number[];
  node: string;
  at: string;
}

const load = (): number[] => os.loadavg().map((x) => Math.round(x * 100) / 100);

export function machine(): Machine {
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    loadStart: load(),
    node: process.version,
    at: new Date().toISOString(),
  };
}

/** Close a machine record: the load average at the end. */
export function finishMachine(m: Machine): Machine {
  return { ...m, loadEnd: load() };
}

export function describeMachine(m: Machine): string {
  return `${m.nproc} cores (${m.cpu}), ${m.memGiB} GiB, node ${m.node}, load ${m.loadStart.join(' ')}${m.loadEnd ? ` → ${m.loadEnd.join(' ')}` : ''}`;
}

/** A target: what was asked, what was measured, whether it is met. */
export interface Target {
  what: string;
  target: string;
  measured: string;
  met: boolean;
}

export function targetsTable(targets: readonly Target[]): string {
  return table(['target', 'wanted', 'measured', 'met'], targets.map((t) => [t.what, t.target, t.measured, t.met ? 'yes' : 'NO']));
}

/** What every benchmark returns: its figures (for the JSON file), its printed report, targets, failures. */
export interface BenchResult {
  name: string;
  quick: boolean;
  machine: Machine;
  /** Figures, JSON-serialisable. */
  figures: Record<string, unknown>;
  targets: Target[];
  /** Text printed for people (tables). */
  text: string;
  /**
   * Failures that must fail `npm run bench` (zero downtime: a failed request; any benchmark: a broken
   * assumption such as a no-op pass planning actions).
   */
  failures: string[];
}

/** Write `bench/results/<name>.json`; returns the path. */
export async function writeResult(r: BenchResult): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${r.name}${r.quick ? '.quick' : ''}.json`);
  await writeFile(file, `${JSON.stringify(r, null, 2)}\n`);
  return file;
}

/** Print a result (header, text, targets, failures) to stdout. */
export function printResult(r: BenchResult): void {
  const lines = [
    '',
    `== ${r.name}${r.quick ? ' (quick)' : ''} — ${describeMachine(r.machine)}`,
    r.text,
    '',
    targetsTable(r.targets),
    ...(r.failures.length > 0 ? ['', `FAILURES (${r.failures.length}):`, ...r.failures.map((f) => `  - ${f}`)] : []),
  ];
  console.log(lines.join('\n'));
}
