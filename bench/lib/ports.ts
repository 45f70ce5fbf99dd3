/** Loopback ports for benchmark apps. */
import net from 'node:net';

/** True when 127.0.0.1:`port` can be bound right now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * `n` free loopback ports from a random start in [from, to): below Linux's ephemeral range and apart
 * from the operator's surge range, so other processes on the machine rarely take them meanwhile.
 */
export async function freePorts(n: number, from = 10_000, to = 19_900): Promise<number[]> {
  if (to - from < n) throw new Error(`cannot pick ${n} ports in ${from}-${to}`);
  const start = from + Math.floor(Math.random() * (to - from - n));
  const out: number[] = [];
  for (let p = start; out.length < n; p = p + 1 >= to ? from : p + 1) {
    if (await portFree(p)) out.push(p);
    if (out.length < n && p === start - 1) throw new Error(`only ${out.length} free ports in ${from}-${to}`);
  }
  return out;
}
