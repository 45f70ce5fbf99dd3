/**
 * The README stays true: the quick start is exactly `npm start` and `npm test` (both scripts exist),
 * the configuration table lists every setting of src/config.ts with its flag, environment variable
 * and file key, the CLI table names every command, and the files it points to exist.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli.ts';
import { flagName } from '../src/cli/settings.ts';
import { SETTING_NAMES } from '../src/config.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(path.join(root, 'README.md'), 'utf8');

function section(title: string): string {
  const start = readme.indexOf(`## ${title}\n`);
  if (start < 0) throw new Error(`no section ${title}`);
  const next = readme.indexOf('\n## ', start + 1);
  return readme.slice(start, next < 0 ? undefined : next);
}

describe('README', () => {
  it('quick start: exactly two commands, npm start and npm test', () => {
    const block = /```sh\n([\s\S]*?)```/.exec(section('Quick start'))?.[1] ?? '';
    const commands = block.split('\n').filter((l) => l.trim() !== '').map((l) => l.split('#')[0]?.trim());
    expect(commands).toEqual(['npm start', 'npm test']);
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.start).toBe('node bin/crate-operator.js start');
    expect(pkg.scripts.test).toBeDefined();
  });

  it('the configuration table has one row per setting: flag, environment variable, file key', () => {
    const table = /<!-- settings-table[^>]*-->\n([\s\S]*?)<!-- \/settings-table -->/.exec(section('Configuration'))?.[1] ?? '';
    const rows = table.split('\n').filter((l) => l.startsWith('|') && !l.startsWith('| ---') && !l.startsWith('| setting'));
    for (const s of Object.values(SETTING_NAMES)) {
      const row = rows.find((r) => r.includes(`\`${s.env}\``));
      expect(row, s.env).toBeDefined();
      expect(row, s.env).toContain(`\`${flagName(s.flag)}`);
      expect(row, s.env).toContain(`\`${s.file}\``);
    }
    expect(rows).toHaveLength(Object.keys(SETTING_NAMES).length + 1); // + --config
  });

  it('the CLI table names every command', () => {
    const cli = section('CLI');
    const program = buildProgram(() => undefined, { out: () => undefined, isTTY: false }, { code: 0 });
    for (const c of program.commands) expect(cli, c.name()).toContain(`\`${c.name()}`);
  });

  it('has the sections the issue asks for, and the files it names exist', () => {
    for (const t of ['Quick start', 'Configuration', 'API', 'CLI', 'GitOps: desired state as files', 'Metrics and logs', 'Production', 'Security notes']) section(t);
    expect(section('API')).toContain('`/docs`');
    for (const f of ['examples/README.md', 'src/desired/README.md', 'packaging/crate-operator.service', 'packaging/config.yaml', 'packaging/caddy.json', 'test/packaging/packaging.test.ts']) {
      expect(readme, f).toContain(f);
      expect(existsSync(path.join(root, f)), f).toBe(true);
    }
  });
});
