/**
 * `POST /v1/plan`: a dry run of a desired-state document. The body is a document as JSON (the YAML
 * of `state/desired/<team>/<env>/<app>.yaml`, see src/desired/README.md); the answer is what the
 * reconciler would do if that document were the app's document now, decided exactly as a pass
 * decides (deployment vs heal, see src/reconciler/app-plan.ts), plus the document diff against the
 * one in force. Nothing is written, recorded or triggered.
 *
 * - 200 `{app, mode, deployment_id, plan, diff, document_error?}`; `document_error` when the app's
 *   file on disk is currently invalid (the document in force is its last valid version).
 * - 400 for a document that fails the schema or the rules the store applies, naming each field.
 * - Secrets never appear: the plan holds step names, ports and revision ids; the diff is redacted.
 */
import { Type, type Static } from 'typebox';
import { CrateError } from '../core/errors.ts';
import { checkInvariants, diffDesired, docKey, summarizeDesired, type DesiredApp } from '../desired/document.ts';
import { DesiredAppSchema } from '../desired/schema.ts';
import type { ApiContext, ApiInstance } from './app.ts';
import { validationError, type FieldIssue } from './errors.ts';
import { ErrorBody } from './schemas.ts';

const PatchOp = Type.Object({ op: Type.String(), path: Type.String(), value: Type.Optional(Type.Unknown()), from: Type.Optional(Type.String()) });

/** The plan as clients see it (src/reconciler/format.ts planView). */
export const PlanViewSchema = Type.Object(
  {
    kind: Type.Enum(['noop', 'heal', 'deploy', 'delete']),
    strategy: Type.Union([Type.Enum(['blue_green', 'rolling', 'recreate']), Type.Null()]),
    fallback: Type.Union([Type.Object({ from: Type.String(), to: Type.String(), reason: Type.String() }, { additionalProperties: false }), Type.Null()]),
    drops_traffic: Type.Boolean(),
    steps: Type.Array(Type.String(), { description: 'Step names in order, e.g. "start web v2 on :20001".' }),
    diff: Type.Array(PatchOp, { description: 'JSON-Patch from what runs to what the document wants (instances by id, runs by <revision>@<port>).' }),
    notes: Type.Array(Type.String()),
  },
  { additionalProperties: false },
);

/** What the reconciler answers for a document (AppDeps.planDocument). */
export interface PlanOfDocument {
  /** `deploy`: rolled out as deployment `deployment_id`; `heal`: carried out directly; `left_alone`: nothing. */
  mode: 'deploy' | 'heal' | 'left_alone';
  deployment_id: string | null;
  plan: Static<typeof PlanViewSchema>;
}

export const PlanResult = Type.Object(
  {
    app: Type.Object({ team_id: Type.String(), environment_id: Type.Integer(), app_id: Type.Integer() }, { additionalProperties: false }),
    mode: Type.Enum(['deploy', 'heal', 'left_alone'], { description: 'deploy: a deployment would roll it out (a new deployment id); heal: only drift would be put back.' }),
    deployment_id: Type.Union([Type.String(), Type.Null()]),
    plan: PlanViewSchema,
    diff: Type.Array(PatchOp, { description: 'JSON-Patch from the document in force to this one (secrets redacted).' }),
    document_error: Type.Optional(
      Type.Object({ path: Type.String(), error: Type.String(), at: Type.String() }, { additionalProperties: false, description: "The app's file on disk is invalid; the document in force is its last valid version." }),
    ),
  },
  { additionalProperties: false },
);

const EXAMPLE_DOC = {
  apiVersion: 'crate-operator/v1',
  kind: 'App',
  metadata: { team: 'acme', environment: 2, app: 17 },
  spec: {
    runtime: 'binary',
    model: 'instance',
    domain: 'shop.example.com',
    strategy: 'blue_green',
    version: '1.4.0',
    binary: { asset_url: 'https://assets.example.com/shop-1.4.0.tar.gz' },
    env: { DATABASE_URL: 'postgres://db/shop' },
    health_check_path: '/healthz',
    instances: { 'i-101': { port: 3001, slot: 'blue', state: 'running', generation: 0 }, 'i-102': { port: 3002, slot: 'green', state: 'running', generation: 0 } },
  },
  deployment: { id: '4101', callback_url: 'https://platform.example.com/cb', requested_at: '2025-01-01T12:00:00.000Z' },
};

/** The rules beyond the schema (checkInvariants), one issue per field. */
function invariantIssues(doc: DesiredApp): FieldIssue[] {
  return checkInvariants(doc).map((m) => {
    const at = m.indexOf(': ');
    return at < 0 ? { field: '(body)', reason: m } : { field: m.slice(0, at), reason: m.slice(at + 2) };
  });
}

export function registerPlan(app: ApiInstance, ctx: ApiContext): void {
  app.post(
    '/v1/plan',
    {
      schema: {
        tags: ['deploy'],
        summary: 'Plan a desired-state document (dry run): what the operator would do, changing nothing',
        description:
          'The body is a desired-state document as JSON (the format of state/desired/<team>/<env>/<app>.yaml). The answer is the plan the next reconcile would carry out if this were the app\'s document, and the diff from the document in force. Nothing is written.',
        body: { ...DesiredAppSchema, examples: [EXAMPLE_DOC] },
        response: {
          200: { ...PlanResult, description: 'The plan; nothing changed' },
          400: { ...ErrorBody, description: 'Bad Request: the document is invalid; details.fields names each offending field' },
          500: { ...ErrorBody, description: 'Server Error' },
        },
      },
    },
    async (req) => {
      const doc = req.body;
      const issues = invariantIssues(doc);
      if (issues.length > 0) throw validationError(issues, 'invalid document');
      const plan = ctx.deps.planDocument;
      if (!plan) throw new CrateError('E_NO_PLANNER', 'this operator has no planner');
      const key = docKey(doc);
      const old = ctx.deps.store.get(key);
      const p = await plan(doc);
      const err = ctx.deps.store.errorFor(key);
      return {
        app: { team_id: key.team, environment_id: key.env, app_id: key.app },
        mode: p.mode,
        deployment_id: p.deployment_id,
        plan: p.plan,
        diff: diffDesired(old ? summarizeDesired(old) : undefined, summarizeDesired(doc)),
        ...(err ? { document_error: { path: err.path, error: err.error, at: err.at } } : {}),
      };
    },
  );
}
