/**
 * The `crate-operator` command line (commander). Every command has `--help`.
 *
 * Running the operator (src/cli/run.ts):
 * - `serve`: exactly the given settings (production); refuses to start without an API token.
 * - `start` (alias `dev`, `npm start`): embedded defaults: the host's systemd, Docker and Caddy where
 *   they run, private ones where they do not (src/cli/embedded.ts).
 *
 * Talking to a running operator (src/cli/client.ts: `--url`, `--token`):
 * - `apps`: the apps on this host as a table;
 * - `status <deployment-id> [--follow]`: a deployment's steps, live with --follow;
 * - `deploy <file>`: send a request body to the API.
 *
 * Offline: `validate <file...>`: check desired-state documents.
 *
 * `main(argv)` returns the process exit code instead of exiting, so it can be tested.
 */
import { Command } from 'commander';
import { CrateError, describeError } from './core/errors.ts';
import { registerApps } from './cli/apps.ts';
import type { CliIO } from './cli/client.ts';
import { registerDeploy } from './cli/deploy.ts';
import { registerDiff } from './cli/diff.ts';
import { registerRun, type RunningCli } from './cli/run.ts';
import { registerStatus } from './cli/status.ts';
import { registerValidate } from './cli/validate.ts';

export { ensureTokenFile, runOperator } from './cli/run.ts';

/** Where command output goes: stdout by default. */
export function stdoutIO(): CliIO {
  return {
    out: (s) => void process.stdout.write(s),
    isTTY: process.stdout.isTTY,
    ...(process.stdout.columns ? { columns: process.stdout.columns } : {}),
  };
}

/** The program with every command registered (for `main` and for help-text tests). */
export function buildProgram(log: (line: string) => void, io: CliIO, result: { code: number; server?: RunningCli }): Command {
  const program = new Command()
    .name('crate-operator')
    .description('Per-host deployment agent: systemd units, Docker containers and Caddy routes from a REST API')
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .configureOutput({ writeErr: (s) => log(s.trimEnd()), writeOut: (s) => io.out(s) })
    .addHelpText(
      'after',
      [
        '',
        'Quick start: `npm start` (this machine, embedded defaults), then in another shell',
        '`crate-operator deploy examples/requests/binary-instance-v1.json --follow` (see examples/README.md).',
        'Exit codes: 0 ok, 1 error, 2 usage or configuration error; `status`/`deploy --follow`: see their help.',
      ].join('\n'),
    );
  const done = (code: number): void => {
    result.code = code;
  };
  registerRun(program, log, (s) => (result.server = s));
  registerApps(program, io, done);
  registerStatus(program, io, done);
  registerDeploy(program, io, done);
  registerValidate(program, io, done);
  registerDiff(program, io, done, log);
  // Sub-commands report usage errors the same way (exitOverride and output are not inherited).
  for (const c of program.commands) c.exitOverride().configureOutput({ writeErr: (s) => log(s.trimEnd()), writeOut: (s) => io.out(s) });
  return program;
}

/** Parse `argv` (as process.argv) and run the command. Resolves with the exit code (once a server stopped). */
export async function main(argv: string[], log: (line: string) => void = (l) => console.error(l), io: CliIO = stdoutIO()): Promise<number> {
  const result: { code: number; server?: RunningCli } = { code: 0 };
  const program = buildProgram(log, io, result);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number };
    // Commander reports --help/--version and usage errors by throwing (exitOverride); it already printed them.
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) return e.exitCode === 0 ? 0 : 2;
    log(`crate-operator: ${describeError(err).message}`);
    return err instanceof CrateError && err.code === 'E_CONFIG' ? 2 : 1;
  }
  if (result.server) await result.server.closed;
  return result.code;
}
