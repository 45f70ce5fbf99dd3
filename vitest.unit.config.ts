// Pure-logic tests only (no real components started): `npx vitest run -c vitest.unit.config.ts test/machines`.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: { include: ['test/**/*.test.ts'], testTimeout: 30_000, pool: 'forks' },
});
