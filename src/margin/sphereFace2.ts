/**
 * SphereFace2 (Wen et al. 2022): C one-vs-all binary problems instead of one softmax, with
 * the similarity adjustment g(z) = 2((z+1)/2)^t − 1, an additive margin m, scale r and a
 * learnable bias b:
 *
 *   ℓ = λ/r·softplus(−(r(g(cos θ_y) − m) + b)) + (1−λ)/r·Σ_{j≠y} softplus(r(g(cos θ_j) + m) + b).
 */
import { tf } from '../backend/tf.js';
import { powInt, softplus } from '../backend/safeOps.js';
import { checkNumber, checkRowScale, checkWeights, marginTerm, oneHotFloat, reduceLoss, type RowScale } from './core.js';
import { checkCosineAndLabels } from './combined.js';

type T = tf.Tensor;

export interface SphereFace2Options {
  /** Weight λ ∈ (0, 1) of the positive term (paper: 0.7). */
  lambda?: number;
  /** Scale r (paper: 40). */
  r?: number;
  /** Additive margin m on the adjusted cosine (paper: 0.4). */
  m?: number;
  /** Integer exponent t ≥ 1 of the similarity adjustment (paper: 3). */
  t?: number;
}

export interface SphereFace2LossOptions extends SphereFace2Options {
  /** The bias b (number or learnable scalar tensor); default {@link sphereFace2InitBias}. */
  bias?: RowScale;
  /** Forward with g and m, backward as if z = r·cos θ + b. */
  detachMargin?: boolean;
  /** Per-sample weights [B]: loss = Σ wᵢℓᵢ. */
  weights?: T;
}

/** Fills in the paper's defaults and checks them. */
export function sphereFace2Settings(opts: SphereFace2Options, fn: string): Required<SphereFace2Options> {
  const { lambda = 0.7, r = 40, m = 0.4, t = 3 } = opts;
  checkNumber(lambda, fn, 'lambda', 0, 1);
  if (lambda === 0 || lambda === 1) throw new Error(`${fn}: 'lambda' must be strictly between 0 and 1, got ${lambda}`);
  checkNumber(r, fn, 'r', Number.MIN_VALUE);
  checkNumber(m, fn, 'm');
  if (!Number.isInteger(t) || t < 1 || t > 16) throw new Error(`${fn}: 't' must be an integer in [1, 16], got ${t}`);
  return { lambda, r, m, t };
}

/**
 * The bias b at which the initial loss has zero gradient in b, assuming every cosine is 0 at
 * initialisation (random high-dimensional features). There g(0) = 2^(1−t) − 1 =: g₀ and, with
 * a_p = r(g₀ − m), a_n = r(g₀ + m), K = (1 − λ)(C − 1):
 *
 *   ∂ℓ/∂b = [−λ·σ(−(a_p + b)) + K·σ(a_n + b)] / r = 0,
 *
 * i.e. the positive term's pull on b balances the C − 1 negatives' push. With w = e^(a_n + b)
 * and q = e^(a_p − a_n) = e^(−2rm) this is λ(1 + w) = K·w(1 + q·w), the quadratic
 * Kq·w² + (K − λ)·w − λ = 0, whose one positive root gives b = ln w − a_n. (The paper sets b
 * so that the initial positive and negative terms balance; this is that condition taken on
 * the gradient, solved exactly rather than with σ linearised.)
 *
 * @example sphereFace2InitBias(10000) // ≈ 5.64 for λ = 0.7, r = 40, m = 0.4, t = 3
 */
export function sphereFace2InitBias(numClasses: number, opts: SphereFace2Options = {}): number {
  const fn = 'sphereFace2InitBias';
  if (!Number.isInteger(numClasses) || numClasses < 2) throw new Error(`${fn}: 'numClasses' must be an integer ≥ 2, got ${numClasses}`);
  const { lambda, r, m, t } = sphereFace2Settings(opts, fn);
  const g0 = Math.pow(2, 1 - t) - 1;
  const an = r * (g0 + m);
  const K = (1 - lambda) * (numClasses - 1);
  const q = Math.exp(-2 * r * m);
  const lin = K - lambda;
  const root = Math.sqrt(lin * lin + 4 * K * q * lambda);
  // The two algebraically equal forms of the positive root; pick the one without cancellation.
  const w = lin >= 0 ? (2 * lambda) / (lin + root) : (root - lin) / (2 * K * q);
  return Math.log(w) - an;
}

/** Per-sample loss on checked inputs (the head calls this after its own checks). */
export function sphereFace2PerSample(cosine: T, labels: T, o: Required<SphereFace2Options>, bias: RowScale, detachMargin = false): T {
  const { lambda, r, m, t } = o;
  return tf.tidy(() => {
    const b = typeof bias === 'number' ? tf.scalar(bias) : tf.reshape(bias, []);
    const g = (c: T): T => tf.sub(tf.mul(powInt(tf.mul(tf.add(c, 1), 0.5), t), 2), 1);
    // r(g(c) ± m) + b, or r·c + b with the adjustment detached.
    const z = (c: T, margin: number): T => {
      const inner = detachMargin ? tf.add(c, marginTerm(c, (x) => tf.add(g(x), margin), true)) : tf.add(g(c), margin);
      return tf.add(tf.mul(inner, r), b);
    };
    // Every class first as a negative (one C-wide g and softplus), then the target swapped
    // from its negative to its positive term on [B] only.
    const oneHot = oneHotFloat(labels, cosine.shape[1] as number);
    const cosY = tf.sum(tf.mul(cosine, oneHot), 1);
    const allNeg = tf.sum(softplus(z(cosine, m)), 1);
    const negs = tf.sub(allNeg, softplus(z(cosY, m)));
    const pos = softplus(tf.neg(z(cosY, -m)));
    return tf.add(tf.mul(pos, lambda / r), tf.mul(negs, (1 - lambda) / r));
  });
}

/**
 * SphereFace2 loss from cosines [B,C] and labels [B].
 *
 * @example
 * const b = tf.variable(tf.scalar(sphereFace2InitBias(C)));
 * const { loss, perSample } = sphereFace2Loss(cosine, labels, { bias: b });
 */
export function sphereFace2Loss(cosine: T, labels: T, opts: SphereFace2LossOptions = {}): { loss: T; perSample: T } {
  const fn = 'sphereFace2Loss';
  checkCosineAndLabels(cosine, labels, fn);
  const o = sphereFace2Settings(opts, fn);
  const bias = opts.bias ?? sphereFace2InitBias(cosine.shape[1], opts);
  checkRowScale(bias, fn, 'bias');
  checkWeights(opts.weights, fn, cosine.shape[0]);
  return tf.tidy(() => {
    const perSample = sphereFace2PerSample(cosine, labels, o, bias, opts.detachMargin);
    return { loss: reduceLoss(perSample, opts.weights), perSample };
  });
}
