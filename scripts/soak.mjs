#!/usr/bin/env node
// `npm run test:soak`: the reliability suite (test/reliability/) and the kill/resume test with soak
// counts instead of CI counts, then every figure the tests reported, together. Counts can be
// overridden by setting the same variables before running.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const dir = mkdtempSync(path.join(tmpdir(), 'crate-soak-'));
const reportFile = path.join(dir, 'figures.jsonl');
const soak = {
  CRATE_FUZZ_REQUESTS: '200000',
  CRATE_INJECTION_UNITS: '400',
  CRATE_FAULT_CALLBACK_DOWN_MS: '180000',
  CRATE_KILL_POINTS: '20',
};
const env = { ...process.env, CRATE_SOAK: '1', CRATE_RELIABILITY_REPORT: reportFile };
for (const [k, v] of Object.entries(soak)) env[k] ??= v;
const files = ['test/reliability', ...['test/e2e/kill-resume.test.ts'].filter((f) => existsSync(f))];

console.error(`soak: ${Object.keys(soak).map((k) => `${k}=${env[k]}`).join(' ')}`);
const started = Date.now();
const child = spawn(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--testTimeout=3600000', ...files], { env, stdio: 'inherit' });
child.on('exit', (code, signal) => {
  const lines = existsSync(reportFile) ? readFileSync(reportFile, 'utf8').split('\n').filter((l) => l.trim() !== '') : [];
  console.log(`\nsoak figures (${lines.length} reports, ${Math.round((Date.now() - started) / 1000)} s):`);
  for (const l of lines) {
    const { test, ...figures } = JSON.parse(l);
    console.log(`  ${String(test).padEnd(16)} ${JSON.stringify(figures)}`);
  }
  rmSync(dir, { recursive: true, force: true });
  process.exit(code ?? (signal ? 1 : 0));
});
