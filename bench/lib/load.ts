/**
 * The parent side of ./load-worker.ts: start the load clients in a child process (its own event loop
 * and CPU time, so the operator under test is not slowed by its own load generator), send long
 * requests, stop and collect the tallies.
 */
import { fileURLToPath } from 'node:url';
import { execaNode, type ResultPromise } from 'execa';
import type { HoldDone, LoadConfig, LoadResult } from './load-worker.ts';

export type { ClientTally, HoldDone, LoadConfig, LoadResult, Segment } from './load-worker.ts';

const WORKER = fileURLToPath(new URL('./load-worker.ts', import.meta.url));

export interface Load {
  /** Send one long request (its own connection); resolves when it ends. */
  hold(path: string): Promise<HoldDone>;
  /** Stop every client; their tallies. */
  stop(): Promise<LoadResult>;
  /** Kill the worker (cleanup after an error). */
  kill(): void;
}

export async function startLoad(cfg: LoadConfig): Promise<Load> {
  const child: ResultPromise<{ ipc: true; nodeOptions: string[]; stdout: 'inherit'; stderr: 'inherit'; reject: false }> = execaNode(WORKER, [JSON.stringify(cfg)], {
    ipc: true,
    nodeOptions: ['--import', 'tsx'],
    stdout: 'inherit',
    stderr: 'inherit',
    reject: false,
  });
  const waiting = new Map<string, (d: HoldDone) => void>();
  const signal: { ready?: () => void; result?: (r: LoadResult) => void } = {};
  const readyP = new Promise<void>((r) => (signal.ready = r));
  const resultP = new Promise<LoadResult>((r) => (signal.result = r));
  const pump = (async () => {
    for await (const message of child.getEachMessage()) {
      const m = message as unknown as { type: string; id?: string };
      if (m.type === 'ready') signal.ready?.();
      else if (m.type === 'hold-done') waiting.get(m.id ?? '')?.(m as unknown as HoldDone);
      else if (m.type === 'result') {
        signal.result?.(m as unknown as LoadResult);
        return;
      }
    }
  })();
  const timeout = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await Promise.race([readyP, child.then((r) => Promise.reject(new Error(`load worker exited before it was ready (exit ${String(r.exitCode)})`)))]);
  clearTimeout(timeout);
  let n = 0;
  return {
    async hold(path) {
      const id = String(++n);
      const done = new Promise<HoldDone>((r) => waiting.set(id, r));
      await child.sendMessage({ type: 'hold', id, path });
      return done;
    },
    async stop() {
      await child.sendMessage({ type: 'stop' });
      const kill = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const r = await Promise.race([resultP, child.then((x) => Promise.reject(new Error(`load worker exited without a result (exit ${String(x.exitCode)})`)))]);
      await pump;
      await child;
      clearTimeout(kill);
      return r;
    },
    kill: () => child.kill('SIGKILL'),
  };
}
