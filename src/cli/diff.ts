/**
 * `crate-operator diff [--state-dir D] [--json] [--all]`: what the operator would do now, for every
 * app, like `flux diff`. Offline: it reads the state dir (documents read-only, records read-only) and
 * observes the configured systemd, Docker and Caddy once, then plans each app exactly as a reconcile
 * pass decides (src/reconciler/plan-host.ts). It changes nothing and needs no running operator (and
 * may run beside one).
 *
 * Output: a readable plan per app that would change (colour on a TTY, `--color`/`--no-color` to
 * force), or JSON with `--json`. Exit codes: 0 in sync, 1 changes, 2 error (invalid documents,
 * an unreachable component, a bad setting).
 */
import type { Command } from 'commander';
import { loadConfig } from '../config.ts';
import { appKeyString } from '../core/identity.ts';
import { describeError } from '../core/errors.ts';
import { formatHostPlan, hasChanges, hostPlanStatus, planView } from '../reconciler/format.ts';
import { planOffline } from '../reconciler/plan-host.ts';

/** Where the report goes (stdout, or a buffer in tests). */
export interface DiffIO {
  out(s: string): void;
  isTTY?: boolean;
}

export const DIFF_EXIT = { in_sync: 0, changes: 1, error: 2 } as const;

interface DiffFlags {
  json?: boolean;
  all?: boolean;
  color?: boolean;
  [setting: string]: unknown;
}

/**
 * Register `diff` on `program`. `done(code)` receives the exit code; `log` gets error lines;
 * `env` is the environment settings and `systemctl` read (process.env by default).
 */
export function registerDiff(
  program: Command,
  io: DiffIO,
  done: (code: number) => void,
  log: (line: string) => void = (l) => console.error(l),
  env: NodeJS.ProcessEnv = process.env,
): void {
  program
    .command('diff')
    .description('show what the operator would do now for every app (reads the state dir and the host; changes nothing)')
    .option('--state-dir <dir>', 'state directory (CRATE_STATE_DIR; default ./state)')
    .option('--systemd-scope <scope>', 'systemd scope, system or user (CRATE_SYSTEMD_SCOPE; default system)')
    .option('--docker-socket <path>', 'Docker Engine socket (CRATE_DOCKER_SOCKET; default /var/run/docker.sock)')
    .option('--caddy-admin <url>', 'Caddy admin API (CRATE_CADDY_ADMIN; default http://127.0.0.1:2019)')
    .option('--caddy-server <name>', 'Caddy HTTP server the routes live in (CRATE_CADDY_SERVER; default crate)')
    .option('--surge-ports <a-b>', 'surge port range (CRATE_SURGE_PORTS; default 20000-29999)')
    .option('--config <file>', 'YAML file with these settings in snake_case (CRATE_CONFIG)')
    .option('--json', 'print the plans as JSON')
    .option('--all', 'also list apps that are in sync')
    .option('--color', 'colour the output (default: when stdout is a terminal)')
    .option('--no-color', 'never colour the output')
    .addHelpText('after', '\nExit codes: 0 every app is in sync, 1 some app would change, 2 error (invalid document, unreachable component, bad setting).')
    .action(async (flags: DiffFlags) => {
      let code: number;
      try {
        const { json, all, color, ...settings } = flags;
        const config = loadConfig({ flags: settings, env });
        const report = await planOffline(config, { systemdEnv: env });
        const status = hostPlanStatus(report);
        code = DIFF_EXIT[status];
        if (json) {
          const apps = report.plans
            .filter((a) => all === true || hasChanges(a) || (a.mode === 'left_alone' && a.plan.notes.length > 0))
            .map((a) => ({ app: appKeyString(a.key), team_id: a.key.team, environment_id: a.key.env, app_id: a.key.app, mode: a.mode, deployment_id: a.deploymentId, changes: hasChanges(a), plan: planView(a.plan) }));
          io.out(`${JSON.stringify({ status, apps, document_errors: report.documentErrors.map((e) => ({ path: e.path, error: e.error })), unavailable: report.unavailable }, null, 2)}\n`);
        } else {
          io.out(formatHostPlan(report, { color: color ?? io.isTTY === true, all: all === true }));
        }
      } catch (err) {
        log(`crate-operator diff: ${describeError(err).message}`);
        code = DIFF_EXIT.error;
      }
      done(code);
    });
}
