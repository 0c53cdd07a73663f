/**
 * The bilevel Meta-Weight-Net step (Shu et al., NeurIPS 2019) over any functional model.
 *
 * One step on a train batch and a meta batch (docs/DESIGN.md §6):
 *   1. virtual step  θ′(φ) = θ − α ∇θ Σ wᵢ ℓᵢ(θ),  w = norm(V_φ(ℓ(θ) detached)), graph kept;
 *   2. meta step     φ ← optimizer(∇φ L_meta(θ′(φ))),  L_meta = plain mean loss of the meta batch;
 *   3. actual step   w = norm(V_φ(ℓ(θ))) with the updated φ and no gradient to φ; the caller's
 *                    optimizer gets ∇θ Σ wᵢ ℓᵢ(θ).
 *
 * The hypergradient is exact: the outer gradient over φ is taken through the inner tf.grads
 * over θ (nested tapes, as in test/safeOps.test.ts). Because θ does not depend on φ, that
 * outer pass only runs back along the inner backward's linear path in w and through the
 * meta forward at θ′; every op the model uses must still be second-order safe
 * (backend/safeOps).
 *
 * Scope `heads` runs the meta update *inside* the actual step's forward: tfjs keeps one tape
 * for nested gradient calls, so the virtual step's tf.grads over the heads differentiates the
 * ℓ(θ) that the actual step's forward already recorded; after φ moves, the same ℓ is weighted
 * by the updated net and the actual backward runs (the meta computations do not lead to the
 * actual loss, since φ changes by assignment, so that backward skips them). Scope `all` runs
 * the meta update first, on its own tape: nested, it would save one train forward but every
 * op of its second-order pass would be recorded and kept on the actual step's tape (measured
 * on the tiny dual encoder: 1.6× the tensor memory and no faster).
 *
 * Scopes (costs in units of a plain step's forward + backward on the train batch, meta batch of
 * the same size):
 * - `all`: every parameter takes the virtual step. ≈ 1 (virtual fwd + bwd) + 1 (meta fwd + bwd)
 *   + ⅔ (the backward of the virtual backward) + 1 (the actual step) ≈ 3.7, plus tape overhead.
 * - `heads`: only `model.headNames` take the virtual step, so the virtual backward and its
 *   second-order pass stop at the heads, and the meta batch goes through the encoders once,
 *   forward only, detached (`features`), then `headPerSampleLoss`. ≈ 1 + ⅓ (the meta forward).
 *   The actual step's gradients still cover every parameter.
 */
import { tf } from '../backend/tf.js';
import { stopGradient } from '../backend/safeOps.js';
import { WEIGHT_NET_PARAM_NAMES, WeightNet } from './weightNet.js';

/** A flat parameter record: dotted name → tensor (a variable, or θ′ on a tape). */
export type Params = Record<string, tf.Tensor>;

/**
 * What the meta step needs from a model. All functions must be pure in `params` and built
 * from second-order-safe ops. For `metaScope: 'heads'`, `headPerSampleLoss(p, features(p, b), b)`
 * must equal `perSampleLoss(p, b)`, with only `headNames` used after the features.
 */
export interface MetaModel<Batch> {
  /** Per-sample losses ℓ [B] of a batch (for SAM: ½(row CE + column CE) per pair). */
  perSampleLoss(params: Params, batch: Batch): tf.Tensor;
  /** Number of samples B in a batch (the length of `perSampleLoss`). */
  batchSize(batch: Batch): number;
  /** Parameters adapted by `metaScope: 'heads'` (dual encoder: the projections and `logit_scale`). */
  headNames: readonly string[];
  /** Encoder outputs before the heads (dual encoder: pooled video and text features). */
  features?(params: Params, batch: Batch): tf.Tensor[];
  /** Per-sample losses [B] from `features` and the head parameters in `params`. */
  headPerSampleLoss?(params: Params, features: readonly tf.Tensor[], batch: Batch): tf.Tensor;
}

export type MetaScope = 'all' | 'heads';
/** `sum`: w = V/ΣV (MW-Net's normalised variant); `none`: w = V/B (its plain mean). */
export type WeightNormalization = 'sum' | 'none';

/** What every weighting step returns. `grads` are new tensors for the caller to dispose. */
export interface WeightedStepResult {
  /** wᵢ, the coefficients of the step's loss Σ wᵢℓᵢ. */
  weights: Float32Array;
  /** ℓᵢ(θ) of the train batch. */
  losses: Float32Array;
  /** ∇θ Σ wᵢℓᵢ(θ) for every entry of `params`. */
  grads: Record<string, tf.Tensor>;
  /** Σ wᵢℓᵢ(θ). */
  loss: number;
  /** L_meta(θ′) before φ moved (L2RW: at θ′ = θ); null when the meta update was skipped. */
  metaLoss: number | null;
}

export interface MwnStepResult extends WeightedStepResult {
  /** Whether φ was updated this step (see `metaEvery`). */
  metaUpdated: boolean;
}

/** Keeps Σw = 0 (every V underflowed) from dividing by zero: the weights then stay 0, as in MW-Net's code. */
const SUM_GUARD = 1e-12;

/**
 * The coefficients of Σ wᵢℓᵢ from raw weights V [B]: V/(ΣV) for `sum`, V/B for `none`.
 * Differentiable (it sits inside the virtual step).
 *
 * @example normalizeWeights(tf.tensor1d([1, 3]), 'sum') // [0.25, 0.75]
 */
export function normalizeWeights(raw: tf.Tensor, mode: WeightNormalization): tf.Tensor {
  if (!(raw instanceof tf.Tensor) || raw.rank !== 1) throw new Error(`normalizeWeights: 'raw' must be a tensor [B], got ${raw instanceof tf.Tensor ? `[${raw.shape}]` : typeof raw}`);
  if (mode !== 'sum' && mode !== 'none') throw new Error(`normalizeWeights: 'mode' must be 'sum' or 'none', got ${String(mode)}`);
  return tf.tidy(() => (mode === 'sum' ? tf.div(raw, tf.add(tf.sum(raw), SUM_GUARD)) : tf.div(raw, raw.shape[0])));
}

/**
 * Whether step `step` (0-based) updates φ when the meta step runs every `metaEvery` steps.
 *
 * @example isMetaStep(10, 5) // true; isMetaStep(11, 5) // false
 */
export function isMetaStep(step: number, metaEvery: number): boolean {
  if (!Number.isInteger(step) || step < 0) throw new Error(`isMetaStep: 'step' must be an integer ≥ 0, got ${step}`);
  if (!Number.isInteger(metaEvery) || metaEvery < 1) throw new Error(`isMetaStep: 'metaEvery' must be an integer ≥ 1, got ${metaEvery}`);
  return step % metaEvery === 0;
}

// ---------------------------------------------------------------------------------------
// Shared machinery (also used by l2rw.ts).

/** Everything the virtual step needs. */
export interface VirtualContext<B> {
  model: MetaModel<B>;
  params: Params;
  trainBatch: B;
  metaBatch: B;
  alpha: number;
  /** Parameters that take the virtual step. */
  names: readonly string[];
  /** Detached train features (scope `heads` without a recorded train forward). */
  trainFeatures?: readonly tf.Tensor[];
  /** Detached meta features (scope `heads`): the meta loss then runs the heads only. */
  metaFeatures?: readonly tf.Tensor[];
}

function withValues(params: Params, names: readonly string[], values: readonly tf.Tensor[]): Params {
  const out: Params = { ...params };
  names.forEach((n, i) => { out[n] = values[i]; });
  return out;
}

/** tfjs's "Cannot compute gradient" names no parameter; say which requirement was broken. */
function explainGradError(e: unknown, where: string): never {
  if (e instanceof Error && e.message.startsWith('Cannot compute gradient')) {
    throw new Error(`${where}: the loss does not depend on every entry of 'params'; pass only the parameters the model uses`);
  }
  throw e;
}

function checkPerSample(losses: unknown, fn: string, n: number): tf.Tensor {
  if (!(losses instanceof tf.Tensor) || losses.rank !== 1 || losses.shape[0] !== n) {
    const got = losses instanceof tf.Tensor ? `[${losses.shape}]` : typeof losses;
    throw new Error(`${fn}: the model's per-sample loss must have shape [${n}] (batchSize of the batch), got ${got}`);
  }
  return losses;
}

function lossOf<B>(model: MetaModel<B>, params: Params, batch: B, features: readonly tf.Tensor[] | undefined, fn: string): tf.Tensor {
  const losses = features ? model.headPerSampleLoss!(params, features, batch) : model.perSampleLoss(params, batch);
  return checkPerSample(losses, fn, model.batchSize(batch));
}

/**
 * L_meta(θ′) with θ′ = θ − α ∇θ Σ wᵢℓᵢ(θ) over `ctx.names` and w = weightsOf(ℓ(θ) detached),
 * as a scalar that stays differentiable in whatever `weightsOf` depends on (φ, or L2RW's ε).
 * `recordedTrainLosses`: ℓ(θ) of the train batch already on an enclosing gradient tape (the
 * actual step's forward), differentiated instead of running the train forward again.
 */
export function virtualMetaLoss<B>(
  ctx: VirtualContext<B>, weightsOf: (lossesDetached: tf.Tensor) => tf.Tensor, recordedTrainLosses?: tf.Tensor,
): tf.Scalar {
  const { model, params, names, alpha } = ctx;
  const fn = 'virtual step';
  const inner = tf.grads((...theta: tf.Tensor[]) => {
    const losses = recordedTrainLosses ?? lossOf(model, withValues(params, names, theta), ctx.trainBatch, ctx.trainFeatures, fn);
    return tf.sum(tf.mul(weightsOf(stopGradient(losses)), losses)) as tf.Scalar;
  });
  let g: tf.Tensor[];
  try {
    g = inner(names.map((n) => params[n]));
  } catch (e) {
    explainGradError(e, fn);
  }
  const primed = withValues(params, names, names.map((n, i) => tf.sub(params[n], tf.mul(g[i], alpha))));
  return tf.mean(lossOf(model, primed, ctx.metaBatch, ctx.metaFeatures, 'meta loss')) as tf.Scalar;
}

/**
 * A step's results before they are read: the weights, per-sample losses and scalars still as
 * tensors (kept out of every tidy scope), so that the caller reads them once, asynchronously
 * (`readStep`).
 */
export interface DeviceStepResult {
  weights: tf.Tensor;
  losses: tf.Tensor;
  grads: Record<string, tf.Tensor>;
  loss: tf.Tensor;
  metaLoss: tf.Tensor | null;
}

/** The scalars and vectors of `r` read asynchronously, the tensors disposed (grads stay). */
export async function readStep(r: DeviceStepResult): Promise<WeightedStepResult> {
  try {
    const [weights, losses, loss, metaLoss] = await Promise.all([r.weights.data(), r.losses.data(), r.loss.data(), r.metaLoss?.data()]);
    return {
      weights: Float32Array.from(weights),
      losses: Float32Array.from(losses),
      grads: r.grads,
      loss: loss[0],
      metaLoss: metaLoss ? metaLoss[0] : null,
    };
  } finally {
    disposeRead(r);
  }
}

function disposeRead(r: DeviceStepResult): void {
  tf.dispose([r.weights, r.losses, r.loss]);
  if (r.metaLoss) r.metaLoss.dispose();
}

/**
 * ∇θ Σ wᵢℓᵢ(θ) over every entry of `params`, with w = weightsOf(ℓ detached, ℓ as recorded),
 * unread: `metaLoss` is null, the rest kept tensors for `readStep`. `weightsOf` runs inside
 * this step's forward, so it may run a meta update that reuses the recorded ℓ (see
 * `virtualMetaLoss`); the weights it returns must not depend on θ.
 */
export function weightedGradsOnDevice<B>(
  model: MetaModel<B>, params: Params, batch: B,
  weightsOf: (lossesDetached: tf.Tensor, recordedLosses: tf.Tensor) => tf.Tensor,
): DeviceStepResult {
  const names = Object.keys(params);
  let weights: tf.Tensor | undefined;
  let losses: tf.Tensor | undefined;
  const valueAndGrads = tf.valueAndGrads((...theta: tf.Tensor[]) => {
    const perSample = lossOf(model, withValues(params, names, theta), batch, undefined, 'actual step');
    const w = weightsOf(stopGradient(perSample), perSample);
    if (!(w instanceof tf.Tensor) || w.rank !== 1 || w.shape[0] !== perSample.shape[0]) {
      throw new Error(`actual step: the weights must have shape [${perSample.shape[0]}], got ${w instanceof tf.Tensor ? `[${w.shape}]` : typeof w}`);
    }
    // Kept past the forward's tidy scope, to be read after the backward.
    weights = tf.keep(w);
    losses = tf.keep(perSample);
    return tf.sum(tf.mul(w, perSample)) as tf.Scalar;
  });
  let value: tf.Scalar;
  let grads: tf.Tensor[];
  try {
    ({ value, grads } = valueAndGrads(names.map((n) => params[n])));
  } catch (e) {
    tf.dispose([weights, losses].filter((t): t is tf.Tensor => t !== undefined));
    explainGradError(e, 'actual step');
  }
  const out: Record<string, tf.Tensor> = {};
  names.forEach((n, i) => { out[n] = grads[i]; });
  return { weights: weights!, losses: losses!, grads: out, loss: value, metaLoss: null };
}

/** Argument checks shared by the steps; returns the names that take the virtual step. */
export function checkStepArgs<B>(fn: string, model: MetaModel<B>, params: unknown, alpha: unknown, scope: unknown): string[] {
  if (!model || typeof model.perSampleLoss !== 'function' || typeof model.batchSize !== 'function' || !Array.isArray(model.headNames)) {
    throw new Error(`${fn}: 'model' must be a MetaModel ({ perSampleLoss, batchSize, headNames, features?, headPerSampleLoss? })`);
  }
  if (params === null || typeof params !== 'object' || Object.keys(params).length === 0) {
    throw new Error(`${fn}: 'params' must be a non-empty Record<string, tf.Variable>`);
  }
  for (const [name, p] of Object.entries(params as Record<string, unknown>)) {
    if (!(p instanceof tf.Variable)) throw new Error(`${fn}: params['${name}'] must be a tf.Variable (the optimizer updates it)`);
  }
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) {
    throw new Error(`${fn}: 'alpha' (virtual learning rate) must be a finite number > 0, got ${String(alpha)}`);
  }
  if (scope !== 'all' && scope !== 'heads') throw new Error(`${fn}: 'metaScope' must be 'all' or 'heads', got ${String(scope)}`);
  const all = Object.keys(params);
  if (scope === 'all') return all;
  if (typeof model.features !== 'function' || typeof model.headPerSampleLoss !== 'function') {
    throw new Error(`${fn}: metaScope 'heads' needs model.features and model.headPerSampleLoss`);
  }
  if (model.headNames.length === 0) throw new Error(`${fn}: metaScope 'heads' needs a non-empty model.headNames`);
  const missing = model.headNames.filter((n) => !all.includes(n));
  if (missing.length) throw new Error(`${fn}: model.headNames ${missing.map((n) => `'${n}'`).join(', ')} not in 'params'`);
  return [...model.headNames];
}

/** Features of a batch computed off any tape (detached), for scope `heads`. */
export function detachedFeatures<B>(model: MetaModel<B>, params: Params, batch: B): tf.Tensor[] {
  return tf.tidy(() => model.features!(params, batch));
}

// ---------------------------------------------------------------------------------------
// Meta-Weight-Net.

export interface MetaGradientOptions<B> {
  model: MetaModel<B>;
  params: Record<string, tf.Variable>;
  trainBatch: B;
  metaBatch: B;
  weightNet: WeightNet;
  /** Virtual learning rate α of step 1. */
  alpha: number;
  /** Default 'sum'. */
  normalize?: WeightNormalization;
  /** Default 'all'. */
  metaScope?: MetaScope;
  /**
   * The train batch's non-loss inputs of `weightNet` [B, k] (`weightingInputs`), detached; needed
   * when the net sees more than the loss. The step puts ℓ (detached) in the `loss` column.
   */
  sampleInputs?: tf.Tensor;
}

function checkNetArgs(fn: string, weightNet: unknown, normalize: unknown, sampleInputs: unknown): void {
  if (!(weightNet instanceof WeightNet)) throw new Error(`${fn}: 'weightNet' must be a WeightNet`);
  if (normalize !== 'sum' && normalize !== 'none') throw new Error(`${fn}: 'normalize' must be 'sum' or 'none', got ${String(normalize)}`);
  const k = weightNet.inputs.filter((x) => x !== 'loss').length;
  if (k === 0 && sampleInputs !== undefined) throw new Error(`${fn}: the weight net sees only the loss; pass no 'sampleInputs'`);
  if (k > 0 && (!(sampleInputs instanceof tf.Tensor) || sampleInputs.rank !== 2 || sampleInputs.shape[1] !== k)) {
    const got = sampleInputs instanceof tf.Tensor ? `[${sampleInputs.shape}]` : String(sampleInputs);
    throw new Error(`${fn}: the weight net sees ${weightNet.inputs.join(', ')}: 'sampleInputs' must be a tensor [B, ${k}] (weightingInputs), got ${got}`);
  }
}

/** ∇φ L_meta and L_meta(θ′) as a kept scalar tensor (it may be created inside the actual step's forward). */
function hypergradient<B>(
  ctx: VirtualContext<B>, net: WeightNet, normalize: WeightNormalization, sampleInputs: tf.Tensor | undefined, recordedTrainLosses?: tf.Tensor,
): { grads: Record<string, tf.Tensor>; metaLoss: tf.Tensor } {
  const names = WEIGHT_NET_PARAM_NAMES;
  const { value, grads } = tf.valueAndGrads((...phi: tf.Tensor[]) => virtualMetaLoss(ctx, (lossesDetached) => {
    const p: Params = {};
    names.forEach((n, i) => { p[n] = phi[i]; });
    return normalizeWeights(net.forward(net.inputMatrix(lossesDetached, sampleInputs), p), normalize);
  }, recordedTrainLosses))(names.map((n) => net.params[n]));
  const out: Record<string, tf.Tensor> = {};
  names.forEach((n, i) => { out[n] = grads[i]; });
  return { grads: out, metaLoss: tf.keep(value) };
}

async function readHypergradient(h: { grads: Record<string, tf.Tensor>; metaLoss: tf.Tensor }): Promise<{ grads: Record<string, tf.Tensor>; metaLoss: number }> {
  try {
    return { grads: h.grads, metaLoss: (await h.metaLoss.data())[0] };
  } finally {
    h.metaLoss.dispose();
  }
}

/**
 * The hypergradient ∇φ L_meta(θ′(φ)) of steps 1–2, without changing anything (for checks and
 * diagnostics; `mwnStep` uses the same computation).
 *
 * @returns grads keyed like `weightNet.params` (the caller disposes them) and L_meta(θ′)
 * @example const { grads, metaLoss } = await metaGradient({ model, params, trainBatch, metaBatch, weightNet, alpha: 0.1 });
 */
export async function metaGradient<B>(opts: MetaGradientOptions<B>): Promise<{ grads: Record<string, tf.Tensor>; metaLoss: number }> {
  const { model, params, trainBatch, metaBatch, weightNet, alpha, normalize = 'sum', metaScope = 'all', sampleInputs } = opts ?? ({} as MetaGradientOptions<B>);
  const names = checkStepArgs('metaGradient', model, params, alpha, metaScope);
  checkNetArgs('metaGradient', weightNet, normalize, sampleInputs);
  if (metaScope === 'all') return readHypergradient(hypergradient({ model, params, trainBatch, metaBatch, alpha, names }, weightNet, normalize, sampleInputs));
  const trainFeatures = detachedFeatures(model, params, trainBatch);
  const metaFeatures = detachedFeatures(model, params, metaBatch);
  let h: ReturnType<typeof hypergradient>;
  try {
    h = hypergradient({ model, params, trainBatch, metaBatch, alpha, names, trainFeatures, metaFeatures }, weightNet, normalize, sampleInputs);
  } finally {
    tf.dispose([...trainFeatures, ...metaFeatures]);
  }
  return readHypergradient(h);
}

export interface MwnStepOptions<B> extends Omit<MetaGradientOptions<B>, 'metaBatch'> {
  /** Required on steps that update φ (see `isMetaStep`); ignored on the others. */
  metaBatch?: B;
  /** The trainer's global step (0-based). Default 0. */
  step?: number;
  /** Update φ on every k-th step only; the other steps weight with the current net. Default 1. */
  metaEvery?: number;
}

/**
 * One Meta-Weight-Net training step: virtual step, φ update (on meta steps), and the weighted
 * gradients of the actual step. φ is updated in place through `weightNet.step`; θ is not
 * touched — apply `grads` with the model's optimizer (after clipping etc.) and dispose them.
 * Its weights, losses and scalars are read once, asynchronously, after the step.
 *
 * @example
 * const r = await mwnStep({ model, params, trainBatch, metaBatch, weightNet, alpha: 1e-2, normalize: 'sum', metaScope: 'heads' });
 * optimizer.step(r.grads, lr); tf.dispose(Object.values(r.grads));
 */
export async function mwnStep<B>(opts: MwnStepOptions<B>): Promise<MwnStepResult> {
  const { result, metaUpdated } = mwnStepOnDevice(opts, 'mwnStep');
  return { ...(await readStep(result)), metaUpdated };
}

function mwnStepOnDevice<B>(opts: MwnStepOptions<B>, fn: string): { result: DeviceStepResult; metaUpdated: boolean } {
  const {
    model, params, trainBatch, metaBatch, weightNet, alpha, normalize = 'sum', metaScope = 'all', step = 0, metaEvery = 1, sampleInputs,
  } = opts ?? ({} as MwnStepOptions<B>);
  const names = checkStepArgs(fn, model, params, alpha, metaScope);
  checkNetArgs(fn, weightNet, normalize, sampleInputs);
  const doMeta = isMetaStep(step, metaEvery);
  if (doMeta && metaBatch === undefined) throw new Error(`${fn}: step ${step} updates the weight net (metaEvery ${metaEvery}) but no 'metaBatch' was given`);

  const metaFeatures = doMeta && metaScope === 'heads' ? detachedFeatures(model, params, metaBatch as B) : undefined;
  let metaLoss: tf.Tensor | null = null;
  const update = (recordedLosses?: tf.Tensor) => {
    const h = hypergradient({ model, params, trainBatch, metaBatch: metaBatch as B, alpha, names, metaFeatures }, weightNet, normalize, sampleInputs, recordedLosses);
    metaLoss = h.metaLoss;
    weightNet.step(h.grads);
    tf.dispose(Object.values(h.grads));
  };
  try {
    if (doMeta && metaScope === 'all') update();
    const r = weightedGradsOnDevice(model, params, trainBatch, (lossesDetached, recordedLosses) => {
      if (doMeta && metaScope === 'heads') update(recordedLosses);
      return normalizeWeights(weightNet.forward(weightNet.inputMatrix(lossesDetached, sampleInputs)), normalize);
    });
    return { result: { ...r, metaLoss }, metaUpdated: doMeta };
  } catch (e) {
    if (metaLoss) (metaLoss as tf.Tensor).dispose();
    throw e;
  } finally {
    if (metaFeatures) tf.dispose(metaFeatures);
  }
}
