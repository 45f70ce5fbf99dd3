/**
 * The lint rule that keeps shells out of the code exists and fires: the shell-related rules are read
 * from the project's own eslint.config.js (as ESLint resolves them for a file under src/), then
 * applied through the ESLint Node API to snippets that reach a shell in each way the rule covers, and
 * to shell-free code that must pass.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint, type Linter } from 'eslint';
import tseslint from 'typescript-eslint';
import { beforeAll, describe, expect, it } from 'vitest';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
let linter: ESLint;
let rules: Linter.RulesRecord;

beforeAll(async () => {
  const project = new ESLint({ cwd: REPO });
  const cfg = (await project.calculateConfigForFile(path.join(REPO, 'src/operator.ts'))) as { rules?: Linter.RulesRecord };
  rules = Object.fromEntries(Object.entries(cfg.rules ?? {}).filter(([name]) => name === 'no-restricted-imports' || name === 'no-restricted-syntax'));
  // Only the project's shell rules, on a parser without type information (they need none).
  linter = new ESLint({
    cwd: REPO,
    overrideConfigFile: true,
    overrideConfig: [{ files: ['**/*.ts'], languageOptions: { parser: tseslint.parser }, rules }],
  });
}, 60_000);

async function messages(code: string): Promise<string[]> {
  const [res] = await linter.lintText(code, { filePath: path.join(REPO, 'src/lint-fixture.ts') });
  return (res?.messages ?? []).map((m) => `${m.ruleId ?? 'fatal'}: ${m.message}`);
}

describe('the no-shell lint rule of eslint.config.js', () => {
  it('is configured as an error for source files', () => {
    for (const name of ['no-restricted-imports', 'no-restricted-syntax']) {
      const r = rules[name];
      expect(String(Array.isArray(r) ? r[0] : r), name).toMatch(/^(error|2)$/);
    }
    expect(JSON.stringify(rules)).toMatch(/child_process/);
    expect(JSON.stringify(rules)).toMatch(/shell/);
  });

  const banned: Record<string, string> = {
    'exec from node:child_process': "import { exec } from 'node:child_process';\nexec('ls ' + process.argv[2]);",
    'execSync from child_process': "import { execSync } from 'child_process';\nexecSync('id');",
    'child_process.exec as a member': "import * as child_process from 'node:child_process';\nchild_process.exec('id');",
    'cp.execSync as a member': "import cp from 'node:child_process';\ncp.execSync('id');",
    'shell: true for execa': "import { execa } from 'execa';\nawait execa('ls', ['-l'], { shell: true });",
    'a named shell for spawn': "import { spawn } from 'node:child_process';\nspawn('ls', [], { shell: '/bin/bash' });",
  };
  for (const [name, code] of Object.entries(banned)) {
    it(`fires on ${name}`, async () => {
      const m = await messages(code);
      expect(m.length, name).toBeGreaterThan(0);
      expect(m.join('\n')).toMatch(/no-restricted-(imports|syntax)/);
      expect(m.join('\n')).not.toMatch(/^fatal/m);
    });
  }

  it('stays quiet for argument arrays', async () => {
    expect(await messages("import { execa } from 'execa';\nimport { spawn } from 'node:child_process';\nawait execa('ls', ['-l', '--', process.argv[2] ?? '']);\nspawn('ls', ['-l'], { shell: false });")).toEqual([]);
  });
});
