/**
 * Smoke test: the harness's systemd user manager is real. A unit started through `systemctl --user`
 * runs the test app, which answers HTTP; stopping the unit drains it.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { APP_SOURCE } from '../fixtures/asset-server.ts';
import { cleanupUnit, freePort, getTestHost, httpGet, systemctlUser, uniqueName, waitFor } from '../harness/index.ts';

describe('systemd user manager (real)', () => {
  it('starts a unit through systemctl --user that answers HTTP', async () => {
    const host = getTestHost();
    const unit = `${uniqueName('smoke')}.service`;
    const port = await freePort();
    cleanupUnit(unit);
    await writeFile(
      path.join(host.systemd.unitDir, unit),
      [
        '[Unit]',
        'Description=crate smoke test app',
        '[Service]',
        `ExecStart=/usr/bin/node ${APP_SOURCE}`,
        `Environment=PORT=${port} APP_VERSION=smoke INSTANCE_ID=${unit}`,
        'TimeoutStopSec=5',
        '',
      ].join('\n'),
    );
    await systemctlUser(['daemon-reload']);
    await systemctlUser(['start', unit]);

    const res = await waitFor('the unit to answer', async () => {
      const r = await httpGet(`http://127.0.0.1:${port}/`);
      return r.status === 200 ? r : undefined;
    });
    expect(res.body).toMatchObject({ version: 'smoke', instance: unit });

    const units = await systemctlUser(['list-units', '--all', '--output=json', unit]);
    expect(JSON.parse(String(units.stdout))).toEqual([expect.objectContaining({ unit, active: 'active', sub: 'running' })]);

    await systemctlUser(['stop', unit]);
    const show = await systemctlUser(['show', '-p', 'ActiveState,Result', unit]);
    expect(String(show.stdout)).toContain('ActiveState=inactive');
    expect(String(show.stdout)).toContain('Result=success');
    await expect(httpGet(`http://127.0.0.1:${port}/`, { timeoutMs: 1000 })).rejects.toThrow();
  });
});
