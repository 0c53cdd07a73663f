/**
 * SphereFace2 (Wen et al. 2022) as OpenSphere releases it: C one-vs-all binary problems
 * instead of one softmax, with the similarity adjustment g(z) = 2((z+1)/2)^t − 1, scale r, a
 * learnable bias b and one of three margins,
 *
 *   C (additive cosine):  pos g(cos θ_y) − m,                 neg g(cos θ_j) + m
 *   A (additive angular): pos g(cos(min(θ_y + m, π))),         neg g(cos θ_j)
 *   M (multiplicative):   pos g(cos(min(m·θ_y, π))),           neg g(cos θ_j)
 *
 *   ℓ = lw/r·[λ·softplus(−(r·pos + b)) + (1−λ)·Σ_{j≠y} softplus(r·neg_j + b)].
 *
 * The release multiplies by lw = 50 and computes the adjustment and margin without gradient
 * (the forward has g and m, the backward is that of r·cos θ + b); both are the defaults here,
 * and `lw: 1, detachMargin: false` give the paper's equation 5 with a live gradient.
 */
import { tf } from '../backend/tf.js';
import { powInt, softplus } from '../backend/safeOps.js';
import { angleOf, checkCosineAndLabels, checkNumber, checkRowScale, checkWeights, marginTerm, oneHotFloat, reduceLoss, type RowScale } from './core.js';

type T = tf.Tensor;

export type SphereFace2Variant = 'C' | 'A' | 'M';

export interface SphereFace2Options {
  /** Weight λ ∈ (0, 1) of the positive term (paper: 0.7). */
  lambda?: number;
  /** Scale r (paper: 40). */
  r?: number;
  /** The margin m (release: 0.4 for every variant). */
  m?: number;
  /** Integer exponent t ≥ 1 of the similarity adjustment (paper: 3). */
  t?: number;
  /** Margin type: C additive cosine (default), A additive angular, M multiplicative angular. */
  variant?: SphereFace2Variant;
  /** Loss weight (release: 50). */
  lw?: number;
}

export interface SphereFace2LossOptions extends SphereFace2Options {
  /** The bias b (number or learnable scalar tensor); default {@link sphereFace2InitBias}. */
  bias?: RowScale;
  /** Forward with g and m, backward as if z = r·cos θ + b (release: on, the default). */
  detachMargin?: boolean;
  /** Per-sample weights [B]: loss = Σ wᵢℓᵢ. */
  weights?: T;
}

/** Fills in the release's defaults and checks them. */
export function sphereFace2Settings(opts: SphereFace2Options, fn: string): Required<SphereFace2Options> {
  const { lambda = 0.7, r = 40, m = 0.4, t = 3, variant = 'C', lw = 50 } = opts;
  checkNumber(lambda, fn, 'lambda', 0, 1);
  if (lambda === 0 || lambda === 1) throw new Error(`${fn}: 'lambda' must be strictly between 0 and 1, got ${lambda}`);
  checkNumber(r, fn, 'r', Number.MIN_VALUE);
  checkNumber(m, fn, 'm');
  checkNumber(lw, fn, 'lw', 0);
  if (!Number.isInteger(t) || t < 1 || t > 16) throw new Error(`${fn}: 't' must be an integer in [1, 16], got ${t}`);
  if (variant !== 'C' && variant !== 'A' && variant !== 'M') throw new Error(`${fn}: 'variant' must be 'C', 'A' or 'M', got ${String(variant)}`);
  if (variant === 'M' && !(m > 0)) throw new Error(`${fn}: 'm' must be positive for the multiplicative variant, got ${m}`);
  return { lambda, r, m, t, variant, lw };
}

/** g(z) = 2((z+1)/2)^t − 1 on numbers. */
function gNumber(z: number, t: number): number {
  return 2 * ((z + 1) / 2) ** t - 1;
}

/**
 * The bias b at which the initial loss has zero gradient in b, assuming every cosine is 0 at
 * initialisation (random high-dimensional features, θ = π/2). With a_p and a_n the positive and
 * negative logits there before b (C: r(g(0) ∓ m); A: r·g(cos(min(π, π/2 + m))) and r·g(0);
 * M: r·g(cos(min(π, m·π/2))) and r·g(0)) and K = (1 − λ)(C − 1),
 *
 *   ∂ℓ/∂b ∝ −λ·σ(−(a_p + b)) + K·σ(a_n + b) = 0,
 *
 * i.e. the positive term's pull on b balances the C − 1 negatives' push. With w = e^(a_n + b)
 * and q = e^(a_p − a_n) this is the quadratic Kq·w² + (K − λ)·w − λ = 0, whose positive root
 * gives b = ln w − a_n: the release's closed form b = ln(2z) − a_n − ln(1 − z + √((1 − z)² + 4zq))
 * with z = λ/K, written without its cancellation for large C.
 *
 * @example sphereFace2InitBias(10000) // ≈ 5.64 for λ = 0.7, r = 40, m = 0.4, t = 3, variant C
 */
export function sphereFace2InitBias(numClasses: number, opts: SphereFace2Options = {}): number {
  const fn = 'sphereFace2InitBias';
  if (!Number.isInteger(numClasses) || numClasses < 2) throw new Error(`${fn}: 'numClasses' must be an integer ≥ 2, got ${numClasses}`);
  const { lambda, r, m, t, variant } = sphereFace2Settings(opts, fn);
  const g0 = gNumber(0, t);
  let ap: number;
  let an: number;
  if (variant === 'C') {
    ap = r * (g0 - m);
    an = r * (g0 + m);
  } else {
    const thetaY = Math.min(Math.PI, variant === 'A' ? Math.PI / 2 + m : (m * Math.PI) / 2);
    ap = r * gNumber(Math.cos(thetaY), t);
    an = r * g0;
  }
  const K = (1 - lambda) * (numClasses - 1);
  const q = Math.exp(ap - an);
  const lin = K - lambda;
  const root = Math.sqrt(lin * lin + 4 * K * q * lambda);
  // The two algebraically equal forms of the positive root; pick the one without cancellation.
  const w = lin >= 0 ? (2 * lambda) / (lin + root) : (root - lin) / (2 * K * q);
  return Math.log(w) - an;
}

/** Per-sample loss on checked inputs (the head calls this after its own checks). */
export function sphereFace2PerSample(cosine: T, labels: T, o: Required<SphereFace2Options>, bias: RowScale, detachMargin = true): T {
  const { lambda, r, m, t, variant, lw } = o;
  return tf.tidy(() => {
    const b = typeof bias === 'number' ? tf.scalar(bias) : tf.reshape(bias, []);
    const g = (c: T): T => tf.sub(tf.mul(powInt(tf.mul(tf.add(c, 1), 0.5), t), 2), 1);
    const negAdj = (c: T): T => (variant === 'C' ? tf.add(g(c), m) : g(c));
    const posAdj = (c: T): T => {
      if (variant === 'C') return tf.sub(g(c), m);
      const theta = angleOf(c);
      return g(tf.cos(tf.minimum(variant === 'A' ? tf.add(theta, m) : tf.mul(theta, m), Math.PI)));
    };
    // r·adj(c) + b, or r·(c + Δ) + b with Δ = adj(c) − c computed off the tape.
    const z = (c: T, adj: (x: T) => T): T => {
      const inner = detachMargin ? tf.add(c, marginTerm(c, adj, true)) : adj(c);
      return tf.add(tf.mul(inner, r), b);
    };
    // Every class first as a negative (one C-wide g and softplus), then the target swapped
    // from its negative to its positive term on [B] only.
    const oneHot = oneHotFloat(labels, cosine.shape[1] as number);
    const cosY = tf.sum(tf.mul(cosine, oneHot), 1);
    const allNeg = tf.sum(softplus(z(cosine, negAdj)), 1);
    const negs = tf.sub(allNeg, softplus(z(cosY, negAdj)));
    const pos = softplus(tf.neg(z(cosY, posAdj)));
    return tf.add(tf.mul(pos, (lw * lambda) / r), tf.mul(negs, (lw * (1 - lambda)) / r));
  });
}

/**
 * SphereFace2 loss from cosines [B,C] and labels [B], the release's defaults (variant C,
 * lw = 50, margin detached).
 *
 * @example
 * const b = tf.variable(tf.scalar(sphereFace2InitBias(C)));
 * const { loss, perSample } = sphereFace2Loss(cosine, labels, { bias: b });
 * sphereFace2Loss(cosine, labels, { variant: 'A', m: 0.3, bias: b });  // additive angular
 */
export function sphereFace2Loss(cosine: T, labels: T, opts: SphereFace2LossOptions = {}): { loss: T; perSample: T } {
  const fn = 'sphereFace2Loss';
  checkCosineAndLabels(cosine, labels, fn);
  const o = sphereFace2Settings(opts, fn);
  const bias = opts.bias ?? sphereFace2InitBias(cosine.shape[1], opts);
  checkRowScale(bias, fn, 'bias');
  checkWeights(opts.weights, fn, cosine.shape[0]);
  return tf.tidy(() => {
    const perSample = sphereFace2PerSample(cosine, labels, o, bias, opts.detachMargin ?? true);
    return { loss: reduceLoss(perSample, opts.weights), perSample };
  });
}
