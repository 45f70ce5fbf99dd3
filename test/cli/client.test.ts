/**
 * The client commands against a real, listening operator (harness systemd, Caddy, asset server):
 * `deploy --follow` and `status --follow` show each step of a blue/green deployment as it happens
 * (plain lines, and a spinner on a TTY) and exit 0; a version that never gets healthy exits 4 (rolled
 * back); `apps` shows the table; errors of the API and an unreachable operator exit 1.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli.ts';
import type { CliIO } from '../../src/cli/client.ts';
import { loadConfig, type OperatorConfig } from '../../src/config.ts';
import { startOperator } from '../../src/operator.ts';
import { cleanupTeam, surgeBlock } from '../e2e/operator.ts';
import { cleanupAfter, freePort, getTestHost, systemdEnv, tempDir, uniqueName, waitFor } from '../harness/index.ts';

const TOKEN = 'cli-test-token-0123456789abcdef';

/** Output with the time each piece arrived. */
function timedIO(isTTY: boolean): CliIO & { chunks: { at: number; text: string }[]; text(): string } {
  const chunks: { at: number; text: string }[] = [];
  return { out: (text) => void chunks.push({ at: Date.now(), text }), isTTY, columns: 120, chunks, text: () => chunks.map((c) => c.text).join('') };
}

describe('client commands against a running operator', () => {
  it('deploy/status --follow show each step live; rollback exits 4; apps; errors', { timeout: 90_000 }, async () => {
    const host = getTestHost();
    const dir = await tempDir('cli');
    const team = uniqueName('cli');
    const base = loadConfig({ env: {}, flags: {} });
    const config: OperatorConfig = {
      ...base,
      listen: { host: '127.0.0.1', port: 0 },
      tokens: [TOKEN],
      stateDir: path.join(dir, 'state'),
      appsDir: path.join(dir, 'state', 'apps'),
      systemdScope: 'user',
      dockerSocket: host.docker.socket,
      caddyAdmin: host.caddy.adminUrl,
      caddyServer: host.caddy.serverName,
      caddyListen: [`127.0.0.1:${host.caddy.httpPort}`],
      caddyGraceMs: 5_000,
      serverId: 'test-host',
      resyncMs: 2_000,
      stopTimeoutSec: 5,
      allowPrivateNetworks: ['127.0.0.0/8'],
      surgePorts: surgeBlock(),
      deadlines: { ...base.deadlines, probeIntervalMs: 100, probeTimeoutMs: 1_000, healthyMs: 3_000, drainMs: 2_000 },
    };
    const op = await startOperator(config, { systemdEnv: systemdEnv(), logger: pino({ level: 'silent' }) });
    cleanupAfter(() => cleanupTeam(team, config));
    cleanupAfter(() => op.stop());
    const url = op.server?.url ?? '';
    const [blue, green] = [await freePort(), await freePort()];
    const write = async (name: string, id: number, version: string, asset = `app-${version}.tar.gz`): Promise<string> => {
      const f = path.join(dir, name);
      await writeFile(
        f,
        JSON.stringify({
          app_id: 1,
          environment_id: 1,
          team_id: team,
          deployment_id: id,
          deployment_strategy: 'blue_green',
          domain: `${team}.cli.test`,
          asset_url: `${host.assets.baseUrl}/${asset}`,
          callback_url: 'http://127.0.0.1:9/cb',
          env_vars: {},
          health_check_path: '/healthz',
          target_version: version,
          slots: { blue: { instance_id: `${team}-b`, port: blue }, green: { instance_id: `${team}-g`, port: green } },
        }),
      );
      return f;
    };
    const cli = async (args: string[], io = timedIO(false)) => {
      const err: string[] = [];
      const code = await main(['node', 'crate-operator', ...args, '--url', url, '--token', TOKEN], (l) => err.push(l), io);
      return { code, out: io.text(), err: err.join('\n'), io };
    };

    // Plain output: a line when each step starts and ends, in order, then the outcome.
    const v1 = await cli(['deploy', await write('v1.json', 301, 'v1'), '--follow']);
    expect(v1.code, v1.err + v1.out).toBe(0);
    const lines = v1.out.split('\n');
    expect(lines).toContain('/v1/app/instance/binary/deploy: HTTP 202');
    const steps = lines.filter((l) => /^ {2}[→✓]/.test(l));
    expect(steps[0]).toBe('  → fetch release v1');
    expect(steps[1]).toMatch(/^ {2}✓ fetch release v1 {2}\d+\.\ds$/);
    expect(steps.filter((l) => l.startsWith('  ✓')).length).toBe(steps.filter((l) => l.startsWith('  →')).length);
    expect(lines.some((l) => /^deployment 301 succeeded in \d+\.\ds$/.test(l))).toBe(true);

    // status --follow on a TTY: spinner line, finished steps printed while the deployment still runs.
    const v2 = await cli(['deploy', await write('v2.json', 302, 'v2')]);
    expect(v2.code).toBe(0);
    const tty = timedIO(true);
    const followed = await cli(['status', '302', '--follow'], tty);
    expect(followed.code, followed.err + followed.out).toBe(0);
    expect(followed.out).toContain('\r\x1b[K');
    expect(followed.out).not.toContain('  →');
    const status = (await op.app.inject({ method: 'GET', url: '/v1/app/deploy/302/status', headers: { authorization: `Bearer ${TOKEN}` } })).json<{ finished_at: string; steps: { name: string }[] }>();
    expect(status.steps.some((s) => /^wait until .* is healthy$/.test(s.name))).toBe(true);
    for (const s of status.steps) expect(followed.out).toContain(`✓ ${s.name}`);
    const firstDone = tty.chunks.find((c) => c.text.includes('✓'));
    expect(firstDone && firstDone.at).toBeLessThan(Date.parse(status.finished_at));

    // A version that never gets healthy is rolled back: exit 4, the failed step and the error shown.
    const v3 = await cli(['deploy', await write('v3.json', 303, 'v3', 'app-v3-broken.tar.gz'), '--follow']);
    expect(v3.code, v3.out).toBe(4);
    expect(v3.out).toMatch(/✗ wait until .* is healthy .*E_HEALTH_TIMEOUT/);
    expect(v3.out).toMatch(/deployment 303 rolled back in .* — E_HEALTH_TIMEOUT/);
    expect((await cli(['status', '303'])).code).toBe(4);
    const done = await cli(['status', '301']);
    expect(done.code).toBe(0);
    expect(done.out).toMatch(/^deployment 301 \(deploy, blue_green, v1\): succeeded/);

    // The table shows the last observation: the pass after the rollback brings it up to date. The
    // document was put back to the applied revision (v2), so the desired and serving versions agree.
    const want = new RegExp(`^${team}/1/1 +${team}\\.cli\\.test +v2 +1 up / 2 +failed +303 rolled_back`, 'm');
    const apps = await waitFor('apps to show the rolled back app', async () => {
      const r = await cli(['apps']);
      return r.code === 0 && want.test(r.out) ? r : undefined;
    }, 15_000, 200);
    expect(apps.out.split('\n')[0]).toMatch(/^APP +DOMAIN +VERSION +INSTANCES +STATE +LAST DEPLOYMENT$/);
    const json = JSON.parse((await cli(['apps', '--json'])).out) as { apps: { team_id: string }[] };
    expect(json.apps.some((a) => a.team_id === team)).toBe(true);

    // Errors: the API's refusal names the field; an unknown id; an unreachable operator.
    const bad = path.join(dir, 'bad.json');
    await writeFile(bad, JSON.stringify({ team_id: team, environment_id: 1, app_id: 1, instance_ids: ['x'], domain: 'a.test' }));
    const refused = await cli(['deploy', bad]);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/HTTP 400 E_VALIDATION[\s\S]*callback_url/);
    expect((await cli(['status', '999999'])).code).toBe(1);
    const io = timedIO(false);
    const down = await main(['node', 'crate-operator', 'apps', '--url', `http://127.0.0.1:${await freePort()}`, '--token', TOKEN], () => undefined, io);
    expect(down).toBe(1);
  });
});
