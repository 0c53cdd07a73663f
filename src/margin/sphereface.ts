/**
 * SphereFace / A-softmax (Liu et al. 2017): multiplicative angular margin on the target with
 * the monotonic extension ψ(θ) = (−1)^k cos(mθ) − 2k on [kπ/m, (k+1)π/m], unnormalised
 * features (logits scale with ‖x‖), and the annealed target (λ‖x‖cos θ + ‖x‖ψ(θ))/(1 + λ).
 */
import { tf } from '../backend/tf.js';
import { applyMargin, checkCosineAndLabels, checkNumber, checkRowScale, piecewiseConstant, type MarginSpec, type RowScale } from './core.js';

type T = tf.Tensor;

export interface SphereFaceOptions {
  /** ‖x‖ per row [B] (or one number): A-softmax logits are ‖x‖·cos θ_j. */
  featureNorm: RowScale;
  /** Integer multiplicative margin m (paper: 4). */
  m?: number;
  /** Annealing weight λ ≥ 0 (0 = the full margin); see {@link sphereFaceLambda}. */
  lambda?: number;
  detachMargin?: boolean;
}

/** ψ(θ) with the piece index k = ⌊mθ/π⌋ ∈ [0, m−1], blended with cos θ by λ. */
export function sphereFaceMargin(m: number, lambda: number): MarginSpec {
  return {
    target: (cos, theta) => {
      const mt = tf.mul(theta(), m);
      const k = piecewiseConstant([mt], (x) => tf.minimum(tf.floor(tf.div(x, Math.PI)), m - 1));
      const sign = piecewiseConstant([k], (x) => tf.sub(1, tf.mul(2, tf.mod(x, 2))));
      const psi = tf.sub(tf.mul(sign, tf.cos(mt)), tf.mul(k, 2));
      return lambda === 0 ? psi : tf.div(tf.add(tf.mul(cos, lambda), psi), 1 + lambda);
    },
  };
}

/**
 * The annealing schedule λ = max(λmin, base·(1 + γ·iteration)^−power) of the SphereFace code.
 *
 * @example sphereFaceLambda(0) // 1000; sphereFaceLambda(1e6) // 5
 */
export function sphereFaceLambda(iteration: number, { base = 1000, gamma = 0.12, power = 1, lambdaMin = 5 } = {}): number {
  checkNumber(iteration, 'sphereFaceLambda', 'iteration', 0);
  return Math.max(lambdaMin, base * Math.pow(1 + gamma * iteration, -power));
}

/**
 * A-softmax logits from cosines [B,C] (cos θ_j = x̂·Ŵ_j): target ‖x‖(λ cos θ_y + ψ(θ_y))/(1+λ),
 * others ‖x‖ cos θ_j.
 *
 * @example
 * const logits = sphereFaceLogits(cosine, labels, { featureNorm: xNorm, m: 4, lambda: sphereFaceLambda(step) });
 */
export function sphereFaceLogits(cosine: T, labels: T, opts: SphereFaceOptions): T {
  const fn = 'sphereFaceLogits';
  checkCosineAndLabels(cosine, labels, fn);
  const { m = 4, lambda = 0, detachMargin = false } = opts;
  checkRowScale(opts.featureNorm, fn, 'featureNorm', cosine.shape[0]);
  if (!Number.isInteger(m) || m < 1) throw new Error(`${fn}: 'm' must be a positive integer, got ${m}`);
  checkNumber(lambda, fn, 'lambda', 0);
  return tf.tidy(() => applyMargin(cosine, labels, sphereFaceMargin(m, lambda), { scale: opts.featureNorm, detachMargin }).logits);
}
