// Every benchmark on one private host, one after the other:
//   npm run bench            (full: N up to 1,000 binary / 200 docker apps, 20 deploys per group)
//   npm run bench:quick      (smaller N and counts; under 3 minutes on 2 idle cores)
// Exits 1 when a benchmark reported a failure (the zero-downtime benchmark: any failed request), 2
// when one crashed. Figures go to stdout and bench/results/<name>[.quick].json.
import { apiBench } from './api.ts';
import { deployOverhead } from './deploy-overhead.ts';
import { runMain } from './lib/main.ts';
import { operatorMemory } from './operator-memory.ts';
import { reconcileScaling } from './reconcile-scaling.ts';
import { zeroDowntime } from './zero-downtime.ts';

await runMain([reconcileScaling, deployOverhead, zeroDowntime, apiBench, operatorMemory]);
