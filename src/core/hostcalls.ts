/**
 * Counters of calls made to the host's components. Observers and drivers bump them; benchmarks,
 * metrics and the "host calls do not grow with app count" tests read them.
 */
export type HostComponent = 'systemctl' | 'docker' | 'caddy';

const counts: Record<HostComponent, number> = { systemctl: 0, docker: 0, caddy: 0 };

export function countHostCall(c: HostComponent): void {
  counts[c] += 1;
}

/** A copy of the counters since process start. Subtract two readings to count a span. */
export function hostCallCounts(): Record<HostComponent, number> {
  return { ...counts };
}
