/**
 * The two ways to run the operator:
 *
 * - `serve` (production): exactly the given settings (flags > environment > `--config` file >
 *   defaults); refuses to start without an API token.
 * - `start` / `dev` (`npm start`): embedded defaults (./embedded.ts): uses the host's systemd, Docker
 *   and Caddy where they run, starts private ones where they do not, and prints what it uses and
 *   where. A token comes from the settings or `<state dir>/token` (generated once, mode 0600, printed
 *   once). Ctrl-C stops the operator and everything it started.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { loadConfig, type OperatorConfig } from '../config.ts';
import { CrateError, describeError } from '../core/errors.ts';
import type { RunningOperator } from '../operator.ts';
import type { EmbeddedHost, GivenSettings } from './embedded.ts';
import { addSettings } from './settings.ts';

/** A running operator as the CLI holds it: resolves `closed` after a signal or `close()`. */
export interface RunningCli {
  url: string;
  closed: Promise<void>;
  close(): Promise<void>;
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
 * Run until SIGINT/SIGTERM (or `close()`): then stop accepting requests, stop the loop (deployments
 * in flight resume on the next start), close the records, and run `after` (the embedded host's
 * stop). A second signal while stopping exits at once (the next start cleans up).
 */
export function runUntilSignal(op: RunningOperator, log: (line: string) => void, after: () => Promise<void> = () => Promise.resolve()): RunningCli {
  let resolveClosed: () => void = () => undefined;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      process.once('SIGINT', force);
      process.once('SIGTERM', force);
      try {
        await op.stop();
        await after();
      } catch (err) {
        log(`crate-operator: error while stopping: ${describeError(err).message}`);
      } finally {
        process.removeListener('SIGINT', force);
        process.removeListener('SIGTERM', force);
        resolveClosed();
      }
    })();
    return closing;
  };
  function onSignal(sig: NodeJS.Signals): void {
    log(`crate-operator: ${sig}: stopping (again to force)`);
    void close();
  }
  function force(): void {
    log('crate-operator: forced exit; the next start cleans up what is left');
    process.exit(130);
  }
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return { url: op.server?.url ?? '', closed, close };
}

/** Run the operator with exactly `config` (serve). */
export async function runOperator(config: OperatorConfig, log: (line: string) => void): Promise<RunningCli> {
  // Loaded on demand: the client commands start faster without the operator's modules.
  const { startOperator } = await import('../operator.ts');
  const op = await startOperator(config);
  log(`crate-operator listening on ${op.server?.url ?? '(not listening)'} (server id ${config.serverId}, state ${config.stateDir})`);
  return runUntilSignal(op, log);
}

/**
 * The settings `start` changes when they were not given: a loopback Caddy port, loopback asset and
 * callback URLs, a shorter health deadline, and the server id `local` (what the examples use).
 */
export function embeddedDefaults(base: OperatorConfig): Partial<OperatorConfig> {
  return {
    serverId: 'local',
    caddyListen: ['127.0.0.1:8080'],
    allowPrivateNetworks: ['127.0.0.0/8', '::1'],
    deadlines: { ...base.deadlines, healthyMs: 10_000 },
  };
}

/** Which component settings were given, found by resolving the settings against two different defaults. */
export function givenSettings(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): GivenSettings {
  const a = loadConfig({ flags, env });
  const b = loadConfig({ flags, env, defaults: { systemdScope: a.systemdScope === 'user' ? 'system' : 'user', dockerSocket: `${a.dockerSocket}.probe`, caddyAdmin: 'http://probe.invalid:1' } });
  return { systemdScope: a.systemdScope === b.systemdScope, dockerSocket: a.dockerSocket === b.dockerSocket, caddyAdmin: a.caddyAdmin === b.caddyAdmin };
}

/** The lines `start` prints: what it uses and where. */
export function describeStart(config: OperatorConfig, host: EmbeddedHost, url: string, token: { note: string }): string[] {
  return [
    'crate-operator started with embedded defaults',
    `  API       ${url}   (docs ${url}/docs, health ${url}/healthz, metrics ${url}/metrics)`,
    `  token     ${token.note}`,
    `  state     ${config.stateDir}   (desired state: ${path.join(config.stateDir, 'desired')})`,
    `  systemd   ${host.systemd.detail}`,
    `  docker    ${host.docker.detail}`,
    `  caddy     ${host.caddy.detail}`,
    ...(host.workspace ? [`  private   ${host.workspace}   (stops with the operator; what it uses: ${path.join(config.stateDir, '.host', 'current.json')})`] : []),
    '  Ctrl-C stops the operator and everything it started; apps keep their desired state and come back on the next start.',
  ];
}

/** Register `serve` and `start` (alias `dev`). `running(cli)` receives the running operator. */
export function registerRun(program: Command, log: (line: string) => void, running: (cli: RunningCli) => void): void {
  addSettings(
    program
      .command('serve')
      .description('run the operator with exactly the given settings (production; a token is required)')
      .addHelpText('after', '\nFlags beat environment variables, which beat the --config file, which beats the defaults.\nSIGINT/SIGTERM: stop accepting requests, finish in-flight ones, stop; deployments in flight resume on the next start.'),
  ).action(async (flags: Record<string, unknown>) => {
    const config = loadConfig({ flags });
    if (config.tokens.length === 0) {
      throw new CrateError('E_CONFIG', 'serve refuses to start without an API token: pass --token, set CRATE_API_TOKEN, or put token in the --config file');
    }
    running(await runOperator(config, log));
  });

  addSettings(
    program
      .command('start')
      .alias('dev')
      .description('run the operator with embedded defaults (npm start): use the host\'s systemd, Docker and Caddy, or start private ones')
      .addHelpText(
        'after',
        [
          '',
          'For systemd, Docker and Caddy each: a setting that was given is used as is; else the host\'s own',
          '(systemd as PID 1, a Docker socket and a Caddy admin API that answer at the defaults); else a private',
          'one is started under <state dir>/.host/ (systemd user manager, dockerd if installed, Caddy serving',
          'the apps on --caddy-listen, default 127.0.0.1:8080). Also different from `serve` when not given:',
          'asset and callback URLs may be on loopback (--allow-private 127.0.0.0/8,::1), the health deadline',
          'is 10 s and the server id is `local`. Without a token it uses <state dir>/token, generating it',
          'once (mode 0600).',
          'Ctrl-C stops the operator and what it started; apps come back on the next start.',
        ].join('\n'),
      ),
  ).action(async (flags: Record<string, unknown>) => {
    const t0 = performance.now();
    const base = loadConfig({ flags });
    let config = loadConfig({ flags, defaults: embeddedDefaults(base) });
    let tokenNote = 'from the settings (--token / CRATE_API_TOKEN / config file)';
    if (config.tokens.length === 0) {
      const t = await ensureTokenFile(config.stateDir);
      tokenNote = t.created ? `generated API token, saved to ${t.file} (0600): ${t.token}` : `from ${t.file}`;
      config = { ...config, tokens: [t.token] };
    }
    const [{ startOperator }, { prepareEmbeddedHost }] = await Promise.all([import('../operator.ts'), import('./embedded.ts')]);
    const host = await prepareEmbeddedHost(config, givenSettings(flags), log);
    // If the process dies without stopping them, do not leave daemons running; the next start cleans up.
    const emergency = (): void => {
      for (const pid of host.pids) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    };
    process.once('exit', emergency);
    let op: RunningOperator;
    try {
      op = await startOperator(host.config, host.systemdEnv ? { systemdEnv: host.systemdEnv } : {});
    } catch (err) {
      await host.stop().catch(() => undefined);
      process.removeListener('exit', emergency);
      throw err;
    }
    const url = op.server?.url ?? '';
    for (const l of describeStart(host.config, host, url, { note: tokenNote })) log(l);
    log(`  ready in ${Math.round(performance.now() - t0)} ms`);
    running(
      runUntilSignal(op, log, async () => {
        await host.stop();
        process.removeListener('exit', emergency);
        log('crate-operator: stopped');
      }),
    );
  });
}
