/**
 * The walkthrough of examples/README.md as data: its ```sh blocks parsed into steps, so the test runs
 * exactly the commands a reader copies. Conventions of those blocks (readable as plain comments):
 *
 * - a block opened with ```sh background holds long-running commands, one per terminal:
 *   `npm start   # terminal 1; ready when it prints "ready in"`;
 * - `# In terminal N, press Ctrl-C ...` (a comment line) stops what runs in terminal N;
 * - a trailing `# ⇒ text` means the output contains `text`; `(after a few seconds)` after it means
 *   the command is retried until it does; `# exits N` means the exit code is N (else 0).
 *
 * Commands are split into argv (single and double quotes, no shell): a line with shell syntax
 * (`$`, pipes, redirections, globs, `;`, `&`) is refused, so every command means the same typed
 * into any shell.
 */

export type Step =
  | { kind: 'run'; line: string; argv: string[]; expect: string | null; exitCode: number; retry: boolean }
  | { kind: 'background'; line: string; argv: string[]; terminal: number; readyWhen: string }
  | { kind: 'interrupt'; line: string; terminal: number };

/** Split a command line into argv (quotes only). Throws on shell syntax. */
export function splitArgs(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let has = false;
  let quote: '"' | "'" | null = null;
  for (const c of line) {
    if (quote) {
      if (c === quote) quote = null;
      else cur += c;
      continue;
    }
    if (c === '"' || c === "'") {
      quote = c;
      has = true;
      continue;
    }
    if (c === ' ' || c === '\t') {
      if (has || cur !== '') out.push(cur);
      cur = '';
      has = false;
      continue;
    }
    if ('$`|&;<>*?\\(){}'.includes(c)) throw new Error(`shell syntax ${JSON.stringify(c)} in: ${line}`);
    cur += c;
  }
  if (quote) throw new Error(`unterminated quote in: ${line}`);
  if (has || cur !== '') out.push(cur);
  return out;
}

/** Split `cmd  # comment` at the first ` #` outside quotes. */
function splitComment(line: string): [string, string] {
  let quote: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (quote) {
      if (c === quote) quote = null;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || line[i - 1] === ' ')) return [line.slice(0, i).trim(), line.slice(i + 1).trim()];
  }
  return [line.trim(), ''];
}

/** The steps of a README (throws on a line that does not follow the conventions). */
export function parseWalkthrough(markdown: string): Step[] {
  const steps: Step[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^```sh( background)?\s*$/.exec(lines[i] as string);
    if (!open) continue;
    const background = open[1] !== undefined;
    for (i += 1; i < lines.length && !(lines[i] as string).startsWith('```'); i++) {
      const raw = (lines[i] as string).trim();
      if (raw === '') continue;
      const [cmd, comment] = splitComment(raw);
      if (cmd === '') {
        const m = /terminal (\d+), press Ctrl-C/i.exec(comment);
        if (m) steps.push({ kind: 'interrupt', line: raw, terminal: Number(m[1]) });
        continue;
      }
      const argv = splitArgs(cmd);
      if (background) {
        const t = /terminal (\d+)/.exec(comment);
        const r = /ready when it prints "([^"]+)"/.exec(comment);
        if (!t || !r) throw new Error(`a background command needs "terminal N; ready when it prints "...": ${raw}`);
        steps.push({ kind: 'background', line: raw, argv, terminal: Number(t[1]), readyWhen: r[1] as string });
        continue;
      }
      const exits = /exits (\d+)/.exec(comment);
      const expect = /⇒ (.*?)(\s*\(after a few seconds\))?\s*$/.exec(comment);
      steps.push({
        kind: 'run',
        line: raw,
        argv,
        expect: expect ? (expect[1] as string) : null,
        exitCode: exits ? Number(exits[1]) : 0,
        retry: /\(after a few seconds\)/.test(comment),
      });
    }
  }
  return steps;
}
