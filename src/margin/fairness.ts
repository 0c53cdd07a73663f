/**
 * Angular margins and flip probabilities of a binary linear classifier under output
 * perturbation (differential privacy and fairness, 2023): the angular margin of (x, y) is
 * α = y⟨w, x⟩/‖x‖, and with Gaussian noise N(0, σ²I) added to w its prediction flips with
 * probability Φ(−|α|/σ).
 */
import { tf } from '../backend/tf.js';
import { checkMatrix, checkNumber, checkTensor, checkVector, rowNorm } from './core.js';

type T = tf.Tensor;

/**
 * α_i = y_i⟨w, x_i⟩/‖x_i‖.
 *
 * @param w [d] weights; X [N,d] examples; y [N] labels in {−1, +1}
 * @example angularMargins(tf.tensor1d([1, 0]), tf.tensor2d([[3, 4]]), tf.tensor1d([-1])) // [−0.6]
 */
export function angularMargins(w: T, X: T, y: T): T {
  const fn = 'angularMargins';
  checkMatrix(X, fn, 'X');
  checkVector(w, fn, 'w', X.shape[1]);
  checkTensor(y, fn, 'y');
  if (y.rank !== 1 || y.shape[0] !== X.shape[0]) throw new Error(`${fn}: 'y' must have shape [${X.shape[0]}], got [${y.shape}]`);
  return tf.tidy(() => {
    const scores = tf.reshape(tf.matMul(X, tf.reshape(w, [-1, 1])), [-1]);
    return tf.div(tf.mul(tf.cast(y, 'float32'), scores), rowNorm(X));
  });
}

/**
 * erfc(x) for x ≥ 0 by the Chebyshev-fitted exponential of Numerical Recipes (§6.2, erfcc):
 * relative error below 1.2e-7 everywhere, so Φ keeps its precision far in the tail where
 * 1 − erf would cancel to 0.
 */
function erfcNonNegative(x: number): number {
  const t = 1 / (1 + 0.5 * x);
  const poly = -x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
    t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return t * Math.exp(poly);
}

/** Φ(−|α|/σ) = ½·erfc(|α|/(σ√2)). */
function flipOne(alpha: number, sigma: number): number {
  return 0.5 * erfcNonNegative(Math.abs(alpha) / (sigma * Math.SQRT2));
}

/**
 * Probability Φ(−|α|/σ) that Gaussian noise of standard deviation σ on w flips a prediction
 * with angular margin α. Numbers give a number; a tensor is read asynchronously and gives a
 * float32 tensor of the same shape (computed on the host in float64).
 *
 * @example flipProbability(1, 1) // 0.158655…
 * @example const p = await flipProbability(alphas, 0.1);
 */
export function flipProbability(alpha: number, sigma: number): number;
export function flipProbability(alpha: T, sigma: number): Promise<T>;
export function flipProbability(alpha: number | T, sigma: number): number | Promise<T> {
  const fn = 'flipProbability';
  if (typeof alpha !== 'number') return flipTensor(alpha, sigma, fn);
  checkNumber(sigma, fn, 'sigma', Number.MIN_VALUE);
  checkNumber(alpha, fn, 'alpha');
  return flipOne(alpha, sigma);
}

async function flipTensor(alpha: T, sigma: number, fn: string): Promise<T> {
  checkNumber(sigma, fn, 'sigma', Number.MIN_VALUE);
  checkTensor(alpha, fn, 'alpha');
  const v = await alpha.data();
  const shape = alpha.shape;
  for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) throw new Error(`${fn}: 'alpha' must be finite, found ${v[i]} at flat index ${i}`);
  return tf.tensor(Float32Array.from(v, (a) => flipOne(a, sigma)), shape, 'float32');
}

/** Φ(x), the standard normal CDF, from the same erfc (accurate in both tails). */
export function normalCdf(x: number): number {
  const e = erfcNonNegative(Math.abs(x) / Math.SQRT2);
  return x >= 0 ? 1 - 0.5 * e : 0.5 * e;
}

export type GaussianMechanism = 'classic' | 'analytic';

/**
 * σ of the Gaussian mechanism that makes releasing w + N(0, σ²I) (ε, δ)-differentially private
 * for a query of L2 sensitivity Δ:
 *
 *   classic (Dwork & Roth, Thm A.1; needs ε < 1):  σ = Δ·√(2·ln(1.25/δ))/ε
 *   analytic (Balle & Wang 2018; any ε > 0): the smallest σ with
 *     Φ(Δ/(2σ) − εσ/Δ) − e^ε·Φ(−Δ/(2σ) − εσ/Δ) ≤ δ, found by bisection.
 *
 * @example gaussianMechanismSigma(0.5, 1e-5, 1) // 9.6896… (classic)
 */
export function gaussianMechanismSigma(epsilon: number, delta: number, sensitivity: number, mechanism: GaussianMechanism = 'classic'): number {
  const fn = 'gaussianMechanismSigma';
  checkNumber(epsilon, fn, 'epsilon', Number.MIN_VALUE);
  checkNumber(delta, fn, 'delta', Number.MIN_VALUE, 1);
  if (delta >= 1) throw new Error(`${fn}: 'delta' must be below 1, got ${delta}`);
  checkNumber(sensitivity, fn, 'sensitivity', Number.MIN_VALUE);
  if (mechanism === 'classic') {
    if (epsilon >= 1) throw new Error(`${fn}: the classic Gaussian mechanism's bound holds for epsilon < 1, got ${epsilon}; use the 'analytic' mechanism`);
    return (sensitivity * Math.sqrt(2 * Math.log(1.25 / delta))) / epsilon;
  }
  if (mechanism !== 'analytic') throw new Error(`${fn}: 'mechanism' must be 'classic' or 'analytic', got ${String(mechanism)}`);
  const deltaOf = (sigma: number): number => {
    const a = sensitivity / (2 * sigma);
    const b = (epsilon * sigma) / sensitivity;
    return normalCdf(a - b) - Math.exp(epsilon) * normalCdf(-a - b);
  };
  // δ(σ) falls from 1 − e^ε·0 towards 0 as σ grows: bisect on log σ.
  let lo = Math.log(sensitivity * 1e-6);
  let hi = Math.log(sensitivity * 1e6);
  if (deltaOf(Math.exp(hi)) > delta) throw new Error(`${fn}: no σ below ${sensitivity * 1e6} reaches delta ${delta}`);
  for (let k = 0; k < 200; k++) {
    const mid = (lo + hi) / 2;
    if (deltaOf(Math.exp(mid)) > delta) lo = mid; else hi = mid;
  }
  return Math.exp(hi);
}

/**
 * The largest difference between groups' expected flip rates (max − min), with the groups
 * that attain it.
 *
 * @example flipRateGap([{ group: 'head', expectedFlipRate: 0.1 }, { group: 'tail', expectedFlipRate: 0.3 }]) // { gap: 0.2, … }
 */
export function flipRateGap(groups: readonly { group: string; expectedFlipRate: number }[]): { gap: number; highest: string; lowest: string } {
  if (groups.length === 0) throw new Error('flipRateGap: no groups');
  let hi = groups[0];
  let lo = groups[0];
  for (const g of groups) {
    if (g.expectedFlipRate > hi.expectedFlipRate) hi = g;
    if (g.expectedFlipRate < lo.expectedFlipRate) lo = g;
  }
  return { gap: hi.expectedFlipRate - lo.expectedFlipRate, highest: hi.group, lowest: lo.group };
}
