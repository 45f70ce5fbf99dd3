/**
 * Procfile parsing and command splitting without a shell.
 *
 * A Procfile line is `<type>: <command>`; the operator runs the `web` type. The command is split into
 * argv with a small, documented subset of POSIX shell word rules, and anything that would need a real
 * shell is refused (`E_ASSET_COMMAND`) instead of being guessed at:
 * - words are separated by spaces/tabs; `#` at the start of a word starts a comment;
 * - `'…'` is literal; `"…"` is literal except `\"`, `\\`, `\$`, `` \` `` and variable references;
 *   outside quotes `\x` is a literal `x`;
 * - `$NAME` and `${NAME}` (outside single quotes) become environment references that systemd expands
 *   at start from the unit's environment (app env_vars, PORT, HOST), always as part of ONE argument (no
 *   word splitting, unlike an unquoted shell `$NAME`); an unset variable expands to the empty string;
 *   a `$` not followed by a name or `{` is literal;
 * - leading `NAME=value` words become `env NAME=value …` (run via /usr/bin/env), a leading `exec` is
 *   dropped;
 * - refused: `| & ; < > ( )` and backticks outside quotes, `$(…)`, `${NAME:-…}` and other parameter
 *   forms, `$1`/`$@`/`$?`-style special parameters, unterminated quotes, a trailing backslash.
 * Globs (`*`, `?`, `[`) and `~` are NOT expanded: they are passed literally.
 *
 * Only the app's own archive (never a request) provides a Procfile; request values reach units only
 * through the env file and fully escaped arguments.
 */
import { CrateError } from '../core/errors.ts';
import type { ExecArg } from './unit.ts';

/** Process types and their command lines, in file order (first occurrence of a type wins). */
export function parseProcfile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    const m = /^([A-Za-z0-9_-]+)[ \t]*:[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!m) continue;
    const [, type, cmd] = m as unknown as [string, string, string];
    if (cmd !== '' && !out.has(type)) out.set(type, cmd);
  }
  return out;
}

function refuse(cmd: string, why: string): never {
  throw new CrateError('E_ASSET_COMMAND', `Procfile command needs a shell (${why}); wrap it in an executable script such as ./start: ${cmd}`, {
    details: { command: cmd.slice(0, 500), reason: why },
  });
}

type Part = string | { env: string };

const NAME_START = /[A-Za-z_]/;
const NAME_CHAR = /[A-Za-z0-9_]/;

/**
 * Split one command line into ExecArgs (see module comment). Throws E_ASSET_COMMAND for shell syntax
 * and for an empty command.
 */
export function splitCommand(cmd: string): ExecArg[] {
  const words: Part[][] = [];
  let cur: Part[] | undefined;
  const lit = (s: string): void => {
    cur ??= [];
    const last = cur[cur.length - 1];
    if (typeof last === 'string') cur[cur.length - 1] = last + s;
    else cur.push(s);
  };
  const endWord = (): void => {
    if (cur) words.push(cur.length === 0 ? [''] : cur);
    cur = undefined;
  };
  // Parse a `$…` at cmd[i] (cmd[i] === '$'); returns the index after it.
  const variable = (i: number): number => {
    const next = cmd[i + 1];
    if (next === '{') {
      const close = cmd.indexOf('}', i + 2);
      if (close < 0) refuse(cmd, 'unterminated ${');
      const name = cmd.slice(i + 2, close);
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) refuse(cmd, `\${${name}} is not a plain variable reference`);
      cur ??= [];
      cur.push({ env: name });
      return close + 1;
    }
    if (next !== undefined && NAME_START.test(next)) {
      let j = i + 1;
      while (j < cmd.length && NAME_CHAR.test(cmd[j] as string)) j++;
      cur ??= [];
      cur.push({ env: cmd.slice(i + 1, j) });
      return j;
    }
    if (next === '(') refuse(cmd, 'command substitution $(…)');
    if (next !== undefined && /[0-9@*#?$!-]/.test(next)) refuse(cmd, `special parameter $${next}`);
    lit('$');
    return i + 1;
  };

  let i = 0;
  while (i < cmd.length) {
    const c = cmd[i] as string;
    if (c === ' ' || c === '\t') {
      endWord();
      i++;
    } else if (c === '#' && cur === undefined) {
      break;
    } else if (c === "'") {
      const close = cmd.indexOf("'", i + 1);
      if (close < 0) refuse(cmd, 'unterminated single quote');
      lit(cmd.slice(i + 1, close));
      i = close + 1;
    } else if (c === '"') {
      cur ??= [];
      i++;
      for (;;) {
        if (i >= cmd.length) refuse(cmd, 'unterminated double quote');
        const d = cmd[i] as string;
        if (d === '"') {
          i++;
          break;
        }
        if (d === '\\') {
          const n = cmd[i + 1];
          if (n !== undefined && '"\\$`'.includes(n)) {
            lit(n);
            i += 2;
          } else {
            lit('\\');
            i++;
          }
        } else if (d === '$') {
          i = variable(i);
        } else if (d === '`') {
          refuse(cmd, 'backtick command substitution');
        } else {
          lit(d);
          i++;
        }
      }
    } else if (c === '\\') {
      const n = cmd[i + 1];
      if (n === undefined) refuse(cmd, 'trailing backslash');
      lit(n);
      i += 2;
    } else if (c === '$') {
      i = variable(i);
    } else if ('|&;<>()`'.includes(c)) {
      refuse(cmd, `operator ${c}`);
    } else {
      lit(c);
      i++;
    }
  }
  endWord();

  const args: ExecArg[] = words.map((w) => (w.every((p) => typeof p === 'string') ? (w).join('') : { parts: w }));
  if (args[0] === 'exec') args.shift();
  let assignments = 0;
  while (assignments < args.length) {
    const a = args[assignments];
    const head = typeof a === 'string' ? a : a?.parts[0];
    if (typeof head === 'string' && /^[A-Za-z_][A-Za-z0-9_]*=/.test(head)) assignments++;
    else break;
  }
  if (assignments === args.length) {
    throw new CrateError('E_ASSET_COMMAND', `Procfile command is empty: ${cmd}`, { details: { command: cmd.slice(0, 500), reason: 'empty' } });
  }
  return assignments > 0 ? ['env', ...args] : args;
}
