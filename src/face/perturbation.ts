/**
 * Fairness under output perturbation for a linear probe on embeddings (docs/DESIGN.md §9): a
 * logistic-regression probe w without bias, scaled to ‖w‖ = 1, so that with noise N(0, σ²I)
 * added to w the score of x̂ = x/‖x‖ moves by N(0, σ²) and the prediction of an example with
 * angular margin α = y⟨w, x⟩/‖x‖ flips with probability Φ(−|α|/σ). Reported per group.
 */
import { tf } from '../backend/tf.js';
import { angularMargins, flipProbability } from '../margin/fairness.js';

/**
 * Full-batch gradient descent on the mean logistic loss log(1 + e^(−y⟨w, x̂⟩)) + ½λ‖w‖²
 * over unit-normalised rows; returns w / ‖w‖.
 *
 * @param X [n·d] row-major; y ±1 per row
 * @example const w = fitLogisticProbe(emb, n, 64, labels);
 */
export function fitLogisticProbe(X: ArrayLike<number>, n: number, d: number, y: ArrayLike<number>, opts: { l2?: number; iterations?: number; lr?: number } = {}): Float64Array {
  if (X.length !== n * d) throw new Error(`fitLogisticProbe: 'X' has ${X.length} values, expected n·d = ${n * d}`);
  if (y.length !== n) throw new Error(`fitLogisticProbe: 'y' has ${y.length} labels, expected ${n}`);
  let pos = 0;
  for (let i = 0; i < n; i++) {
    if (y[i] !== 1 && y[i] !== -1) throw new Error(`fitLogisticProbe: y[${i}] = ${y[i]}; labels must be −1 or +1`);
    if (y[i] === 1) pos++;
  }
  if (pos === 0 || pos === n) throw new Error(`fitLogisticProbe: need both classes, got ${pos} positive of ${n}`);
  const { l2 = 1e-3, iterations = 400, lr = 2 } = opts;
  const xh = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += X[i * d + k] ** 2;
    const inv = 1 / (Math.sqrt(s) || 1);
    for (let k = 0; k < d; k++) xh[i * d + k] = X[i * d + k] * inv;
  }
  const w = new Float64Array(d);
  const g = new Float64Array(d);
  for (let it = 0; it < iterations; it++) {
    g.fill(0);
    for (let i = 0; i < n; i++) {
      let m = 0;
      for (let k = 0; k < d; k++) m += w[k] * xh[i * d + k];
      // d/dm log(1 + e^(−y m)) = −y·σ(−y m)
      const c = -y[i] / (1 + Math.exp(y[i] * m)) / n;
      for (let k = 0; k < d; k++) g[k] += c * xh[i * d + k];
    }
    for (let k = 0; k < d; k++) w[k] -= lr * (g[k] + l2 * w[k]);
  }
  let norm = 0;
  for (let k = 0; k < d; k++) norm += w[k] ** 2;
  norm = Math.sqrt(norm) || 1;
  return w.map((v) => v / norm);
}

export interface GroupPerturbation {
  group: string;
  examples: number;
  /** Fraction with α > 0 (probe correct). */
  accuracy: number;
  meanMargin: number;
  /** Mean of Φ(−|α|/σ): the expected fraction of the group's predictions that flip. */
  expectedFlipRate: number;
}

export interface GroupPerturbationResult { margins: Float32Array; flip: Float32Array; groups: GroupPerturbation[] }

/**
 * Angular margins and expected flip rates per group; `y` holds −1 or +1 per example.
 *
 * @example (await perturbationByGroup(w, X, n, d, y, groups, 0.1)).groups // [{ group: 'tail', expectedFlipRate: … }, …]
 */
export async function perturbationByGroup(
  w: ArrayLike<number>, X: ArrayLike<number>, n: number, d: number, y: ArrayLike<number>, groups: readonly string[], sigma: number,
): Promise<GroupPerturbationResult> {
  checkGroups('perturbationByGroup', groups, n, y);
  const a = tf.tidy(() => marginsOf(w, X, n, d, y));
  let margins: Float32Array;
  let flip: Float32Array;
  try {
    margins = (await a.data()) as Float32Array;
    const f = await flipProbability(a, sigma);
    try {
      flip = (await f.data()) as Float32Array;
    } finally {
      f.dispose();
    }
  } finally {
    a.dispose();
  }
  return { margins, flip, groups: byGroup(margins, flip, groups) };
}

function checkGroups(fn: string, groups: readonly string[], n: number, y: ArrayLike<number>): void {
  if (groups.length !== n) throw new Error(`${fn}: 'groups' has ${groups.length} entries, expected ${n}`);
  if (y.length !== n) throw new Error(`${fn}: 'y' has ${y.length} entries, expected ${n}`);
  for (let i = 0; i < n; i++) if (y[i] !== 1 && y[i] !== -1) throw new Error(`${fn}: 'y'[${i}] = ${y[i]}; labels must be −1 or +1`);
}

function marginsOf(w: ArrayLike<number>, X: ArrayLike<number>, n: number, d: number, y: ArrayLike<number>): tf.Tensor {
  return angularMargins(tf.tensor1d(Float32Array.from(w)), tf.tensor2d(Float32Array.from(X), [n, d]), tf.tensor1d(Float32Array.from(y)));
}

function byGroup(margins: Float32Array, flip: Float32Array, groups: readonly string[]): GroupPerturbation[] {
  return [...new Set(groups)].sort().map((group) => {
    const idx = groups.map((g, i) => (g === group ? i : -1)).filter((i) => i >= 0);
    const mean = (f: (i: number) => number) => idx.reduce((s, i) => s + f(i), 0) / idx.length;
    return { group, examples: idx.length, accuracy: mean((i) => (margins[i] > 0 ? 1 : 0)), meanMargin: mean((i) => margins[i]), expectedFlipRate: mean((i) => flip[i]) };
  });
}
