// Pure tests of unit and env-file rendering: golden files, escaping tables, refusals, and the
// Description round trip. The same rules are checked against real systemd in systemd-real.test.ts.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hasCode } from '../../src/core/errors.ts';
import { unitName } from '../../src/core/identity.ts';
import { envFilePath, releaseDir } from '../../src/drivers/layout.ts';
import {
  instanceEnv,
  parseUnitDescription,
  renderEnvFile,
  renderExecArg,
  renderUnit,
  unitDescription,
  type UnitSpec,
} from '../../src/drivers/unit.ts';

const key = { team: 'acme', env: 7, app: 42 };
const base: UnitSpec = {
  key,
  instance: 'web-1',
  slot: 'blue',
  version: '1.2.3+build.4',
  generation: 2,
  deployment: 'd-99',
  port: 20001,
  workingDirectory: releaseDir('/srv/crate/apps', key, '1.2.3+build.4'),
  argv: ['node', 'server.mjs', '--port', { parts: [{ env: 'PORT' }] }],
  envFile: envFilePath('/srv/crate/apps', key, 'web-1'),
  env: { GREETING: 'hi' },
  stopTimeoutSec: 30,
  scope: 'system',
};

function expectCode(fn: () => unknown, code: string, field?: string): void {
  try {
    fn();
  } catch (err) {
    expect(hasCode(err, code), String(err)).toBe(true);
    if (field !== undefined) expect((err as { details?: { field?: string } }).details?.field).toBe(field);
    return;
  }
  throw new Error(`expected ${code}`);
}

describe('renderUnit', () => {
  it('renders the golden unit', () => {
    expect(renderUnit(base)).toBe(`# crate-acme:7:42:web-1.service: managed by crate-operator; changes are overwritten.
[Unit]
Description=crate team=acme env=7 app=42 instance=web-1 slot=blue version=1.2.3+build.4 gen=2 port=20001 deployment=d-99
StartLimitIntervalSec=60
StartLimitBurst=5
X-Crate-Team=acme
X-Crate-Env=7
X-Crate-App=42
X-Crate-Instance=web-1
X-Crate-Slot=blue
X-Crate-Version=1.2.3+build.4
X-Crate-Generation=2
X-Crate-Port=20001
X-Crate-Deployment=d-99

[Service]
Type=exec
WorkingDirectory=/srv/crate/apps/acme/7/42/releases/1.2.3+build.4
EnvironmentFile=/srv/crate/apps/acme/7/42/env/web-1.env
ExecStart="node" "server.mjs" "--port" "\${PORT}"
SyslogIdentifier=crate-acme-7-42-web-1
Restart=on-failure
RestartSec=1s
TimeoutStartSec=30s
KillMode=control-group
KillSignal=SIGTERM
TimeoutStopSec=30s
SendSIGKILL=yes
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
`);
  });

  it('omits slot and deployment when absent and targets default.target in user scope', () => {
    const u = renderUnit({ ...base, slot: undefined, deployment: undefined, scope: 'user' });
    expect(u).toContain('Description=crate team=acme env=7 app=42 instance=web-1 version=1.2.3+build.4 gen=2 port=20001\n');
    expect(u).not.toContain('X-Crate-Slot');
    expect(u).not.toContain('X-Crate-Deployment');
    expect(u).toContain('WantedBy=default.target\n');
  });

  it('names a run of a revision by its spec: unit name, Description, X-Crate-Spec, env file', () => {
    const spec = { ...base, spec: 'abc123', envFile: envFilePath('/srv/crate/apps', key, 'web-1', 'abc123') };
    const u = renderUnit(spec);
    expect(u.split('\n')[0]).toBe('# crate-acme:7:42:web-1:abc123.service: managed by crate-operator; changes are overwritten.');
    expect(u).toContain(' deployment=d-99 spec=abc123\n');
    expect(u).toContain('X-Crate-Spec=abc123\n');
    expect(u).toContain('EnvironmentFile=/srv/crate/apps/acme/7/42/env/web-1@abc123.env\n');
    expect(parseUnitDescription(unitDescription(spec))?.spec).toBe('abc123');
    expectCode(() => renderUnit({ ...base, spec: 'XYZ' }), 'E_INVALID_UNIT_FIELD', 'spec');
    expectCode(() => envFilePath('/srv', key, 'web-1', '../x'), 'E_INVALID_UNIT_FIELD', 'spec');
  });

  it('is deterministic', () => {
    expect(renderUnit(base)).toBe(renderUnit({ ...base, env: { ...base.env } }));
  });

  it('escapes ExecStart arguments: quotes, backslashes, % and $', () => {
    expect(renderExecArg('a b')).toBe('"a b"');
    expect(renderExecArg('say "hi"')).toBe('"say \\"hi\\""');
    expect(renderExecArg('C:\\x')).toBe('"C:\\\\x"');
    expect(renderExecArg('100%n')).toBe('"100%%n"');
    expect(renderExecArg('$HOME ${X} $$')).toBe('"$$HOME $${X} $$$$"');
    expect(renderExecArg(';')).toBe('";"');
    expect(renderExecArg('')).toBe('""');
    expect(renderExecArg('✓')).toBe('"✓"');
    expect(renderExecArg({ parts: ['--listen=', { env: 'HOST' }, ':', { env: 'PORT' }, '%$'] })).toBe('"--listen=${HOST}:${PORT}%%$$"');
  });

  it('accepts absolute executables (quoted) and bare names, refuses the rest', () => {
    expect(renderUnit({ ...base, argv: ['/opt/my app/bin/run'] })).toContain('ExecStart="/opt/my app/bin/run"\n');
    expectCode(() => renderUnit({ ...base, argv: [] }), 'E_INVALID_UNIT_FIELD', 'argv');
    expectCode(() => renderUnit({ ...base, argv: ['./start'] }), 'E_INVALID_UNIT_FIELD', 'argv[0]');
    expectCode(() => renderUnit({ ...base, argv: ['-node'] }), 'E_INVALID_UNIT_FIELD', 'argv[0]');
    expectCode(() => renderUnit({ ...base, argv: ['@node'] }), 'E_INVALID_UNIT_FIELD', 'argv[0]');
    expectCode(() => renderUnit({ ...base, argv: ['/opt/../bin/x'] }), 'E_INVALID_UNIT_FIELD', 'argv[0]');
    expectCode(() => renderUnit({ ...base, argv: ['/opt//x'] }), 'E_INVALID_UNIT_FIELD', 'argv[0]');
    expectCode(() => renderUnit({ ...base, argv: [{ parts: [{ env: 'BIN' }] }] }), 'E_INVALID_UNIT_FIELD', 'argv[0]');
  });

  it('refuses control characters and bad ids in every other field', () => {
    const bad: Array<[Partial<UnitSpec>, string]> = [
      [{ argv: ['node', 'a\nb'] }, 'argv[1]'],
      [{ argv: ['node', 'a\rb'] }, 'argv[1]'],
      [{ argv: ['node', 'a\u0000b'] }, 'argv[1]'],
      [{ argv: ['node', 'tab\there'] }, 'argv[1]'],
      [{ argv: ['node', 'del\u007f'] }, 'argv[1]'],
      [{ argv: ['node', 'lone\ud800'] }, 'argv[1]'],
      [{ argv: ['node', { parts: ['x', { env: 'BAD-NAME' }] }] }, 'argv[1] variable'],
      [{ instance: 'web\n1' }, 'instance'],
      [{ instance: 'a:b' }, 'instance'],
      [{ instance: '-x' }, 'instance'],
      [{ slot: 'blue green' }, 'slot'],
      [{ version: 'v1\n' }, 'version'],
      [{ version: '1.0%n' }, 'version'],
      [{ deployment: 'd 1' }, 'deployment'],
      [{ key: { team: 'a/b', env: 1, app: 1 } }, 'team'],
      [{ key: { team: 'a', env: 0, app: 1 } }, 'env'],
      [{ key: { team: 'a', env: 1, app: 1.5 } }, 'app'],
      [{ generation: -1 }, 'generation'],
      [{ port: 0 }, 'port'],
      [{ port: 65536 }, 'port'],
      [{ stopTimeoutSec: 0 }, 'stopTimeoutSec'],
      [{ workingDirectory: 'relative/dir' }, 'workingDirectory'],
      [{ workingDirectory: '/srv/a b' }, 'workingDirectory'],
      [{ workingDirectory: '/srv/%h' }, 'workingDirectory'],
      [{ workingDirectory: '/srv/x\n[Service]' }, 'workingDirectory'],
      [{ workingDirectory: '/srv/../etc' }, 'workingDirectory'],
      [{ envFile: '/tmp/x.env\nExecStartPre=/bin/sh' }, 'envFile'],
      [{ envFile: '-/tmp/x.env' }, 'envFile'],
    ];
    for (const [patch, field] of bad) expectCode(() => renderUnit({ ...base, ...patch }), 'E_INVALID_UNIT_FIELD', field);
  });
});

describe('renderEnvFile', () => {
  it('renders the golden env file, PORT and HOST winning over app values', () => {
    const env = instanceEnv({ env: { B: 'two words', A: 'x', PORT: '1', HOST: '0.0.0.0' }, port: 20001 });
    expect(renderEnvFile(env)).toBe(`# Managed by crate-operator; values are double-quoted with \\ " $ \` escaped.
A="x"
B="two words"
HOST="127.0.0.1"
PORT="20001"
`);
  });

  it('escapes exactly backslash, double quote, dollar and backtick', () => {
    const line = renderEnvFile({ V: 'a\\b"c$d`e\'f%g#h;i\nj\rk\tl' }).split('\n').slice(1).join('\n');
    expect(line).toBe('V="a\\\\b\\"c\\$d\\`e\'f%g#h;i\nj\rk\tl"\n');
  });

  it('refuses what cannot reach a process', () => {
    expectCode(() => renderEnvFile({ 'BAD-KEY': 'x' }), 'E_INVALID_UNIT_FIELD', 'env key');
    expectCode(() => renderEnvFile({ '1X': 'x' }), 'E_INVALID_UNIT_FIELD', 'env key');
    expectCode(() => renderEnvFile({ A: 'nul\u0000' }), 'E_INVALID_UNIT_FIELD', 'env A');
    expectCode(() => renderEnvFile({ A: '\udc00' }), 'E_INVALID_UNIT_FIELD', 'env A');
    expectCode(() => renderEnvFile({ A: 'x'.repeat(128 * 1024) }), 'E_INVALID_UNIT_FIELD', 'env A');
    const many: Record<string, string> = {};
    for (let i = 0; i < 10; i++) many[`K${i}`] = 'y'.repeat(120 * 1024);
    expectCode(() => renderEnvFile(many), 'E_INVALID_UNIT_FIELD', 'env');
  });

  it('round-trips any string through a model of systemd 252 env-file parsing (property)', () => {
    // Model of parse_env_file_internal for a double-quoted value: `\` + one of `"\`$` yields that
    // character, `\` + newline is a line continuation, any other `\x` keeps both characters.
    const parseQuoted = (line: string): string => {
      const m = /^[A-Za-z_][A-Za-z0-9_]*="([\s\S]*)"$/.exec(line);
      if (!m) throw new Error(`not a quoted assignment: ${line}`);
      const body = m[1] as string;
      let out = '';
      for (let i = 0; i < body.length; i++) {
        const c = body[i] as string;
        if (c === '"') throw new Error('unescaped quote');
        if (c !== '\\') {
          out += c;
          continue;
        }
        const n = body[++i] as string;
        if ('"\\`$'.includes(n)) out += n;
        else if (n !== '\n') out += `\\${n}`;
      }
      return out;
    };
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 60 }).filter((s) => !s.includes('\u0000')), (v) => {
        const text = renderEnvFile({ V: v });
        const line = text.slice(text.indexOf('\n') + 1, -1);
        expect(parseQuoted(line)).toBe(v);
      }),
      { numRuns: 500 },
    );
  });
});

describe('Description', () => {
  it('round-trips identity', () => {
    const d = unitDescription(base);
    expect(parseUnitDescription(d)).toEqual({
      key,
      instance: 'web-1',
      slot: 'blue',
      version: '1.2.3+build.4',
      generation: 2,
      port: 20001,
      deployment: 'd-99',
    });
    expect(parseUnitDescription(unitDescription({ ...base, slot: undefined, deployment: undefined }))?.slot).toBeUndefined();
  });

  it('rejects descriptions that are not exactly ours', () => {
    for (const d of [
      unitName(key, 'web-1'),
      'crate',
      'crate team=acme env=7 app=42 instance=web-1 version=1 gen=0',
      'crate team=acme env=7 app=42 instance=web-1 version=1 gen=0 port=1 extra=1',
      'crate team=acme env=7 app=42 instance=web-1 version=1 gen=0 port=1 port=2',
      'crate team=acme env=x app=42 instance=web-1 version=1 gen=0 port=1',
      'crate team=acme env=7 app=42 instance=web-1 version=1 gen=0 port=70000',
      'Crate team=acme env=7 app=42 instance=web-1 version=1 gen=0 port=1',
    ]) {
      expect(parseUnitDescription(d), d).toBeUndefined();
    }
  });
});
