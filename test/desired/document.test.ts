/** The desired-state document: schema, invariants, YAML round trip, hostile YAML, redaction, diff. */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkInvariants,
  diffDesired,
  parseDesiredYaml,
  plainBinaryVersion,
  redactSecret,
  serializeDesired,
  summarizeDesired,
  validateDesired,
} from '../../src/desired/document.ts';
import { ENV_VALUE_PATTERN } from '../../src/desired/schema.ts';
import { sampleDoc } from './fixtures.ts';


describe('schema and invariants', () => {
  it('accepts a valid document and rejects each broken rule with a path, never the value', () => {
    expect(validateDesired(sampleDoc()).ok).toBe(true);
    const bad: Array<[unknown, RegExp]> = [
      [{ ...sampleDoc(), apiVersion: 'crate-operator/v2' }, /apiVersion/],
      [{ ...sampleDoc(), kind: 'Service' }, /kind/],
      [{ ...sampleDoc(), extra: 1 }, /additional/],
      [{ ...sampleDoc(), status: { phase: 'x' } }, /additional/],
      [sampleDoc({ domain: 'Shop.example.com' }), /spec\/domain/],
      [sampleDoc({ env: { '1X': 'secret-value' } }), /spec\/env/],
      [sampleDoc({ instances: {} }), /spec\/instances/],
      [sampleDoc({ instances: { 'a/b': { port: 1, slot: 'x', state: 'running', generation: 0 } } }), /instances/],
      [sampleDoc({ runtime: 'docker' }), /runtime docker needs spec.docker/],
      [sampleDoc({ instances: { a: { port: 1, slot: 'x', state: 'running', generation: 0 }, b: { port: 1, slot: 'y', state: 'running', generation: 0 } } }), /port 1 is also used/],
      [sampleDoc({ instances: { a: { port: 1, slot: 'x', state: 'running', generation: 0 } } }), /exactly 2 slots/],
      [sampleDoc({ model: 'plain' }), /plain model has no slots/],
      [sampleDoc({ instances: { a: { port: 1, state: 'running', generation: 0 }, b: { port: 2, slot: 'y', state: 'running', generation: 0 } } }), /needs a slot/],
      [sampleDoc({ instances: { a: { port: 1, slot: 'x', state: 'paused' as 'running', generation: 0 }, b: { port: 2, slot: 'y', state: 'running', generation: -1 } } }), /instances/],
    ];
    for (const [doc, re] of bad) {
      const r = validateDesired(doc);
      expect(r.ok, JSON.stringify(doc)).toBe(false);
      if (!r.ok) {
        expect(r.error).toMatch(re);
        expect(r.error).not.toContain('secret-value');
      }
    }
  });

  it('checkInvariants is empty for consistent documents', () => {
    expect(checkInvariants(sampleDoc())).toEqual([]);
    expect(checkInvariants(sampleDoc({ model: 'plain', strategy: 'rolling', instances: { w: { port: 1, state: 'stopped', generation: 3 } } }))).toEqual([]);
  });
});

describe('YAML', () => {
  it('round-trips any env value a process can carry, and any valid document shape', () => {
    // The values the schema admits (ENV_VALUE_PATTERN: no NUL, no unpaired surrogate), any code point otherwise.
    const envValue = fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => ENV_VALUE_PATTERN.test(s));
    const envKey = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,12}$/).filter((k) => !['__proto__', 'constructor', 'prototype'].includes(k));
    fc.assert(
      fc.property(fc.dictionary(envKey, envValue, { maxKeys: 8 }), fc.array(envValue, { maxLength: 3 }), (env, command) => {
        const doc = sampleDoc({
          env,
          runtime: 'docker',
          binary: undefined,
          docker: { image: 'registry.example.com/a/b', tag: 'v1', command, credentials: { username: 'u', password: Object.values(env)[0] ?? 'p' } },
        });
        delete doc.spec.binary;
        const text = serializeDesired(doc);
        const back = parseDesiredYaml(text);
        expect(back.ok, text).toBe(true);
        if (back.ok) expect(back.doc).toEqual(doc);
        // Serialisation is canonical: equal documents give equal bytes.
        if (back.ok) expect(serializeDesired(back.doc)).toBe(text);
      }),
      { numRuns: 300 },
    );
  });

  it('values YAML would read as something else stay strings', () => {
    const env = { A: 'true', B: 'null', C: '0x1F', D: '1e3', E: '~', F: '2025-01-01', G: '- x', H: '*alias', I: '&anchor', J: '!!binary aGk=', K: '"', L: "'", M: '{a: 1}', N: '', O: ' ', P: '#', Q: 'a: b', R: '\t', S: '%TAG' };
    const doc = sampleDoc({ env });
    const back = parseDesiredYaml(serializeDesired(doc));
    expect(back.ok && back.doc.spec.env).toEqual(env);
  });

  it('hostile YAML is an error, never a throw or a hang', () => {
    const bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n';
    const cases: Array<[string, RegExp]> = [
      [bomb, /YAML: .*(alias|resource)/i],
      ['a: 1\na: 2\n', /YAML: Map keys must be unique/],
      ['{ unterminated', /YAML/],
      ['- just\n- a list\n', /invalid document/],
      ['', /invalid document/],
      ['42', /invalid document/],
      [`${serializeDesired(sampleDoc())}\n---\nsecond: doc\n`, /YAML/],
      [serializeDesired(sampleDoc()).replace('kind: App', 'kind: App\n__proto__: {polluted: true}'), /invalid document/],
      [serializeDesired(sampleDoc()).replace('env:\n    A: "1"', 'env:\n    __proto__: x'), /invalid document/],
      [serializeDesired(sampleDoc()).replace('port: 3001', 'port: !!binary aGk='), /invalid document/],
      ['x'.repeat(5 * 1024 * 1024), /larger than/],
    ];
    for (const [text, re] of cases) {
      const r = parseDesiredYaml(text);
      expect(r.ok, text.slice(0, 60)).toBe(false);
      if (!r.ok) expect(r.error).toMatch(re);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('versions, redaction, diff', () => {
  it('plainBinaryVersion is stable per URL and a valid version', () => {
    const a = plainBinaryVersion('https://a.example/x.tgz');
    expect(a).toBe(plainBinaryVersion('https://a.example/x.tgz'));
    expect(a).not.toBe(plainBinaryVersion('https://a.example/y.tgz'));
    expect(a).toMatch(/^a-[0-9a-f]{12}$/);
  });

  it('summarizeDesired redacts env values, the registry password and the asset URL query', () => {
    const doc = sampleDoc({ env: { TOKEN: 'tok-123', SAME: 'tok-123' } });
    const s = summarizeDesired(doc);
    expect(JSON.stringify(s)).not.toContain('tok-123');
    expect(JSON.stringify(s)).not.toContain('abc123');
    expect(s.spec.env.TOKEN).toBe(s.spec.env.SAME);
    expect(s.spec.env.TOKEN).toBe(redactSecret('tok-123'));
    expect(s.spec.binary?.asset_url).toMatch(/^https:\/\/assets\.example\.com\/shop\.tgz\?<redacted:/);
    const cb = summarizeDesired({ ...doc, deployment: { ...doc.deployment, callback_url: 'https://p.example.com/cb?token=t0k3n' } });
    expect(cb.deployment.callback_url).toMatch(/^https:\/\/p\.example\.com\/cb\?<redacted:[0-9a-f]{8}>$/);
    const d = sampleDoc({ runtime: 'docker', docker: { image: 'a/b', tag: '1', credentials: { username: 'u', password: 'pw-999' } } });
    delete d.spec.binary;
    expect(JSON.stringify(summarizeDesired(d))).not.toContain('pw-999');
    expect(doc.spec.env.TOKEN).toBe('tok-123'); // the input is not modified
  });

  it('diffDesired names keyed paths and handles creation and deletion', () => {
    const a = sampleDoc();
    const b = sampleDoc({ version: '2', instances: { ...a.spec.instances, 'i-2': { port: 3003, slot: 'green', state: 'stopped', generation: 1 } } });
    expect(diffDesired(a, b).map((o) => `${o.op} ${o.path}`).sort()).toEqual(
      ['replace /spec/version', 'replace /spec/instances/i-2/port', 'replace /spec/instances/i-2/state', 'replace /spec/instances/i-2/generation'].sort(),
    );
    expect(diffDesired(undefined, a)).toEqual([{ op: 'add', path: '', value: a }]);
    expect(diffDesired(a, undefined)).toEqual([{ op: 'remove', path: '' }]);
    expect(diffDesired(a, a)).toEqual([]);
  });
});

describe('README', () => {
  it('the example document in src/desired/README.md is valid', () => {
    const md = readFileSync(new URL('../../src/desired/README.md', import.meta.url), 'utf8');
    const yaml = md.split('```yaml\n')[1]?.split('```')[0] ?? '';
    const r = parseDesiredYaml(yaml);
    expect(r.ok, r.ok ? '' : r.error).toBe(true);
  });
});
