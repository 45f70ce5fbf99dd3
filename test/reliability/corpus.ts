/**
 * The hostile-input corpus shared by the fuzzing and injection tests: strings that have broken
 * shells, unit files, container arguments, Caddy configs, paths and parsers elsewhere. Each list is
 * plain data; tests decide what "refused" or "byte-exact" means for the field they put it in.
 */

/** Ids (team, instance, slot, path parameters): every one must be refused where an id is expected. */
export const HOSTILE_IDS: readonly string[] = [
  '..',
  '../etc',
  'a/../../b',
  '%2e%2e',
  '%2e%2e%2fetc',
  '..%2f..%2f',
  'a/b',
  '/abs',
  '\\..\\win',
  '-rf',
  '--help',
  '-',
  '.hidden',
  'a\nb',
  'a\rb',
  'line\n[Service]\nExecStart=/bin/sh',
  'a;b',
  'a|b',
  'a&b',
  'a`id`',
  '$(id)',
  '${HOME}',
  'a b',
  'a\tb',
  'a"b',
  "a'b",
  'a:b',
  'a%b',
  'a*',
  'a?',
  'a\u0000b',
  'é',
  'ａ',
  'a\u202eb',
  '',
  'x'.repeat(64),
];

/**
 * Environment variable values that must reach the app byte for byte (through the unit's
 * EnvironmentFile and Docker's Env): quotes, `$`, `%`, backslashes, newlines, CR, tabs, unicode.
 */
export const ENV_VALUES: Readonly<Record<string, string>> = {
  NEWLINE: 'line1\nline2\n',
  CRLF: 'a\r\nb\rc',
  DQUOTE: 'say "hi" "',
  SQUOTE: "it's 'quoted'",
  PERCENT: '100% %n %s %% %{x}',
  DOLLAR: '$HOME ${PATH} $$ $1 $(id) `id`',
  BACKSLASH: 'C:\\path\\to \\n \\\\ \\" \\$ end\\',
  SHELL: '; rm -rf / #| && || > /tmp/x < /etc/passwd',
  SPECIFIER: '%i %u %h %t %%i',
  TAB: 'a\tb\t',
  UNICODE: 'ünïcödé ✓ 日本語 🚀',
  EQUALS: 'a=b=c',
  HASH: '# not a comment',
  LEADING_SPACE: '  padded  ',
  EMPTY: '',
  BRACES: '}{"]:[',
  CONTROL: 'bell\u0007esc\u001b[31mdel\u007f',
  LONG: 'x'.repeat(10_000),
};

/** Domains that must be refused (they would reach Caddy host matchers). */
export const HOSTILE_DOMAINS: readonly string[] = [
  'a}b.example.com',
  'a"b.example.com',
  'a b.example.com',
  'example.com"}]},{"handle":[{"handler":"static_response"',
  'EXAMPLE.com',
  'a..b',
  '-a.example.com',
  'a-.example.com',
  '*.*.example.com',
  'example.com/path',
  'example.com:80',
  'ex\nample.com',
  'ex{ample}.com',
  '{http.request.host}',
  '',
  `${'a'.repeat(64)}.com`,
];

/** Images that must be refused (a leading `-` would be an option of any CLI). */
export const HOSTILE_IMAGES: readonly string[] = [
  '-v',
  '--privileged',
  '-it/alpine',
  'alpine:latest',
  'alpine@sha256:abc',
  'Alpine',
  'a b',
  'a\nb',
  '$(id)',
  '../x',
  '/alpine',
  'registry.example.com/-x',
];

/** Volumes that must be refused on a host whose volumes root is `root`. */
export function hostileVolumes(root: string): string[] {
  return [
    '/etc:/etc',
    '/:/host',
    `${root}/../etc:/data`,
    `${root}/a/../../etc:/data`,
    `${root}x/data:/data`,
    '/var/run/docker.sock:/var/run/docker.sock',
    `${root}/data:/data:z`,
    `${root}/data:relative`,
    `${root}/data:/a/../etc`,
    'vol:/data:rw:extra',
    '-v:/data',
    'vol\n:/data',
    `${root}/ok:/data\n`,
  ];
}

/** Strings that have broken JSON/YAML handling, templates and logs elsewhere. */
export const HOSTILE_STRINGS: readonly string[] = [
  ...HOSTILE_IDS,
  ...Object.values(ENV_VALUES),
  ...HOSTILE_DOMAINS,
  '__proto__',
  'constructor',
  'prototype',
  '{{.}}',
  '{{7*7}}',
  '<script>alert(1)</script>',
  "' OR 1=1 --",
  '*&a [*a, *a]',
  '!!js/function "x"',
  '\uFEFFbom',
  '\uD800',
  '\uDC00x',
  'x'.repeat(70_000),
];
