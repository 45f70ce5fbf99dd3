// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const noShell = [
  { name: 'child_process', importNames: ['exec', 'execSync'], message: 'No shell strings: use execa with an argument array.' },
  { name: 'node:child_process', importNames: ['exec', 'execSync'], message: 'No shell strings: use execa with an argument array.' },
];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'state/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ['eslint.config.js', 'bin/*.js', 'scripts/*.mjs'] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-empty': ['error', { allowEmptyCatch: false }],
      'no-restricted-imports': ['error', { paths: noShell }],
      'no-restricted-syntax': [
        'error',
        { selector: "Property[key.name='shell'][value.value=true]", message: 'shell: true is banned: pass an argument array.' },
        { selector: "Property[key.name='shell'][value.type='Literal'][value.value=/./]", message: 'A shell is banned: pass an argument array.' },
        { selector: "MemberExpression[property.name=/^(exec|execSync)$/][object.name=/^(child_process|cp|childProcess)$/]", message: 'No shell strings: use execa with an argument array.' },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    // Plain Node scripts (bin/, scripts/, the test app): Node's globals.
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: {
      globals: Object.fromEntries(
        ['process', 'console', 'URL', 'URLSearchParams', 'Buffer', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'AbortController'].map((g) => [g, 'readonly']),
      ),
    },
  },
);
