/** A valid desired-state document for tests, with spec fields overridable. */
import type { DesiredApp } from '../../src/desired/document.ts';

export function sampleDoc(over: Partial<DesiredApp['spec']> = {}): DesiredApp {
  return {
    apiVersion: 'crate-operator/v1',
    kind: 'App',
    metadata: { team: 'acme', environment: 2, app: 17 },
    spec: {
      runtime: 'binary',
      model: 'instance',
      domain: 'shop.example.com',
      strategy: 'blue_green',
      version: '1.0.0',
      binary: { asset_url: 'https://assets.example.com/shop.tgz?X-Signature=abc123' },
      env: { A: '1' },
      health_check_path: '/healthz',
      instances: {
        'i-1': { port: 3001, slot: 'blue', state: 'running', generation: 0 },
        'i-2': { port: 3002, slot: 'green', state: 'running', generation: 0 },
      },
      ...over,
    },
    deployment: { id: '42', callback_url: 'https://platform.example.com/cb', requested_at: '2025-01-01T00:00:00.000Z' },
  };
}

/** The document of app `app` in the kill test, at version `version`. */
export function killTestDoc(app: number, version: 'old' | 'new'): DesiredApp {
  const env: Record<string, string> = { A: `${version}-${app}`, B: `"quoted" $and %percent\nnew line ${version}` };
  return {
    apiVersion: 'crate-operator/v1',
    kind: 'App',
    metadata: { team: 'kill', environment: 1, app },
    spec: {
      runtime: 'binary',
      model: 'plain',
      domain: `app-${app}.example.com`,
      strategy: 'rolling',
      version,
      binary: { asset_url: `https://assets.example.com/${app}-${version}.tgz` },
      env,
      health_check_path: null,
      instances: { web: { port: 10000 + app, state: 'running', generation: 0 } },
    },
    deployment: { id: String(app), callback_url: 'https://platform.example.com/cb', requested_at: '2025-01-01T00:00:00.000Z' },
  };
}
