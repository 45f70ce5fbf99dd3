// Procfile parsing and shell-free command splitting (pure).
import { describe, expect, it } from 'vitest';
import { hasCode } from '../../src/core/errors.ts';
import { parseProcfile, splitCommand } from '../../src/drivers/procfile.ts';
import { renderExecArg } from '../../src/drivers/unit.ts';

describe('parseProcfile', () => {
  it('reads process types, first occurrence wins, CRLF and junk tolerated', () => {
    const p = parseProcfile('# comment\r\nweb: node server.mjs\r\nworker:  node worker.js  \n\nweb: other\nnot a line\nrelease:\n');
    expect([...p]).toEqual([
      ['web', 'node server.mjs'],
      ['worker', 'node worker.js'],
    ]);
  });
});

describe('splitCommand', () => {
  const cases: Array<[string, unknown[]]> = [
    ['node server.mjs', ['node', 'server.mjs']],
    ['  node   server.mjs\t--x  ', ['node', 'server.mjs', '--x']],
    ["./bin/run 'a b' \"c d\" e\\ f", ['./bin/run', 'a b', 'c d', 'e f']],
    ['run "" \'\'', ['run', '', '']],
    ['run --port $PORT', ['run', '--port', { parts: [{ env: 'PORT' }] }]],
    ['run --port=${PORT} "$HOST:$PORT"', ['run', { parts: ['--port=', { env: 'PORT' }] }, { parts: [{ env: 'HOST' }, ':', { env: 'PORT' }] }]],
    ["run '$PORT' \\$PORT \"\\$PORT\"", ['run', '$PORT', '$PORT', '$PORT']],
    ['run "a\\"b" "c\\\\d" "e\\nf"', ['run', 'a"b', 'c\\d', 'e\\nf']],
    ['run $ 5$ a$. $%', ['run', '$', '5$', 'a$.', '$%']],
    ['run # a comment', ['run']],
    ['run a#b', ['run', 'a#b']],
    ['run *.js ~ [x]', ['run', '*.js', '~', '[x]']],
    ['exec node x', ['node', 'x']],
    ['NODE_ENV=production PORT2=$PORT node x', ['env', 'NODE_ENV=production', { parts: ['PORT2=', { env: 'PORT' }] }, 'node', 'x']],
    ['run ✓ "日本"', ['run', '✓', '日本']],
  ];
  for (const [cmd, argv] of cases) {
    it(`splits ${JSON.stringify(cmd)}`, () => {
      expect(splitCommand(cmd)).toEqual(argv);
    });
  }

  it('refuses what needs a shell', () => {
    for (const cmd of [
      'a && b',
      'a | b',
      'a; b',
      'a > log',
      'a < in',
      'a &',
      '(a)',
      'echo `id`',
      'echo "`id`"',
      'echo $(id)',
      'echo "$(id)"',
      'echo ${X:-y}',
      'echo ${X',
      'echo $1',
      'echo $@',
      'echo $?',
      'echo $-',
      "echo 'unterminated",
      'echo "unterminated',
      'echo trailing\\',
      '',
      '   ',
      'A=1',
      '# only a comment',
    ]) {
      let err: unknown;
      try {
        splitCommand(cmd);
      } catch (e) {
        err = e;
      }
      expect(hasCode(err, 'E_ASSET_COMMAND'), cmd).toBe(true);
    }
  });

  it('renders to ExecStart with $VAR expanded by systemd and literal $ escaped', () => {
    const argv = splitCommand("server --listen \"$HOST:$PORT\" --name 'cost: $5 100%'");
    expect(argv.map((a) => renderExecArg(a)).join(' ')).toBe('"server" "--listen" "${HOST}:${PORT}" "--name" "cost: $$5 100%%"');
  });
});
