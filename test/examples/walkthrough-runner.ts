/**
 * Runs the walkthrough of examples/README.md inside a fresh network namespace (the test starts it
 * with `unshare --net`), so its fixed ports (7070, 8080, 8000, the apps' ports) cannot collide with
 * anything else on the machine. Brings up loopback, then runs each step as a reader would: background
 * commands in their own process group (one "terminal" each), Ctrl-C as SIGINT to that group.
 *
 * Prints one `STEP <json>` line per step ({line, ok, ms, code?, output?, why?}) and stops at the
 * first failure; whatever runs in the background is interrupted (then killed) before it exits.
 * Environment: CRATE_STATE_DIR (required, the operator's state dir), WALKTHROUGH (README path).
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { parseWalkthrough, type Step } from './walkthrough.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const readme = process.env.WALKTHROUGH ?? fileURLToPath(new URL('../../examples/README.md', import.meta.url));
if (!process.env.CRATE_STATE_DIR) throw new Error('CRATE_STATE_DIR must be set');

/**
 * `npx crate-operator …` runs what package.json's `bin` names (npm exec resolves the project's own
 * bin); calling it directly saves npm's start-up per command. The test checks that `bin` entry and
 * runs `npx crate-operator --help` itself, so the shortcut cannot hide a broken `npx` path.
 */
function resolveBin(argv: string[]): string[] {
  if (argv[0] === 'npx' && argv[1] === 'crate-operator') return [process.execPath, 'bin/crate-operator.js', ...argv.slice(2)];
  return argv;
}

interface Terminal {
  proc: ResultPromise;
  output: string;
}
const terminals = new Map<number, Terminal>();

function report(r: Record<string, unknown>): void {
  process.stdout.write(`STEP ${JSON.stringify(r)}\n`);
}

function groupSignal(t: Terminal, sig: NodeJS.Signals): void {
  try {
    if (t.proc.pid !== undefined) process.kill(-t.proc.pid, sig);
  } catch {
    // The group is gone already.
  }
}

async function interrupt(n: number, deadlineMs: number): Promise<{ ok: boolean; why?: string; output: string }> {
  const t = terminals.get(n);
  if (!t) return { ok: false, why: `nothing runs in terminal ${n}`, output: '' };
  groupSignal(t, 'SIGINT');
  const done = await Promise.race([t.proc.then(() => true, () => true), sleep(deadlineMs, false, { ref: false })]);
  terminals.delete(n);
  if (!done) {
    groupSignal(t, 'SIGKILL');
    await t.proc.catch(() => undefined);
    return { ok: false, why: `terminal ${n} did not stop within ${deadlineMs} ms after Ctrl-C`, output: t.output };
  }
  return { ok: true, output: t.output };
}

async function runStep(step: Step): Promise<{ ok: boolean; why?: string; code?: number; output?: string }> {
  if (step.kind === 'interrupt') {
    const r = await interrupt(step.terminal, 60_000);
    return { ...r, output: r.output.slice(-4000) };
  }
  if (step.kind === 'background') {
    const [file, ...args] = step.argv as [string, ...string[]];
    // detached: its own process group, as a terminal's foreground job; Ctrl-C reaches the whole group.
    const proc = execa(file, args, { cwd: repo, detached: true, reject: false, all: true, buffer: false, stdin: 'ignore' });
    const t: Terminal = { proc, output: '' };
    proc.all?.setEncoding('utf8');
    proc.all?.on('data', (c: string) => (t.output += c));
    terminals.set(step.terminal, t);
    const until = Date.now() + 120_000;
    let exited = false;
    void proc.finally(() => (exited = true));
    while (!t.output.includes(step.readyWhen)) {
      if (exited) return { ok: false, why: 'exited before it was ready', output: t.output.slice(-4000) };
      if (Date.now() > until) return { ok: false, why: `not ready within 120 s (waiting for "${step.readyWhen}")`, output: t.output.slice(-4000) };
      await sleep(100);
    }
    return { ok: true, output: t.output.slice(-2000) };
  }
  const [file, ...args] = resolveBin(step.argv) as [string, ...string[]];
  const until = Date.now() + (step.retry ? 30_000 : 0);
  for (;;) {
    const r = await execa(file, args, { cwd: repo, reject: false, all: true, timeout: 120_000, stdin: 'ignore' });
    const output = String(r.all ?? '');
    const code = r.exitCode ?? -1;
    const why =
      code !== step.exitCode ? `exit code ${code}, expected ${step.exitCode}` : step.expect !== null && !output.includes(step.expect) ? `output does not contain ${JSON.stringify(step.expect)}` : undefined;
    if (!why) return { ok: true, code, output: output.slice(-2000) };
    if (Date.now() >= until) return { ok: false, why, code, output: output.slice(-4000) };
    await sleep(500);
  }
}

async function main(): Promise<number> {
  await execa('ip', ['link', 'set', 'lo', 'up']);
  const steps = parseWalkthrough(readFileSync(readme, 'utf8'));
  let failed = false;
  try {
    for (const step of steps) {
      const t0 = performance.now();
      const r = await runStep(step);
      report({ line: step.line, kind: step.kind, ms: Math.round(performance.now() - t0), ...r });
      if (!r.ok) {
        failed = true;
        break;
      }
    }
  } finally {
    for (const [n, t] of [...terminals]) {
      const r = await interrupt(n, 30_000);
      report({ line: `(cleanup) Ctrl-C in terminal ${n}`, kind: 'cleanup', ok: r.ok, ...(r.why ? { why: r.why } : {}), output: t.output.slice(-4000) });
    }
  }
  return failed ? 1 : 0;
}

process.exitCode = await main();
