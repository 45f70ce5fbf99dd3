/**
 * Regression (found by the SSRF suite under load): the API writes an app's document, then records its
 * deployment. A reconcile pass of that app in between saw a document whose deployment id had no
 * record, adopted it as a hand-written (GitOps) document, and the API's own record then failed:
 * 500 E_INTERNAL to the platform, and its retry with the same deployment_id a 409.
 *
 * The window is widened deterministically here: the document write is slowed down and a pass of the
 * app is triggered inside it. The API and the reconciler decide under the same per-app lock
 * (DesiredStore.appLock), so the pass waits and sees the API's record.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { docKey, type DesiredApp } from '../../src/desired/document.ts';
import { freePort, getTestHost } from '../harness/index.ts';
import { startTestOperator } from '../e2e/operator.ts';

describe('API write vs reconcile pass', () => {
  it('a pass during the API write does not adopt the document; the request is a 202 and replays as one', async () => {
    const t = await startTestOperator();
    const store = t.op.store;
    const write = store.write.bind(store);
    store.write = async (doc: DesiredApp) => {
      const r = await write(doc);
      // The document is in force, its record not yet written: a pass of the app now.
      t.op.reconciler.trigger(docKey(doc));
      await sleep(600);
      return r;
    };
    const body = {
      team_id: t.team,
      environment_id: 1,
      app_id: 1,
      deployment_id: 77,
      deployment_strategy: 'recreate',
      domain: `${t.team}.race.test`,
      asset_url: `${getTestHost().assets.baseUrl}/files/does-not-exist.tgz`,
      callback_url: 'http://127.0.0.1:9/cb',
      env_vars: {},
      target_version: 'v1',
      slots: { main: { instance_id: 'web', port: await freePort() } },
    };
    const r = await t.api('POST', '/v1/app/instance/binary/deploy', body);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const rec = t.op.records.getRecord('77');
    expect(rec?.endpoint).toBe('/v1/app/instance/binary/deploy');
    expect(rec?.request_hash).not.toBeNull();
    store.write = write;
    const replay = await t.api('POST', '/v1/app/instance/binary/deploy', body);
    expect(replay.status, JSON.stringify(replay.body)).toBe(202);
    await t.settle(77);
  }, 60_000);
});
