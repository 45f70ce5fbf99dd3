/**
 * examples/README.md, run as written: every command of its walkthrough, in order, against the
 * operator's embedded defaults (`npm start` starting its own private systemd user manager, dockerd
 * and Caddy), in a network namespace of its own so the fixed ports of the walkthrough are free. Then:
 * nothing the operator started is left running, and its private workspace is gone.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { killAll, pidsMentioning } from '../../src/host/process.ts';
import { cleanupAfter } from '../harness/index.ts';
import { parseWalkthrough, splitArgs } from './walkthrough.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const README = path.join(repo, 'examples', 'README.md');

describe('the examples walkthrough', () => {
  it('is made of plain commands, in the order the issue asks for', async () => {
    const steps = parseWalkthrough(await readFile(README, 'utf8'));
    const lines = steps.map((s) => s.line);
    const at = (re: RegExp): number => lines.findIndex((l) => re.test(l));
    const order = [/^npm start/, /example:assets/, /binary-instance-v1/, /hello\.localhost:8080/, /binary-instance-v2/, /status 1002 --follow/, /stop\.json/, /start\.json/, /terminal 1, press Ctrl-C/, /v3-broken/, /domain-update/, /delete\.json/, /docker-instance/];
    const idx = order.map(at);
    expect(idx.every((i) => i >= 0), `missing: ${order.filter((_, i) => (idx[i] ?? -1) < 0).join(', ')}`).toBe(true);
    expect([...idx].sort((a, b) => a - b)).toEqual(idx);
    expect(steps.filter((s) => s.kind === 'background')).toHaveLength(3);
    expect(steps.filter((s) => s.kind === 'interrupt')).toHaveLength(3);
    expect(() => splitArgs('curl -s http://x/ | jq .')).toThrow(/shell syntax/);
    expect(() => splitArgs('echo $HOME')).toThrow(/shell syntax/);
    expect(splitArgs(`curl -H 'Host: a b' "x y"`)).toEqual(['curl', '-H', 'Host: a b', 'x y']);
  });

  it('`npx crate-operator` is the bin the runner calls directly', { timeout: 60_000 }, async () => {
    const pkg = JSON.parse(await readFile(path.join(repo, 'package.json'), 'utf8')) as { bin: Record<string, string>; scripts: Record<string, string> };
    expect(pkg.bin['crate-operator']).toBe('bin/crate-operator.js');
    expect(pkg.scripts.start).toBe('node bin/crate-operator.js start');
    const r = await execa('npx', ['--no-install', 'crate-operator', '--help'], { cwd: repo, reject: false });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/Usage: crate-operator/);
  });

  it('runs as written against npm start', { timeout: 300_000 }, async () => {
    const dir = await mkdtemp('/tmp/cw-');
    const stateDir = path.join(dir, 'state');
    cleanupAfter(async () => {
      await killAll(await pidsMentioning(dir));
      await rm(dir, { recursive: true, force: true });
    });
    const t0 = performance.now();
    const r = await execa('unshare', ['--net', '--', process.execPath, '--import', 'tsx', path.join(repo, 'test/examples/walkthrough-runner.ts')], {
      cwd: repo,
      env: { CRATE_STATE_DIR: stateDir, CRATE_LOG_LEVEL: 'warn' },
      reject: false,
      timeout: 280_000,
      all: true,
    });
    const steps = String(r.stdout)
      .split('\n')
      .filter((l) => l.startsWith('STEP '))
      .map((l) => JSON.parse(l.slice(5)) as { line: string; ok: boolean; ms: number; why?: string; output?: string });
    const failed = steps.find((s) => !s.ok);
    expect(failed, failed ? `${failed.line}: ${failed.why ?? ''}\n${failed.output ?? ''}` : '').toBeUndefined();
    expect(r.exitCode, String(r.all).slice(-4000)).toBe(0);
    expect(steps.length).toBe(parseWalkthrough(await readFile(README, 'utf8')).length);
    console.error(`walkthrough: ${steps.length} steps in ${Math.round(performance.now() - t0)} ms; ${steps.map((s) => `${s.line.split('#')[0]?.trim()} ${s.ms}`).join('; ')}`);

    // Ctrl-C stopped everything the operator started; only Docker's data root (images) stays.
    expect(await pidsMentioning(stateDir)).toEqual([]);
    expect(await readdir(path.join(stateDir, '.host'))).toEqual(['docker-data']);
  });
});
