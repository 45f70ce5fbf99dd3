#!/usr/bin/env node
// Launcher: TypeScript runs directly through tsx (no build step).
import { register } from 'tsx/esm/api';

register();
const { main } = await import(new URL('../src/cli.ts', import.meta.url).href);
process.exitCode = await main(process.argv);
