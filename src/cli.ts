/**
 * The `crate-operator` command line (commander). Commands:
 *
 * - `serve`: runs the operator with exactly the settings it is given (flags > environment > `--config`
 *   file > defaults, names from API.md "Running it"); refuses to start without an API token.
 * - `start`: the same server with embedded defaults for a developer machine (`npm start`): when no
 *   token is configured it uses `<state dir>/token`, generating one (mode 0600) and printing it.
 *
 * `main(argv)` returns the process exit code instead of exiting, so it can be tested.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { Command, Option } from 'commander';
import { loadConfig, type OperatorConfig } from './config.ts';
import { CrateError, describeError } from './core/errors.ts';
import { startOperator } from './operator.ts';
import type { RunningServer } from './server.ts';

/** Flags shared by `serve` and `start`, named as in API.md "Running it". */
function addSettings(cmd: Command): Command {
  return cmd
    .option('--listen <host:port>', 'API listen address (CRATE_LISTEN; default 127.0.0.1:7070)')
    .option('--token <tokens>', 'API bearer token(s), comma-separated (CRATE_API_TOKEN)')
    .option('--state-dir <dir>', 'state directory (CRATE_STATE_DIR; default ./state)')
    .option('--apps-dir <dir>', "where apps' releases and env files live (CRATE_APPS_DIR; default <state dir>/apps)")
    .addOption(new Option('--systemd-scope <scope>', 'systemd scope (CRATE_SYSTEMD_SCOPE; default system)').choices(['system', 'user']))
    .option('--docker-socket <path>', 'Docker Engine socket (CRATE_DOCKER_SOCKET; default /var/run/docker.sock)')
    .option('--caddy-admin <url>', 'Caddy admin API, http://HOST:PORT or unix:/path (CRATE_CADDY_ADMIN; default http://127.0.0.1:2019)')
    .option('--caddy-server <name>', 'Caddy HTTP server the routes live in (CRATE_CADDY_SERVER; default crate)')
    .option('--server-id <id>', "this host's server id (CRATE_SERVER_ID; default the host name)")
    .option('--callback-secret <secret>', 'callback signing secret (CRATE_CALLBACK_SECRET; default none)')
    .option('--surge-ports <a-b>', 'surge port range (CRATE_SURGE_PORTS; default 20000-29999)')
    .option('--config <file>', 'YAML file with any of these settings in snake_case (CRATE_CONFIG)');
}

/**
 * The token of the embedded-default start: `<stateDir>/token` if it exists, else a new random one
 * written there atomically with mode 0600. `created` tells whether it was just generated.
 */
export async function ensureTokenFile(stateDir: string): Promise<{ token: string; file: string; created: boolean }> {
  const file = path.join(stateDir, 'token');
  try {
    const token = (await readFile(file, 'utf8')).trim();
    if (token.length >= 16) return { token, file, created: false };
    throw new CrateError('E_CONFIG', `${file}: token shorter than 16 characters; delete the file to generate a new one`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString('base64url');
  const tmp = path.join(stateDir, `.token.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await fh.writeFile(`${token}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dir = await open(stateDir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return { token, file, created: true };
}

/**
 * Run the operator (operator.ts, the composition root) until SIGINT/SIGTERM: then stop accepting
 * requests, stop the loop (deployments in flight resume on the next start) and close the records.
 */
export async function runOperator(config: OperatorConfig, log: (line: string) => void): Promise<RunningServer> {
  const op = await startOperator(config);
  const server = op.server as RunningServer;
  let resolveClosed: () => void = () => undefined;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const close = async (): Promise<void> => {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await op.stop();
    resolveClosed();
  };
  function onSignal(): void {
    void close();
  }
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  log(`crate-operator listening on ${server.url} (server id ${config.serverId}, state ${config.stateDir})`);
  return { url: server.url, closed, close };
}

/** Parse `argv` (as process.argv) and run the command. Resolves with the exit code once the server stopped. */
export async function main(argv: string[], log: (line: string) => void = (l) => console.error(l)): Promise<number> {
  let server: RunningServer | undefined;
  const program = new Command()
    .name('crate-operator')
    .description('Per-host deployment agent: systemd units, Docker containers and Caddy routes from a REST API')
    .exitOverride()
    .configureOutput({ writeErr: (s) => log(s.trimEnd()) });

  addSettings(program.command('serve').description('run the operator with exactly the given settings (a token is required)')).action(
    async (flags: Record<string, unknown>) => {
      const config = loadConfig({ flags });
      if (config.tokens.length === 0) {
        throw new CrateError('E_CONFIG', 'serve refuses to start without an API token: pass --token, set CRATE_API_TOKEN, or put token in the --config file');
      }
      server = await runOperator(config, log);
    },
  );

  addSettings(program.command('start').description('run the operator with embedded defaults for this machine (npm start)')).action(
    async (flags: Record<string, unknown>) => {
      let config = loadConfig({ flags });
      if (config.tokens.length === 0) {
        const t = await ensureTokenFile(config.stateDir);
        log(t.created ? `crate-operator: generated API token (saved to ${t.file}): ${t.token}` : `crate-operator: API token from ${t.file}`);
        config = { ...config, tokens: [t.token] };
      }
      server = await runOperator(config, log);
    },
  );

  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number };
    // Commander reports --help/--version and usage errors by throwing (exitOverride); it already printed them.
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) return e.exitCode === 0 ? 0 : 2;
    log(`crate-operator: ${describeError(err).message}`);
    return err instanceof CrateError && err.code === 'E_CONFIG' ? 2 : 1;
  }
  if (server) await server.closed;
  return 0;
}
