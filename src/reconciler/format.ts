/**
 * Plans for people and for JSON clients (pure: no I/O, no clock).
 *
 * - `planView(plan)`: the JSON form the API returns (dry runs, `POST /v1/plan`) and `diff --json`
 *   prints. Holds step names, ports, versions and revision ids only, never document values (env,
 *   credentials), so it is safe to show.
 * - `formatHostPlan(report, {color})`: the readable report of `crate-operator diff`, one block per app
 *   that would change, like `flux diff`: numbered steps, fallbacks, the JSON-Patch between what runs
 *   and what is desired, notes; then document errors, unavailable components and a summary line.
 * - `hostPlanStatus(report)`: `in_sync` (exit 0), `changes` (exit 1) or `error` (exit 2).
 */
import type { Operation } from 'fast-json-patch';
import { appKeyString } from '../core/identity.ts';
import type { AppPlan } from './app-plan.ts';
import type { Plan } from './model.ts';

/** A plan as JSON clients see it. */
export interface PlanView {
  kind: Plan['kind'];
  strategy: Plan['strategy'];
  fallback: Plan['fallback'];
  drops_traffic: boolean;
  /** Step names in order, e.g. "start web v2 on :20001". */
  steps: string[];
  /** JSON-Patch from what runs to what is desired (instances keyed by id, runs by `<revision>@<port>`). */
  diff: Operation[];
  notes: string[];
}

export function planView(p: Plan): PlanView {
  return { kind: p.kind, strategy: p.strategy, fallback: p.fallback, drops_traffic: p.dropsTraffic, steps: p.actions.map((a) => a.name), diff: p.diff, notes: p.notes };
}

/** What `crate-operator diff` reports on (planOffline's result). */
export interface HostPlanReport {
  plans: AppPlan[];
  documentErrors: { path: string; error: string }[];
  unavailable: Partial<Record<string, string>>;
}

export type HostPlanStatus = 'in_sync' | 'changes' | 'error';

/** True when the host would be changed for this app, or differs from its document. */
export function hasChanges(a: AppPlan): boolean {
  return a.plan.actions.length > 0 || a.plan.diff.length > 0;
}

export function hostPlanStatus(r: HostPlanReport): HostPlanStatus {
  if (r.documentErrors.length > 0 || Object.keys(r.unavailable).length > 0) return 'error';
  return r.plans.some(hasChanges) ? 'changes' : 'in_sync';
}

export interface FormatOptions {
  /** ANSI colours (a TTY). Default false. */
  color?: boolean;
  /** Also list apps that are in sync (one line each). Default false. */
  all?: boolean;
}

type Paint = (code: string, s: string) => string;

const COLORS = { red: '31', green: '32', yellow: '33', blue: '34', magenta: '35', cyan: '36', dim: '2', bold: '1' } as const;

function painter(color: boolean): (c: keyof typeof COLORS, s: string) => string {
  const paint: Paint = (code, s) => (color ? `\u001b[${code}m${s}\u001b[0m` : s);
  return (c, s) => paint(COLORS[c], s);
}

/** A JSON Pointer as a readable path (`/instances/web/a1b2@3001`). */
function pointer(p: string): string {
  return p.replace(/~1/g, '/').replace(/~0/g, '~');
}

function short(v: unknown, max = 100): string {
  const s = JSON.stringify(v) ?? 'undefined';
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** One JSON-Patch operation as a line: `+ path value`, `- path`, `~ path value`. */
export function formatOperation(op: Operation, color = false): string {
  const c = painter(color);
  switch (op.op) {
    case 'add':
      return c('green', `+ ${pointer(op.path)} ${short(op.value)}`);
    case 'remove':
      return c('red', `- ${pointer(op.path)}`);
    case 'replace':
      return c('yellow', `~ ${pointer(op.path)} ${short(op.value)}`);
    default:
      return `${op.op} ${pointer(op.path)}`;
  }
}

/** The block of one app. */
export function formatAppPlan(a: AppPlan, opts: FormatOptions = {}): string {
  const c = painter(opts.color ?? false);
  const p = a.plan;
  const key = c('bold', appKeyString(a.key));
  if (a.mode === 'left_alone') {
    return p.notes.length > 0 ? `${c('magenta', '!')} ${key}  ${p.notes.join('; ')}\n` : '';
  }
  if (!hasChanges(a)) return opts.all ? `${c('green', '=')} ${key}  in sync\n` : '';
  const kindColor = p.kind === 'delete' ? 'red' : p.kind === 'deploy' ? 'cyan' : 'yellow';
  const how: string[] = [];
  if (p.actions.length === 0) how.push('differs, nothing will be done');
  else how.push(p.kind + (p.strategy ? ` (${p.strategy.replace('_', '/')})` : ''));
  if (a.mode === 'deploy' && a.deploymentId) how.push(`deployment ${a.deploymentId}${a.newRecord ? ' (new, from the document)' : ''}`);
  if (p.actions.length > 0) how.push(`${p.actions.length} step${p.actions.length === 1 ? '' : 's'}`);
  const lines = [`${c(kindColor, '~')} ${key}  ${how.join(', ')}`];
  const width = String(p.actions.length).length;
  p.actions.forEach((s, i) => {
    // The commit point: a failure after it is healed forward, not rolled back.
    const mark = s.commit ? c('dim', '  (commit point)') : '';
    lines.push(`    ${String(i + 1).padStart(width)}. ${s.name}${mark}`);
  });
  if (p.fallback) lines.push(`    ${c('yellow', `falls back from ${p.fallback.from} to ${p.fallback.to}: ${p.fallback.reason}`)}`);
  if (p.dropsTraffic) lines.push(`    ${c('red', 'drops traffic while the old runs stop before the new ones serve')}`);
  for (const n of p.notes) lines.push(`    ${c('dim', `note: ${n}`)}`);
  if (p.diff.length > 0) {
    lines.push('    diff (observed → desired):');
    for (const op of p.diff) lines.push(`      ${formatOperation(op, opts.color ?? false)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The whole report of `crate-operator diff`. */
export function formatHostPlan(r: HostPlanReport, opts: FormatOptions = {}): string {
  const c = painter(opts.color ?? false);
  let out = '';
  for (const a of r.plans) out += formatAppPlan(a, opts);
  const oneLine = (s: string): string => s.replace(/\s*\n\s*/g, ' ');
  for (const e of r.documentErrors) out += `${c('red', '✗')} ${e.path}: ${oneLine(e.error)} (the last valid version, if any, is planned)\n`;
  for (const [component, why] of Object.entries(r.unavailable)) out += `${c('red', '✗')} ${component} unavailable: ${oneLine(why ?? '')} (nothing that depends on it is planned)\n`;
  const changed = r.plans.filter(hasChanges).length;
  const alone = r.plans.filter((a) => a.mode === 'left_alone' && a.plan.notes.length > 0).length;
  const synced = r.plans.length - changed - alone;
  const parts = [`${r.plans.length} app${r.plans.length === 1 ? '' : 's'}`, `${changed} to change`, `${synced} in sync`];
  if (alone > 0) parts.push(`${alone} left alone`);
  if (r.documentErrors.length > 0) parts.push(`${r.documentErrors.length} document error${r.documentErrors.length === 1 ? '' : 's'}`);
  const status = hostPlanStatus(r);
  const colour = status === 'in_sync' ? 'green' : status === 'changes' ? 'yellow' : 'red';
  return `${out}${c(colour, parts.join(', '))}\n`;
}
