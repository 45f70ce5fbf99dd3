/**
 * Injection corpus against a real operator (real systemd user manager, dockerd and Caddy):
 *
 * - Every hostile id, domain, image, version, health path, env key and volume (corpus.ts) in every
 *   field that takes one is refused with a 400 naming that field, and changes nothing.
 * - Env values with newlines, CR, quotes, `%`, `$`, backslashes, control characters and unicode reach
 *   a real systemd unit's process byte for byte (/proc/<pid>/environ; and as one argument through a
 *   Procfile `"$VAR"` reference, /proc/<pid>/cmdline) and a real container (`docker inspect` Env and
 *   the container process's /proc/<pid>/environ); hostile docker_command arguments reach Cmd and
 *   argv unchanged.
 * - Hand-written (GitOps) documents with hostile values are rejected on their own; one whose volume
 *   escapes the volumes root through a symlink is refused by the Docker driver (E_VOLUME_REFUSED).
 * - Every unit the operator wrote passes `systemd-analyze verify`.
 * - Nothing is written outside the state, apps and volumes roots: the state dir sits 4 levels deep
 *   in a watched folder (traversal would land there), and the shared unit dir gains only
 *   well-formed unit names.
 */
import { mkdir, readFile, readdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { create as createTar } from 'tar';
import { describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import fc from 'fast-check';
import { ENV_KEY_PATTERN, ID_PATTERN, unitName, VERSION_PATTERN } from '../../src/core/identity.ts';
import { splitCommand } from '../../src/drivers/procfile.ts';
import { instanceUnitSpec, renderEnvFile, renderUnit } from '../../src/drivers/unit.ts';
import { cleanupAfter, dockerApi, freePort, getTestHost, systemctlUser, systemdEnv, tempDir, uniqueName } from '../harness/index.ts';
import { startTestOperator, waitFor, type TestOperator } from '../e2e/operator.ts';
import { APP_SOURCE } from '../fixtures/asset-server.ts';
import { ENV_VALUES, HOSTILE_DOMAINS, HOSTILE_IDS, HOSTILE_IMAGES, HOSTILE_STRINGS, hostileVolumes } from './corpus.ts';
import { report } from './report.ts';

type Body = Record<string, unknown>;

const RENDERED_UNITS = Number(process.env.CRATE_INJECTION_UNITS ?? 40);
const idArb = fc.stringMatching(ID_PATTERN);
// Literal unit arguments cannot hold control characters (the renderer refuses them; values with
// newlines reach argv through an env reference instead, checked above).
// eslint-disable-next-line no-control-regex -- that is the filter
const printable = (x: string): boolean => !/[\u0000-\u001f\u007f\uD800-\uDFFF]/.test(x);
const hostileArg = fc.oneof(fc.constantFrom(...HOSTILE_STRINGS.filter((x) => printable(x) && x.length < 5000)), fc.string({ maxLength: 30, unit: 'grapheme' }).filter(printable));
/** Valid unit inputs with hostile-but-legal content, plus Procfile-split arguments. */
const renderInputs = fc.record({
  key: fc.record({ team: idArb, env: fc.integer({ min: 1, max: 2 ** 31 - 1 }), app: fc.integer({ min: 1, max: 2 ** 31 - 1 }) }),
  instance: idArb,
  slot: fc.option(idArb, { nil: undefined }),
  version: fc.stringMatching(VERSION_PATTERN),
  generation: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  deployment: fc.oneof(fc.integer({ min: 1, max: 2 ** 31 - 1 }).map(String), fc.uuid().map((u) => `op-${u}`)),
  spec: fc.stringMatching(/^[a-f0-9]{12}$/),
  port: fc.integer({ min: 1, max: 65535 }),
  env: fc.dictionary(fc.stringMatching(ENV_KEY_PATTERN), fc.constantFrom(...Object.values(ENV_VALUES)), { maxKeys: 8 }),
  args: fc.oneof(
    fc.array(hostileArg, { maxLength: 6 }),
    fc.constantFrom('"$A" \'%h %%\' "a\\"b" ${PORT}x', 'x "${HOME}" \'$$\' "\\$X"', '--a=\'b c\' "d e"').map((cmd) => splitCommand(cmd)),
  ),
});

async function post(t: TestOperator, url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await t.op.app.inject({ method: 'POST', url, headers: { authorization: 'Bearer test-token-0123456789abcdef', 'content-type': 'application/json' }, payload: JSON.stringify(body) });
  return { status: r.statusCode, json: r.json<Record<string, unknown>>() };
}

/** Every path below `root` (dirs with a trailing /). */
async function listTree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      out.push(path.relative(root, p) + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory() && !e.isSymbolicLink()) await walk(p);
    }
  };
  await walk(root);
  return out.sort();
}

function parseEnviron(buf: Buffer): Map<string, string> {
  const m = new Map<string, string>();
  for (const entry of buf.toString('utf8').split('\0')) {
    const i = entry.indexOf('=');
    if (i > 0) m.set(entry.slice(0, i), entry.slice(i + 1));
  }
  return m;
}

/** systemd-analyze verify of a unit file written under a name with `:` (given as FILE:NAME). */
async function verifyUnit(file: string, name: string, scratch: string): Promise<string> {
  const copy = path.join(scratch, `v-${Math.random().toString(36).slice(2)}.service`);
  await writeFile(copy, await readFile(file));
  const r = await execa('systemd-analyze', ['--user', 'verify', `${copy}:${name}`], { env: systemdEnv(), extendEnv: false, reject: false, timeout: 20_000 });
  return r.exitCode === 0 && `${String(r.stdout)}${String(r.stderr)}` === '' ? '' : `${name}: exit ${r.exitCode}: ${String(r.stdout)}${String(r.stderr)}`;
}

describe('injection corpus against the real operator', () => {
  it('refuses hostile values naming the field, delivers env values byte for byte, verifies units, writes nowhere else', async () => {
    const host = getTestHost();
    const watched = await tempDir('inj');
    const deep = path.join(watched, 'a', 'b', 'c', 'd');
    const volumesRoot = path.join(deep, 'volumes');
    await mkdir(volumesRoot, { recursive: true });
    // A link inside the volumes root that points out of it (the driver must not follow it out).
    await mkdir(path.join(watched, 'outside'));
    await symlink(path.join(watched, 'outside'), path.join(volumesRoot, 'link'));
    const unitsBefore = new Set(await readdir(host.systemd.unitDir));
    // A named volume outlives its container: registered before the operator, so this cleanup runs
    // after the one that removes the team's containers (cleanups run in reverse order).
    const volume = uniqueName('vol');
    cleanupAfter(() => dockerApi('DELETE', `/volumes/${volume}?force=true`));
    const t = await startTestOperator({ stateDir: path.join(deep, 'state'), appsDir: path.join(deep, 'apps'), volumesRoot });
    const team = t.team;
    const [pBin, pDocker, pGit] = [await freePort(), await freePort(), await freePort()];

    // ---- 1. The API refuses every hostile value, naming the field, and writes nothing. ----
    const binBody = (over: Body = {}): Body => ({
      team_id: team,
      environment_id: 1,
      app_id: 1,
      deployment_id: 1,
      deployment_strategy: 'recreate',
      domain: `${team}.inj.test`,
      asset_url: `${host.assets.baseUrl}/files/${team}-app.tar.gz`,
      callback_url: 'http://127.0.0.1:9/cb',
      env_vars: {},
      target_version: 'v1',
      health_check_path: '/healthz',
      slots: { main: { instance_id: 'web', port: pBin } },
      ...over,
    });
    const dockerBody = (over: Body = {}): Body => ({
      team_id: team,
      environment_id: 1,
      app_id: 2,
      deployment_id: 2,
      deployment_strategy: 'recreate',
      domain: `${team}-d.inj.test`,
      callback_url: 'http://127.0.0.1:9/cb',
      env_vars: {},
      image: 'crate-test/app',
      image_tag: 'v1',
      target_version: 'v1',
      health_check_path: '/healthz',
      slots: { main: { instance_id: 'box', port: pDocker } },
      ...over,
    });
    const cases: Array<{ url: string; body: Body; field: string | RegExp }> = [];
    const badVersions = ['-rf', '../x', 'a b', 'a\nb', '$(id)', 'a;b', '', 'a/b', 'a:b', '%2e%2e'];
    for (const id of HOSTILE_IDS) {
      cases.push({ url: '/v1/app/instance/binary/deploy', body: binBody({ team_id: id }), field: 'team_id' });
      cases.push({ url: '/v1/app/instance/binary/deploy', body: binBody({ slots: { main: { instance_id: id, port: pBin } } }), field: 'slots.main.instance_id' });
      cases.push({ url: '/v1/app/instance/binary/deploy', body: binBody({ slots: { [id]: { instance_id: 'web', port: pBin } } }), field: /^slots\./ });
      cases.push({ url: '/v1/app/binary/deploy', body: { ...binBody({ instances: { [id]: { port: pBin } } }), slots: undefined, target_version: undefined }, field: /^instances\./ });
      cases.push({ url: '/v1/app/stop', body: { team_id: team, environment_id: 1, app_id: 1, domain: `${team}.inj.test`, callback_url: 'http://127.0.0.1:9/cb', instance_id: id }, field: 'instance_id' });
      cases.push({ url: '/v1/app/delete', body: { team_id: team, environment_id: 1, app_id: 1, domain: `${team}.inj.test`, callback_url: 'http://127.0.0.1:9/cb', instance_ids: [id] }, field: 'instance_ids.0' });
    }
    for (const k of ['1A', 'A-B', 'A B', '', 'É', 'A=B', 'A\nB', '$(id)', 'A;B', '../x', '__proto__', 'constructor', 'A\u0000']) {
      cases.push({ url: '/v1/app/instance/binary/deploy', body: binBody({ env_vars: { [k]: 'x' } }), field: /^env_vars/ });
    }
    for (const v of badVersions) {
      cases.push({ url: '/v1/app/instance/binary/deploy', body: binBody({ target_version: v }), field: 'target_version' });
      cases.push({ url: '/v1/app/instance/docker/deploy', body: dockerBody({ image_tag: v }), field: 'image_tag' });
    }
    for (const d of HOSTILE_DOMAINS) {
      cases.push({ url: '/v1/app/instance/binary/deploy', body: binBody({ domain: d }), field: 'domain' });
      cases.push({ url: '/v1/app/domain/update', body: { team_id: team, environment_id: 1, app_id: 1, old_domain: `${team}.inj.test`, new_domain: d, server_id: 'test-host' }, field: 'new_domain' });
    }
    for (const img of HOSTILE_IMAGES) cases.push({ url: '/v1/app/instance/docker/deploy', body: dockerBody({ image: img }), field: 'image' });
    for (const v of [...hostileVolumes(volumesRoot), `${volumesRoot}/link/x:/data`.replace('/link/x', '/../x')]) {
      cases.push({ url: '/v1/app/instance/docker/deploy', body: dockerBody({ volumes: [v] }), field: 'volumes.0' });
    }
    for (const p of ['healthz', '/a b', '/a\nb', '/\u0000', `/${'x'.repeat(1100)}`]) cases.push({ url: '/v1/app/instance/binary/deploy', body: binBody({ health_check_path: p }), field: 'health_check_path' });
    for (const u of ['file:///etc/passwd', 'gopher://x/', 'http://user:pw@h/x', 'http://h/a b', 'http://a:b/', '//h/x', 'javascript:alert(1)']) {
      cases.push({ url: '/v1/app/instance/binary/deploy', body: binBody({ asset_url: u }), field: 'asset_url' });
      cases.push({ url: '/v1/app/instance/binary/deploy', body: binBody({ callback_url: u }), field: 'callback_url' });
    }
    const stateBefore = await listTree(deep);
    let refused = 0;
    for (const c of cases) {
      const r = await post(t, c.url, c.body);
      const fields = ((r.json.error as { details?: { fields?: { field: string }[] } } | undefined)?.details?.fields ?? []).map((f) => f.field);
      const what = `${c.url} ${JSON.stringify(c.body).slice(0, 200)} → ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`;
      expect(r.status, what).toBe(400);
      expect(fields.some((f) => (typeof c.field === 'string' ? f === c.field : c.field.test(f))), what).toBe(true);
      refused += 1;
    }
    // Ids in paths: unknown, never a path on disk.
    for (const id of HOSTILE_IDS) {
      const r = await t.op.app.inject({ method: 'GET', url: `/v1/app/deploy/${encodeURIComponent(id)}/status`, headers: { authorization: 'Bearer test-token-0123456789abcdef' } });
      expect([404], id).toContain(r.statusCode);
    }
    expect(await listTree(deep)).toEqual(stateBefore);

    // ---- 2. Env values byte for byte: a unit (environ and a "$VAR" argument) and a container. ----
    const env: Record<string, string> = { ...ENV_VALUES };
    // The app's Procfile passes one env value and literal specials as arguments.
    const stage = await tempDir('stage');
    await writeFile(path.join(stage, 'server.mjs'), await readFile(APP_SOURCE));
    await writeFile(path.join(stage, 'VERSION'), 'v1\n');
    await writeFile(path.join(stage, 'Procfile'), `web: node server.mjs "$DOLLAR" "\${NEWLINE}" '%h %% $HOME' "a\\"b" 'c\\d'\n`);
    await createTar({ gzip: true, cwd: stage, file: path.join(host.assets.filesDir, `${team}-app.tar.gz`), portable: true }, ['Procfile', 'VERSION', 'server.mjs']);
    const d1 = await post(t, '/v1/app/instance/binary/deploy', binBody({ env_vars: env }));
    expect(d1.status, JSON.stringify(d1.json)).toBe(202);
    const command = ['--flag', '$HOME', '${PORT}', '%h', '; rm -rf /', '`id`', 'a"b', "c'd", 'e\\f', 'line\nbreak', '', '-', ENV_VALUES.UNICODE as string];
    const d2 = await post(t, '/v1/app/instance/docker/deploy', dockerBody({ env_vars: env, docker_command: command, volumes: [`${volumesRoot}/data:/data`, `${volume}:/cache`] }));
    expect(d2.status, JSON.stringify(d2.json)).toBe(202);
    const [s1, s2] = await Promise.all([t.settle(1, 60_000), t.settle(2, 60_000)]);
    expect(s1.status, JSON.stringify(s1)).toBe('succeeded');
    expect(s2.status, JSON.stringify(s2)).toBe('succeeded');

    const units = JSON.parse(String((await systemctlUser(['list-units', '--all', '--output=json', `crate-${team}:*`])).stdout)) as { unit: string; active: string }[];
    const unit = units.find((u) => u.active === 'active')?.unit as string;
    expect(unit, JSON.stringify(units)).toBeDefined();
    const pid = Number(String((await systemctlUser(['show', '-p', 'MainPID', '--value', unit])).stdout).trim());
    expect(pid).toBeGreaterThan(0);
    const procEnv = parseEnviron(await readFile(`/proc/${pid}/environ`));
    for (const [k, v] of Object.entries(env)) expect(procEnv.get(k), `unit env ${k}`).toBe(v);
    expect(procEnv.get('PORT')).toBe(String(pBin));
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').slice(0, -1);
    expect(argv.slice(1)).toEqual(['server.mjs', ENV_VALUES.DOLLAR, ENV_VALUES.NEWLINE, '%h %% $HOME', 'a"b', 'c\\d']);

    const filters = encodeURIComponent(JSON.stringify({ label: [`crate.team=${team}`] }));
    const containers = (await dockerApi('GET', `/containers/json?filters=${filters}`)).body as { Id: string }[];
    expect(containers).toHaveLength(1);
    const inspect = (await dockerApi('GET', `/containers/${containers[0]?.Id}/json`)).body as { Config: { Env: string[]; Cmd: string[] }; State: { Pid: number }; Mounts: { Type: string; Source: string }[] };
    const dockerEnv = new Map(inspect.Config.Env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));
    for (const [k, v] of Object.entries(env)) expect(dockerEnv.get(k), `docker env ${k}`).toBe(v);
    expect(inspect.Config.Cmd).toEqual(command);
    const cEnv = parseEnviron(await readFile(`/proc/${inspect.State.Pid}/environ`));
    for (const [k, v] of Object.entries(env)) expect(cEnv.get(k), `container process env ${k}`).toBe(v);
    const cArgv = (await readFile(`/proc/${inspect.State.Pid}/cmdline`, 'utf8')).split('\0').slice(0, -1);
    expect(cArgv.slice(-command.length)).toEqual(command);
    const binds = inspect.Mounts.filter((x) => x.Type === 'bind');
    expect(binds.map((m) => m.Source)).toEqual([`${volumesRoot}/data`]);

    // ---- 3. Hand-written documents with hostile values are rejected on their own. ----
    const desired = path.join(deep, 'state', 'desired');
    const doc = (app: number, over: Record<string, unknown> = {}, spec: Record<string, unknown> = {}): Record<string, unknown> => ({
      apiVersion: 'crate-operator/v1',
      kind: 'App',
      metadata: { team, environment: 3, app },
      spec: {
        runtime: 'docker',
        model: 'plain',
        domain: `${team}-g${app}.inj.test`,
        strategy: 'recreate',
        version: 'v1',
        docker: { image: 'crate-test/app', tag: 'v1' },
        env: {},
        health_check_path: '/healthz',
        instances: { g: { port: pGit, state: 'running', generation: 0 } },
        ...spec,
      },
      deployment: { id: String(900 + app), callback_url: 'http://127.0.0.1:9/cb', requested_at: new Date().toISOString() },
      ...over,
    });
    const gitops: Array<[number, Record<string, unknown>]> = [
      [1, doc(1, { metadata: { team: '../../../../../escape', environment: 3, app: 1 } })],
      [2, doc(2, {}, { domain: 'a}b.inj.test' })],
      [3, doc(3, {}, { docker: { image: '-v', tag: 'v1' } })],
      [4, doc(4, {}, { env: { 'A\nB': 'x', 'X;id': 'y' } })],
      [5, doc(5, {}, { docker: { image: 'crate-test/app', tag: 'v1', command: ['ok'] }, instances: { '../x': { port: pGit, state: 'running', generation: 0 } } })],
    ];
    await mkdir(path.join(desired, team, '3'), { recursive: true });
    for (const [app, d] of gitops) await writeFile(path.join(desired, team, '3', `${app}.yaml`), toYaml(d));
    // Valid, but its host-path volume escapes the volumes root through a symlink.
    await writeFile(path.join(desired, team, '3', '6.yaml'), toYaml(doc(6, {}, { docker: { image: 'crate-test/app', tag: 'v1', volumes: [`${volumesRoot}/link/x:/data`] } })));
    let lastSeen = '';
    const listing = await waitFor(
      'hostile documents reported and the escaping volume refused',
      async () => {
        const apps = (await t.api('GET', '/v1/apps')).body.apps as { app_id: number; environment_id: number; document_error: { error: string } | null; last_deployment: { status: string; error: { code: string } | null } | null }[];
        const mine = apps.filter((a) => a.environment_id === 3);
        const errs = mine.filter((a) => a.document_error !== null).map((a) => a.app_id).sort();
        const six = mine.find((a) => a.app_id === 6)?.last_deployment;
        lastSeen = JSON.stringify(mine.map((a) => ({ app: a.app_id, err: a.document_error?.error, dep: a.last_deployment })));
        return errs.join() === '1,2,3,4,5' && six && ['failed', 'rolled_back'].includes(six.status) ? { mine, six } : undefined;
      },
      45_000,
      200,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}; last seen: ${lastSeen}`);
    });
    expect(listing.six.error?.code).toBe('E_VOLUME_REFUSED');
    // The document with a foreign identity is reported by path (it belongs to the app of its path).
    const all = (await t.api('GET', '/v1/apps')).body.apps as { app_id: number; environment_id: number; document_error: { error: string } | null }[];
    expect(all.find((a) => a.environment_id === 3 && a.app_id === 1)?.document_error?.error).toMatch(/metadata|team|pattern|match/i);
    expect(await readdir(path.join(watched, 'outside'))).toEqual([]);

    // ---- 4. Every unit the operator wrote passes systemd-analyze verify. ----
    const scratch = await tempDir('verify');
    const written = (await readdir(host.systemd.unitDir)).filter((f) => f.startsWith(`crate-${team}:`) && f.endsWith('.service'));
    expect(written.length).toBeGreaterThan(0);
    for (const f of written) expect(await verifyUnit(path.join(host.systemd.unitDir, f), f, scratch)).toBe('');
    expect(written).toContain(`${unitName({ team, env: 1, app: 1 }, 'web', written[0]?.split(':')[4]?.replace('.service', ''))}`);

    // And units rendered from generated identities, versions, slots, deployments, ports, hostile
    // arguments (literal and as Procfile words) and the env corpus: one verify call for all of them.
    const samples = fc.sample(renderInputs, { numRuns: RENDERED_UNITS, seed: 42 });
    const targets: string[] = [];
    for (const [i, x] of samples.entries()) {
      const appsDir = path.join(scratch, 'apps');
      const releaseDir = path.join(appsDir, 'r', String(i));
      await mkdir(releaseDir, { recursive: true });
      const spec = instanceUnitSpec({ appsDir, scope: 'user', stopTimeoutSec: 5 }, { ...x, release: { dir: releaseDir, command: { argv: ['/bin/sleep', ...x.args] } } });
      await mkdir(path.dirname(spec.envFile), { recursive: true });
      await writeFile(spec.envFile, renderEnvFile(spec.env), { mode: 0o600 });
      const file = path.join(scratch, `r${i}.service`);
      await writeFile(file, renderUnit(spec));
      targets.push(`${file}:${unitName(x.key, x.instance, x.spec)}`);
    }
    const verified = await execa('systemd-analyze', ['--user', 'verify', ...targets], { env: systemdEnv(), extendEnv: false, reject: false, timeout: 60_000 });
    expect({ exit: verified.exitCode, out: `${String(verified.stdout)}${String(verified.stderr)}` }).toEqual({ exit: 0, out: '' });

    // ---- 5. Nothing outside the state, apps and volumes roots. ----
    const allowed = /^(a\/|a\/b\/|a\/b\/c\/|a\/b\/c\/d\/|a\/b\/c\/d\/(state|apps|volumes)(\/.*)?|outside\/)$/;
    for (const p of await listTree(watched)) expect(allowed.test(p.replace(/([^/])$/, '$1/')) || /^a\/b\/c\/d\/(state|apps|volumes)\//.test(p), p).toBe(true);
    const newUnits = (await readdir(host.systemd.unitDir)).filter((f) => !unitsBefore.has(f));
    for (const f of newUnits) expect(f, 'unit dir entry').toMatch(/^(crate-[A-Za-z0-9][A-Za-z0-9_.-]{0,62}:[0-9]+:[0-9]+:[A-Za-z0-9][A-Za-z0-9_.-]{0,62}(:[a-f0-9]{6,16})?\.service|[a-z.-]+\.(wants|target))$/);

    report('injection', { api_cases_refused: refused, path_ids: HOSTILE_IDS.length, env_values: Object.keys(env).length, docker_args: command.length, gitops_docs: gitops.length + 1, units_verified: written.length + samples.length });
  }, 90_000 + RENDERED_UNITS * 250);
});
