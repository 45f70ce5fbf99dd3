/**
 * `crate-operator status <deployment-id> [--follow]`: a deployment's steps, and with `--follow` each
 * step as it happens (from the event stream `GET /v1/app/deploy/{id}/events`, reconnecting when the
 * stream or the operator goes away). On a terminal a spinner line shows the running step; otherwise
 * one plain line per change. The exit code tells how it ended (STATUS_EXIT).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { CrateError, hasCode } from '../core/errors.ts';
import { addClientOptions, apiRequest, clientTarget, errorLine, readEvents, type CliIO, type ClientTarget } from './client.ts';

/** Exit codes of `status` (and `deploy --follow`). 1 is any error (unreachable, unknown id), 2 a usage error. */
export const STATUS_EXIT = { succeeded: 0, failed: 3, rolled_back: 4, superseded: 5, unfinished: 6 } as const;

const TERMINAL = new Set(['succeeded', 'failed', 'rolled_back', 'superseded']);

/** The fields of a status document this command shows. */
export interface StatusView {
  deployment_id: string;
  action?: string;
  strategy?: string | null;
  target_version?: string | null;
  status: string;
  phase?: string;
  error?: { code: string; message: string } | null;
  started_at?: string;
  finished_at?: string | null;
  steps: { name: string; status: string; started_at: string | null; finished_at: string | null; detail: string | null }[];
}

/** The exit code for a status: STATUS_EXIT for terminal ones, `unfinished` otherwise. */
export function exitCodeFor(status: string): number {
  return (STATUS_EXIT as Record<string, number>)[status] ?? STATUS_EXIT.unfinished;
}

const secs = (from: string | null | undefined, to: string | null | undefined): string => {
  if (!from || !to) return '';
  const ms = Date.parse(to) - Date.parse(from);
  return Number.isFinite(ms) && ms >= 0 ? `${(ms / 1000).toFixed(1)}s` : '';
};

const MARK: Record<string, string> = { succeeded: '✓', failed: '✗', rolled_back: '↺', skipped: '-', running: '→', pending: '·' };

/** One line for a step in its current status. */
export function stepLine(s: StatusView['steps'][number]): string {
  const took = s.status === 'running' ? '' : secs(s.started_at, s.finished_at);
  const what = s.status === 'rolled_back' ? `${s.name} (rolled back)` : s.status === 'skipped' ? `${s.name} (skipped)` : s.name;
  const detail = s.status === 'failed' && s.detail ? `: ${s.detail}` : '';
  return `  ${MARK[s.status] ?? '?'} ${what}${took ? `  ${took}` : ''}${detail}`;
}

/** The heading line of a deployment. */
export function headLine(d: StatusView): string {
  const what = [d.action, d.strategy, d.target_version].filter((x) => x !== null && x !== undefined && x !== '').join(', ');
  return `deployment ${d.deployment_id}${what ? ` (${what})` : ''}: ${d.status}`;
}

/** The closing line of a finished deployment. */
export function finalLine(d: StatusView): string {
  const took = secs(d.started_at, d.finished_at);
  const err = d.error ? ` — ${d.error.code}: ${d.error.message}` : '';
  return `deployment ${d.deployment_id} ${d.status.replace('_', ' ')}${took ? ` in ${took}` : ''}${err}`;
}

/**
 * The lines a change from `prev` to `next` adds (pure): a step that starts, finishes, fails or is
 * rolled back gets one line; a status or phase change one line. `tty` leaves out "started" lines
 * (the spinner shows the running step).
 */
export function changeLines(prev: StatusView | undefined, next: StatusView, tty: boolean): string[] {
  const out: string[] = [];
  if (!prev) out.push(headLine(next));
  else if (prev.status !== next.status && !TERMINAL.has(next.status)) out.push(`status: ${next.status}`);
  if (prev && prev.phase !== next.phase && next.phase === 'rolling back') out.push('rolling back');
  next.steps.forEach((s, i) => {
    const was = prev?.steps[i]?.status ?? (prev ? 'pending' : undefined);
    if (was === s.status) return;
    if (s.status === 'pending') return;
    if (s.status === 'running' && tty) return;
    // The first document may show steps that finished before we looked: list them once.
    out.push(stepLine(s));
  });
  if (TERMINAL.has(next.status)) out.push(finalLine(next));
  return out;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/** Prints a followed deployment: permanent lines for changes, and on a TTY a spinner line. */
export class FollowRenderer {
  private last: StatusView | undefined;
  private frame = 0;
  private spinning = false;

  constructor(
    private readonly io: CliIO,
    private readonly now: () => number = Date.now,
  ) {}

  update(d: StatusView): void {
    const lines = changeLines(this.last, d, this.io.isTTY);
    this.last = d;
    if (lines.length === 0) return;
    this.clearSpinner();
    for (const l of lines) this.io.out(`${l}\n`);
    this.tick();
  }

  /** Redraw the spinner line (TTY only, while a step runs). */
  tick(): void {
    if (!this.io.isTTY || !this.last || TERMINAL.has(this.last.status)) return;
    const running = this.last.steps.find((s) => s.status === 'running');
    const since = running?.started_at ? Date.parse(running.started_at) : Date.parse(this.last.started_at ?? '');
    const el = Number.isFinite(since) ? ` ${((this.now() - since) / 1000).toFixed(1)}s` : '';
    const text = running ? running.name : this.last.phase || this.last.status;
    const line = `${SPINNER[this.frame++ % SPINNER.length] ?? ''} ${text}${el}`;
    const width = Math.max(20, (this.io.columns ?? 80) - 1);
    this.io.out(`\r\x1b[K${line.slice(0, width)}`);
    this.spinning = true;
  }

  clearSpinner(): void {
    if (this.spinning) this.io.out('\r\x1b[K');
    this.spinning = false;
  }

  /** Print a note (e.g. reconnecting) without breaking the spinner. */
  note(text: string): void {
    this.clearSpinner();
    this.io.out(`${text}\n`);
  }
}

/**
 * Follow a deployment until it ends (or `timeoutMs`): returns its final status document. Reconnects
 * after a dropped stream or an unreachable operator (e.g. restarted), with the server's retry delay.
 */
export async function follow(t: ClientTarget, id: string, io: CliIO, timeoutMs: number): Promise<StatusView> {
  const r = new FollowRenderer(io);
  const spinner = io.isTTY ? setInterval(() => r.tick(), 100) : undefined;
  const until = Date.now() + timeoutMs;
  let final: StatusView | undefined;
  let unreachable = false;
  // The server's `retry:` hint holds for later connections too (also after an unreachable spell).
  let retryMs = 1000;
  try {
    while (!final) {
      try {
        const res = await readEvents(
          t,
          id,
          (e) => {
            if (e.event !== 'status') return;
            const d = JSON.parse(e.data) as StatusView;
            if (unreachable) r.note('reconnected');
            unreachable = false;
            r.update(d);
            if (TERMINAL.has(d.status)) final = d;
          },
          { signal: AbortSignal.timeout(Math.max(1, until - Date.now())), idleMs: 45_000 },
        );
        retryMs = res.retryMs ?? retryMs;
      } catch (err) {
        if (!hasCode(err, 'E_CLIENT')) throw err;
        if (!unreachable) r.note(`${(err as Error).message}; retrying`);
        unreachable = true;
      }
      if (final) break;
      if (Date.now() >= until) throw new CrateError('E_TIMEOUT', `deployment ${id} did not finish within ${Math.round(timeoutMs / 1000)} s`);
      await sleep(Math.min(retryMs, Math.max(0, until - Date.now())));
    }
  } finally {
    if (spinner) clearInterval(spinner);
    r.clearSpinner();
  }
  return final;
}

/** Print a deployment's current status once (all steps). */
export function printStatus(d: StatusView, io: CliIO): void {
  io.out(`${headLine(d)}${d.phase && d.phase !== d.status ? ` (${d.phase})` : ''}\n`);
  for (const s of d.steps) io.out(`${stepLine(s)}\n`);
  if (TERMINAL.has(d.status)) io.out(`${finalLine(d)}\n`);
}

/** Register `status`. `done(code)` receives the exit code. */
export function registerStatus(program: Command, io: CliIO, done: (code: number) => void): void {
  addClientOptions(
    program
      .command('status')
      .description('show a deployment\'s steps; with --follow, watch them live until it ends')
      .argument('<deployment-id>', 'the deployment id (from the 202 answer, `apps`, or the platform)')
      .option('-f, --follow', 'stream the steps as they happen (server-sent events) until the deployment ends')
      .option('--timeout <seconds>', 'with --follow: give up after this long (exit 1)', '3600')
      .addHelpText(
        'after',
        `\nExit codes: 0 succeeded, ${STATUS_EXIT.failed} failed, ${STATUS_EXIT.rolled_back} rolled back, ${STATUS_EXIT.superseded} superseded, ${STATUS_EXIT.unfinished} not finished yet (without --follow), 1 error (operator unreachable, unknown id), 2 usage.`,
      ),
  ).action(async (id: string, flags: { follow?: boolean; timeout: string; url?: string; token?: string; stateDir?: string; config?: string }) => {
    const t = clientTarget(flags);
    if (flags.follow) {
      const timeout = Number(flags.timeout);
      if (!Number.isFinite(timeout) || timeout <= 0) throw new CrateError('E_CONFIG', '--timeout: expected a positive number of seconds');
      const d = await follow(t, id, io, timeout * 1000);
      done(exitCodeFor(d.status));
      return;
    }
    const r = await apiRequest(t, 'GET', `/v1/app/deploy/${encodeURIComponent(id)}/status`);
    if (r.status !== 200) throw new CrateError(r.status === 404 ? 'E_NOT_FOUND' : 'E_CLIENT', errorLine(r.status, r.body));
    const d = r.body as StatusView;
    printStatus(d, io);
    done(exitCodeFor(d.status));
  });
}
