/**
 * `crate-operator validate <file...>`: check desired-state documents offline, exactly as the operator
 * reads them (parseDesiredYaml: YAML, schema, invariants) and, for a file inside a `desired/` folder,
 * that its path matches its metadata (`desired/<team>/<environment>/<app>.yaml`). Never prints a
 * secret: errors name paths and rules, not values.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import type { DesiredApp } from '../desired/document.ts';
import type { CliIO } from './client.ts';

/** The outcome of checking one file. */
export type FileCheck = { ok: true; doc: DesiredApp } | { ok: false; error: string };

/** The mismatch between a document's metadata and its place under a `desired/` folder, if any (pure). */
export function pathMismatch(file: string, doc: DesiredApp): string | undefined {
  const parts = path.resolve(file).split(path.sep);
  const at = parts.lastIndexOf('desired');
  if (at < 0 || parts.length - at !== 4) return undefined;
  const [team, env, name] = parts.slice(at + 1) as [string, string, string];
  const want = `desired/${doc.metadata.team}/${doc.metadata.environment}/${doc.metadata.app}.yaml`;
  return `desired/${team}/${env}/${name}` === want ? undefined : `metadata says ${want}, the file is desired/${team}/${env}/${name}`;
}

/** Check one file. */
export async function checkFile(file: string): Promise<FileCheck> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    return { ok: false, error: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }
  // Loaded on demand: compiling the document schema takes a moment the other commands need not pay.
  const { parseDesiredYaml } = await import('../desired/document.ts');
  const r = parseDesiredYaml(text);
  if (!r.ok) return r;
  const mismatch = pathMismatch(file, r.doc);
  return mismatch ? { ok: false, error: mismatch } : r;
}

/** Register `validate`. */
export function registerValidate(program: Command, io: CliIO, done: (code: number) => void): void {
  program
    .command('validate')
    .description('check desired-state documents (YAML) the way the operator reads them; nothing is sent anywhere')
    .argument('<file...>', 'desired-state documents, e.g. state/desired/acme/1/7.yaml or examples/desired/*.yaml')
    .addHelpText('after', '\nExit codes: 0 every file is valid, 1 at least one is not.')
    .action(async (files: string[]) => {
      let bad = 0;
      for (const f of files) {
        const r = await checkFile(f);
        if (r.ok) {
          const s = r.doc.spec;
          io.out(`${f}: ok (${r.doc.metadata.team}/${r.doc.metadata.environment}/${r.doc.metadata.app} ${s.runtime} ${s.model} ${s.strategy} ${s.version} on ${s.domain}, ${Object.keys(s.instances).length} instance(s), deployment ${r.doc.deployment.id})\n`);
        } else {
          bad += 1;
          io.out(`${f}: invalid: ${r.error}\n`);
        }
      }
      done(bad === 0 ? 0 : 1);
    });
}
