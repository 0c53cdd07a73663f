/**
 * Learning to Reweight (Ren et al., ICML 2018): per-step sample weights from one look-ahead
 * step, with no weighting network. With per-sample perturbations ε (at ε = 0)
 *
 *   θ′(ε) = θ − α ∇θ Σ εᵢ ℓᵢ(θ),   sᵢ = −∂L_meta(θ′(ε))/∂εᵢ |ε=0 = α ⟨∇L_meta(θ), ∇ℓᵢ(θ)⟩,
 *   wᵢ = max(sᵢ, 0) / Σⱼ max(sⱼ, 0)   (uniform 1/B when every sᵢ ≤ 0).
 *
 * A sample is kept in proportion to how much a step on it alone would lower the meta loss.
 * The machinery (virtual step, scopes) is that of metaStep.ts.
 */
import { tf } from '../backend/tf.js';
import {
  checkStepArgs, detachedFeatures, readStep, virtualMetaLoss, weightedGradsOnDevice,
  type MetaModel, type MetaScope, type VirtualContext, type WeightedStepResult,
} from './metaStep.js';

export interface L2rwOptions<B> {
  model: MetaModel<B>;
  params: Record<string, tf.Variable>;
  trainBatch: B;
  metaBatch: B;
  /** Virtual learning rate α (scales the scores; the normalised weights do not depend on it). */
  alpha: number;
  /** Default 'all'. */
  metaScope?: MetaScope;
}

export interface L2rwStepResult extends WeightedStepResult {
  metaLoss: number;
  /** sᵢ = −∂L_meta/∂εᵢ at ε = 0, before clipping and normalising. */
  scores: Float32Array;
}

type DeviceScores = { scores: tf.Tensor; metaLoss: tf.Tensor };
type Scores = { scores: Float32Array; metaLoss: number };

/** sᵢ and L_meta as tensors, unread (the caller reads and disposes them). */
function scoresOnDevice<B>(ctx: VirtualContext<B>): DeviceScores {
  const n = ctx.model.batchSize(ctx.trainBatch);
  if (!Number.isInteger(n) || n < 1) throw new Error(`l2rw: model.batchSize(trainBatch) must be a positive integer, got ${n}`);
  const eps = tf.zeros([n]);
  try {
    const { value, grad } = tf.valueAndGrad((e: tf.Tensor) => virtualMetaLoss(ctx, () => e))(eps);
    const scores = tf.neg(grad);
    grad.dispose();
    return { scores, metaLoss: value };
  } finally {
    eps.dispose();
  }
}

async function readScores(t: DeviceScores): Promise<Scores> {
  try {
    const [scores, metaLoss] = await Promise.all([t.scores.data(), t.metaLoss.data()]);
    return { scores: Float32Array.from(scores), metaLoss: metaLoss[0] };
  } finally {
    tf.dispose([t.scores, t.metaLoss]);
  }
}

/**
 * The normalised L2RW weights from scores: max(s, 0)/Σ max(s, 0), or uniform when no score is
 * positive.
 *
 * @example l2rwWeights([0.3, -0.2, 0.1]) // [0.75, 0, 0.25]
 */
export function l2rwWeights(scores: ArrayLike<number>): Float32Array {
  if (scores === null || typeof scores !== 'object' || typeof scores.length !== 'number' || scores.length === 0) {
    throw new Error('l2rwWeights: \'scores\' must be a non-empty array of numbers');
  }
  const n = scores.length;
  const w = new Float32Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const s = scores[i];
    if (typeof s !== 'number' || Number.isNaN(s)) throw new Error(`l2rwWeights: scores[${i}] is ${String(s)}, expected a number`);
    w[i] = Math.max(s, 0);
    sum += w[i];
  }
  if (!(sum > 0) || !Number.isFinite(sum)) return w.fill(1 / n);
  for (let i = 0; i < n; i++) w[i] /= sum;
  return w;
}

function contextOf<B>(opts: L2rwOptions<B>, fn: string): VirtualContext<B> {
  const { model, params, trainBatch, metaBatch, alpha, metaScope = 'all' } = opts ?? ({} as L2rwOptions<B>);
  const names = checkStepArgs(fn, model, params, alpha, metaScope);
  return { model, params, trainBatch, metaBatch, alpha, names };
}

/**
 * The scores as tensors before any training step: for scope `heads` from train and meta
 * features computed once, detached (no recorded forward to reuse).
 */
function standaloneScores<B>(ctx: VirtualContext<B>, scope: MetaScope | undefined): DeviceScores {
  if ((scope ?? 'all') === 'all') return scoresOnDevice(ctx);
  const trainFeatures = detachedFeatures(ctx.model, ctx.params, ctx.trainBatch);
  const metaFeatures = detachedFeatures(ctx.model, ctx.params, ctx.metaBatch);
  try {
    return scoresOnDevice({ ...ctx, trainFeatures, metaFeatures });
  } finally {
    tf.dispose([...trainFeatures, ...metaFeatures]);
  }
}

/**
 * The L2RW scores sᵢ = −∂L_meta/∂εᵢ at ε = 0 and L_meta(θ), changing nothing.
 *
 * @example const { scores } = await l2rwScores({ model, params, trainBatch, metaBatch, alpha: 1 });
 */
export async function l2rwScores<B>(opts: L2rwOptions<B>): Promise<Scores> {
  return readScores(standaloneScores(contextOf(opts, 'l2rwScores'), opts.metaScope));
}

/**
 * One L2RW training step: scores on the meta batch, weights, and ∇θ Σ wᵢℓᵢ for the caller's
 * optimizer (the caller disposes `grads`). The scores are read before the actual step's
 * forward, so for `metaScope: 'heads'` they come from detached train features (as in
 * `l2rwScores`): one more forward of the train batch through the encoders, off the tape.
 *
 * @example
 * const r = await l2rwStep({ model, params, trainBatch, metaBatch, alpha: 1e-2, metaScope: 'heads' });
 * optimizer.step(r.grads, lr); tf.dispose(Object.values(r.grads));
 */
export async function l2rwStep<B>(opts: L2rwOptions<B>): Promise<L2rwStepResult> {
  const ctx = contextOf(opts, 'l2rwStep');
  const { scores, metaLoss } = await readScores(standaloneScores(ctx, opts.metaScope));
  const weights = l2rwWeights(scores);
  const r = await readStep(weightedGradsOnDevice(ctx.model, ctx.params, ctx.trainBatch, () => tf.tensor1d(weights)));
  return { ...r, metaLoss, scores };
}
