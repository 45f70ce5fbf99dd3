/**
 * Child process of the kill test: rewrites the documents of apps 1..N to version "new" through the
 * store, `concurrency` at a time, printing `done <app>` after each completed write. The parent
 * SIGKILLs it mid-way. Usage: node --import tsx kill-writer.ts <stateDir> <N> <concurrency>
 */
import { DesiredStore } from '../../src/desired/store.ts';
import { killTestDoc } from './fixtures.ts';

const [stateDir, n, conc] = process.argv.slice(2) as [string, string, string];
const store = await DesiredStore.open(stateDir);
let next = 1;
const worker = async (): Promise<void> => {
  while (next <= Number(n)) {
    const app = next++;
    await store.write(killTestDoc(app, 'new'));
    process.stdout.write(`done ${app}\n`);
  }
};
await Promise.all(Array.from({ length: Number(conc) }, worker));
process.stdout.write('finished\n');
